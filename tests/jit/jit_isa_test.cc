// Every ALU, jump and memory instruction on edge values: the JIT must give
// exactly the interpreter's result (div/mod by zero, INT_MIN / -1, shift
// masking, 32-bit zero extension, sign extension, byte swaps, atomics).
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "isa/opcodes.h"
#include "jit_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

const uint64_t kValues[] = {0,
                            1,
                            2,
                            3,
                            7,
                            31,
                            32,
                            33,
                            63,
                            64,
                            65,
                            0xff,
                            0x7fffffff,
                            0x80000000,
                            0xffffffff,
                            0x100000000ull,
                            0x123456789abcdef0ull,
                            0x8000000000000000ull,
                            0xffffffff80000000ull,
                            0xfffffffffffffffeull,
                            0xffffffffffffffffull};
const int32_t kImms[] = {0, 1, -1, 2, 31, 32, 63, 64, 0x7fffffff, INT32_MIN, -7, 0x1234};
// BPF registers whose x86 homes are special: rax (r0), rdx (r3), rcx (r4),
// plus an ordinary argument register and a callee-saved one.
const uint8_t kRegs[] = {0, 1, 3, 4, 6};

std::string name_of(const Insn& in) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "code 0x%02x dst r%d src r%d off %d imm %d", in.code, in.dst,
                in.src, in.off, in.imm);
  return buf;
}

// r_dst = a; r_src = b; <insn>; r0 = r_dst ^ (r_src << 1): dst and src both
// observed (atomics and xadd write src; div/mod must not disturb others).
void check_insn(Insn in, uint64_t a, uint64_t b) {
  Asm p;
  p.ld_imm64(in.dst, a);
  if (in.src != in.dst) p.ld_imm64(in.src, b);
  for (uint8_t r : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    if (r != in.dst && r != in.src) p.ld_imm64(r, 0x1111111111111111ull * r);
  }
  p.emit(in);
  // Fold every register into r0 so a clobbered neighbour shows.
  for (uint8_t r : {1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    p.alu64_imm(kAluLsh, 0, 3).alu64_reg(kAluXor, 0, r);
  }
  p.exit();
  TestProg t(p);
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message << " " << name_of(in);
  char what[160];
  std::snprintf(what, sizeof(what), "%s a=0x%" PRIx64 " b=0x%" PRIx64, name_of(in).c_str(), a, b);
  expect_same(t.prog, {}, 1ull << 32, what);
}

TEST(JitIsa, AluBinaryOpsOnEdgeValues) {
  for (uint8_t cls : {kClassAlu, kClassAlu64}) {
    for (uint8_t op : {kAluAdd, kAluSub, kAluMul, kAluDiv, kAluOr, kAluAnd, kAluLsh, kAluRsh,
                       kAluMod, kAluXor, kAluMov, kAluArsh}) {
      const bool signed_ok = op == kAluDiv || op == kAluMod;
      for (int16_t off : {0, 1}) {
        if (off == 1 && !signed_ok) continue;
        for (uint8_t d : kRegs) {
          for (uint8_t s : kRegs) {
            for (uint64_t a : {0ull, 1ull, 0x80000000ull, 0x8000000000000000ull,
                               0xffffffffffffffffull, 0x123456789abcdef0ull}) {
              for (uint64_t b : kValues) {
                check_insn(make_insn(cls | kSrcX | op, d, s, off, 0), a, b);
              }
              for (int32_t imm : kImms) {
                check_insn(make_insn(cls | kSrcK | op, d, 0, off, imm), a, 5);
              }
            }
          }
        }
      }
    }
  }
}

TEST(JitIsa, NegEndMovsx) {
  for (uint8_t d : kRegs) {
    for (uint64_t a : kValues) {
      check_insn(make_insn(kClassAlu64 | kAluNeg, d, 0, 0, 0), a, 0);
      check_insn(make_insn(kClassAlu | kAluNeg, d, 0, 0, 0), a, 0);
      for (int32_t w : {16, 32, 64}) {
        check_insn(make_insn(kClassAlu | kSrcK | kAluEnd, d, 0, 0, w), a, 0);
        check_insn(make_insn(kClassAlu | kSrcX | kAluEnd, d, 0, 0, w), a, 0);
        check_insn(make_insn(kClassAlu64 | kSrcK | kAluEnd, d, 0, 0, w), a, 0);
      }
      for (uint8_t s : kRegs) {
        for (int16_t bits : {8, 16, 32}) {
          check_insn(make_insn(kClassAlu64 | kSrcX | kAluMov, d, s, bits, 0), a, a * 3 + 0x80);
        }
        for (int16_t bits : {8, 16}) {
          check_insn(make_insn(kClassAlu | kSrcX | kAluMov, d, s, bits, 0), a, a * 5 + 0x8000);
        }
      }
    }
  }
}

// Conditional jumps: r0 says which way each went.
TEST(JitIsa, ConditionalJumps) {
  for (uint8_t cls : {kClassJmp, kClassJmp32}) {
    for (uint8_t op : {kJmpJeq, kJmpJgt, kJmpJge, kJmpJset, kJmpJne, kJmpJsgt, kJmpJsge, kJmpJlt,
                       kJmpJle, kJmpJslt, kJmpJsle}) {
      for (uint64_t a : kValues) {
        for (uint64_t b : {0ull, 1ull, 0x80000000ull, 0xffffffffull, 0xffffffff00000001ull,
                           0x8000000000000000ull, 0xffffffffffffffffull}) {
          Asm p;
          p.ld_imm64(1, a).ld_imm64(2, b).mov64_imm(0, 1);
          p.emit(make_insn(cls | kSrcX | op, 1, 2, 1, 0)).mov64_imm(0, 2);
          p.emit(make_insn(cls | kSrcK | op, 1, 0, 1, static_cast<int32_t>(b)));
          p.alu64_imm(kAluAdd, 0, 10).exit();
          TestProg t(p);
          ASSERT_TRUE(t.prepared.ok());
          expect_same(t.prog, {}, 1ull << 32, name_of(make_insn(cls | op, 1, 2, 0, 0)));
        }
      }
    }
  }
}

// Loads, stores and atomics of every width through the stack and a context.
TEST(JitIsa, MemoryAndAtomics) {
  std::vector<uint8_t> ctx(64);
  for (size_t i = 0; i < ctx.size(); ++i) ctx[i] = static_cast<uint8_t>(0x81 + i * 37);
  for (uint8_t size : {kSizeB, kSizeH, kSizeW, kSizeDw}) {
    for (uint8_t base : {1, 10}) {
      const int16_t off = base == 10 ? -16 : 8;
      Asm p;
      p.mov64_reg(6, 1).ld_imm64(2, 0x8877665544332211ull).ld_imm64(0, 0xf0f0f0f0f0f0f0f0ull);
      p.stx(kSizeDw, 10, 0, -16).stx(kSizeDw, 10, 0, -8);
      p.ldx(size, 3, base, off).ldxsx(size == kSizeDw ? kSizeW : size, 4, base, off);
      p.stx(size, base, 2, off + 8).st(size, base, base == 10 ? -24 : off + 16, -2);
      p.ldx(kSizeDw, 5, base, off + 8).alu64_reg(kAluXor, 3, 5).alu64_reg(kAluAdd, 3, 4);
      p.ldx(kSizeDw, 5, 10, -24).alu64_reg(kAluXor, 3, 5);
      p.mov64_reg(0, 3).exit();
      TestProg t(p);
      ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
      expect_same(t.prog, ctx, 1ull << 32, "mem size " + std::to_string(size));
    }
  }
  for (uint8_t size : {kSizeW, kSizeDw}) {
    for (int32_t op : {kAtomicAdd, kAtomicOr, kAtomicAnd, kAtomicXor, kAtomicAdd | kAtomicFetch,
                       kAtomicOr | kAtomicFetch, kAtomicAnd | kAtomicFetch,
                       kAtomicXor | kAtomicFetch, kAtomicXchg, kAtomicCmpxchg}) {
      for (uint8_t src : {0, 2, 4}) {
        for (uint8_t base : {1, 10}) {
          for (uint64_t r0 : {0x8877665544332211ull, 0x1ull, 0xa3a2a1a09f9e9d9cull}) {
            Asm p;
            p.ld_imm64(3, 0xa3a2a1a09f9e9d9cull).stx(kSizeDw, 10, 3, -8);
            if (src != 0) p.ld_imm64(src, 0x0f0f0f0ff0f0f0f0ull);
            p.ld_imm64(0, r0);
            p.atomic(size, op, base, src, base == 10 ? -8 : 16);
            p.ldx(kSizeDw, 5, base, base == 10 ? -8 : 16);
            p.alu64_imm(kAluLsh, 0, 1).alu64_reg(kAluXor, 0, 5).alu64_reg(kAluXor, 0, src);
            p.exit();
            TestProg t(p);
            ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
            expect_same(t.prog, ctx, 1ull << 32, "atomic op " + std::to_string(op));
          }
        }
      }
    }
  }
}

TEST(JitIsa, FaultsMatchTheInterpreter) {
  std::vector<uint8_t> ctx(16);
  // Out of bounds through ctx, the stack below the frame, null, misaligned atomic.
  Asm a;
  a.ldx(kSizeDw, 0, 1, 12).exit();
  Asm b;
  b.mov64_reg(2, 10).ldx(kSizeW, 0, 2, -516).exit();
  Asm c;
  c.mov64_imm(2, 0).stx(kSizeB, 2, 2, 8).exit();
  Asm d;
  d.mov64_imm(2, 1).atomic(kSizeW, kAtomicAdd, 10, 2, -6).exit();
  Asm e;  // runaway loop
  e.mov64_imm(0, 0).label("l").alu64_imm(kAluAdd, 0, 1).ja("l");
  Asm f;  // stack above the frame chain
  f.ldx(kSizeDw, 0, 10, 0).exit();
  for (Asm* p : {&a, &b, &c, &d, &e, &f}) {
    TestProg t(*p);
    ASSERT_TRUE(t.prepared.ok());
    // Each engine run has its own stack and context copy: their addresses
    // differ, nothing else.
    EngineRun r = expect_same(t.prog, ctx, 1000, "", false);
    EXPECT_FALSE(r.ok);
  }
}

TEST(JitIsa, CodeIsMappedReadExecuteOnly) {
  Asm a;
  a.mov64_imm(0, 7).exit();
  TestProg t(a);
  ASSERT_TRUE(vm::ensure_jit(t.prog).ok());
  Result<vm::JitCode> code = vm::jit_code(t.prog);
  ASSERT_TRUE(code.ok());
  const uintptr_t at = reinterpret_cast<uintptr_t>(code.value().code);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  bool found = false;
  while (std::getline(maps, line)) {
    uintptr_t lo, hi;
    char perms[8];
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) != 3) continue;
    if (at >= lo && at < hi) {
      found = true;
      EXPECT_STREQ(perms, "r-xp");
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(run_r0(a), 7u);
}

TEST(JitIsa, DisassemblyNamesPcs) {
  Asm a;
  a.mov64_imm(0, 7).alu64_imm(kAluAdd, 0, 1).exit();
  TestProg t(a);
  ASSERT_TRUE(vm::ensure_jit(t.prog).ok());
  Result<std::string> text = vm::jit_disassemble(t.prog);
  ASSERT_TRUE(text.ok());
  for (const char* want : {"; pc 0", "; pc 1", "; pc 2"}) {
    EXPECT_NE(text.value().find(want), std::string::npos) << text.value();
  }
#ifdef USERBPF_HAVE_CAPSTONE
  EXPECT_NE(text.value().find("ret"), std::string::npos) << text.value();
#endif
}

}  // namespace
}  // namespace userbpf::test
