// X86Asm's direct encodings against xbyak's: the same calls must give the
// same bytes, on every register, at each immediate and displacement size
// boundary, and forms X86Asm does not cover must still reach xbyak.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vm/jit/x86_64/x86_asm.h"

namespace userbpf::vm::jit {
namespace {

using namespace Xbyak;

constexpr size_t kBuf = 1 << 20;

// Runs emit on an X86Asm and on a plain CodeGenerator; their bytes.
struct Pair {
  std::vector<uint8_t> fast_buf = std::vector<uint8_t>(kBuf);
  std::vector<uint8_t> ref_buf = std::vector<uint8_t>(kBuf);
  X86Asm fast{kBuf, fast_buf.data()};
  CodeGenerator ref{kBuf, ref_buf.data()};
};

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char b[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x ", p[i]);
    s += b;
  }
  return s;
}

// Emits one instruction with both assemblers (emit gets each in turn) and
// compares the bytes of that instruction.
template <class F>
void expect_same(Pair& p, const std::string& what, F&& emit) {
  const size_t f0 = p.fast.getSize(), r0 = p.ref.getSize();
  emit(p.fast, /*fast=*/true);
  emit(p.ref, /*fast=*/false);
  const size_t fn = p.fast.getSize() - f0, rn = p.ref.getSize() - r0;
  ASSERT_EQ(GetError(), 0) << what;
  ASSERT_EQ(hex(p.fast_buf.data() + f0, fn), hex(p.ref_buf.data() + r0, rn)) << what;
}

std::vector<Reg64> regs64() {
  std::vector<Reg64> r;
  for (int i = 0; i < 16; ++i) r.push_back(Reg64(i));
  return r;
}

const uint32_t kImm32[] = {0,          1,          0x7f,       0x80,       0xff,
                           0x100,      0x7fff,     0x8000,     0xffff,     0x7fffffff,
                           0x80000000, 0xffffff80, 0xffffff7f, 0xfffffffe, 0xffffffff};
const uint64_t kImm64[] = {0,
                           1,
                           0x7fffffff,
                           0x80000000,
                           0xffffffff,
                           0x100000000,
                           0xffffffff80000000,
                           0xffffffff7fffffff,
                           0xffffffffffffffff,
                           0x123456789abcdef0,
                           0x00007f1234567000};
const int32_t kDisp[] = {0,   1,    -1,     8,       -8,        127,      -128,
                         128, -129, 0x1000, -0x1000, INT32_MAX, INT32_MIN};

// The dispatch of each overload is by static type, so each call is spelled
// out: fast ? X86Asm's : CodeGenerator's, with the same arguments.
#define BOTH(a, call)                      \
  do {                                     \
    if (fast) {                            \
      static_cast<X86Asm&>(a).call;        \
    } else {                               \
      static_cast<CodeGenerator&>(a).call; \
    }                                      \
  } while (0)

TEST(X86Asm, RegRegAluMatchesXbyak) {
  Pair p;
  for (const Reg64& d : regs64()) {
    for (const Reg64& s : regs64()) {
      for (int w = 0; w < 2; ++w) {
        const Reg& D = w ? static_cast<const Reg&>(d) : static_cast<const Reg&>(d.cvt32());
        const Reg& S = w ? static_cast<const Reg&>(s) : static_cast<const Reg&>(s.cvt32());
        const std::string what = std::string(D.toString()) + ", " + S.toString();
        expect_same(p, "add " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, add(D, S)); });
        expect_same(p, "sub " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, sub(D, S)); });
        expect_same(p, "and " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, and_(D, S)); });
        expect_same(p, "or " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, or_(D, S)); });
        expect_same(p, "xor " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, xor_(D, S)); });
        expect_same(p, "cmp " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, cmp(D, S)); });
        expect_same(p, "test " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, test(D, S)); });
        expect_same(p, "mov " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, mov(D, S)); });
        // Through the Operand overload (loads/stores/moves).
        expect_same(p, "mov op " + what, [&](CodeGenerator& a, bool fast) {
          BOTH(a, mov(static_cast<const Operand&>(D), static_cast<const Operand&>(S)));
        });
      }
    }
  }
}

TEST(X86Asm, RegImmAluMatchesXbyak) {
  Pair p;
  for (const Reg64& d : regs64()) {
    for (int w = 0; w < 2; ++w) {
      const Reg& D = w ? static_cast<const Reg&>(d) : static_cast<const Reg&>(d.cvt32());
      for (uint32_t imm : kImm32) {
        const std::string what = std::string(D.toString()) + ", " + std::to_string(imm);
        expect_same(p, "add " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, add(D, imm)); });
        expect_same(p, "sub " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, sub(D, imm)); });
        expect_same(p, "and " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, and_(D, imm)); });
        expect_same(p, "or " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, or_(D, imm)); });
        expect_same(p, "xor " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, xor_(D, imm)); });
        expect_same(p, "cmp " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, cmp(D, imm)); });
        expect_same(p, "test " + what, [&](CodeGenerator& a, bool fast) { BOTH(a, test(D, imm)); });
        expect_same(p, "mov32 " + what, [&](CodeGenerator& a, bool fast) {
          BOTH(a, mov(D, static_cast<uint64_t>(imm)));
        });
      }
      for (uint64_t imm : kImm64) {
        if (!w && (imm >> 32) != 0) continue;  // xbyak refuses; so do we (through it)
        expect_same(p, "mov " + std::string(D.toString()) + ", " + std::to_string(imm),
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(D, imm)); });
      }
    }
  }
}

TEST(X86Asm, LoadsAndStoresMatchXbyak) {
  Pair p;
  for (const Reg64& base : regs64()) {
    for (int32_t disp : kDisp) {
      const RegExp m = base + disp;
      const std::string at =
          std::string("[") + base.toString() + " + " + std::to_string(disp) + "]";
      for (const Reg64& r : regs64()) {
        const std::string what = std::string(r.toString()) + ", " + at;
        expect_same(p, "load64 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(r, a.qword[m])); });
        expect_same(p, "load32 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(r.cvt32(), a.dword[m])); });
        expect_same(p, "load ptr " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(r, a.ptr[m])); });
        expect_same(p, "movzx8 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movzx(r.cvt32(), a.byte[m])); });
        expect_same(p, "movzx16 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movzx(r.cvt32(), a.word[m])); });
        expect_same(p, "movsx8 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movsx(r, a.byte[m])); });
        expect_same(p, "movsx16 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movsx(r, a.word[m])); });
        expect_same(p, "movsx8_32 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movsx(r.cvt32(), a.byte[m])); });
        expect_same(p, "movsxd " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, movsxd(r, a.dword[m])); });
        expect_same(p, "store64 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.qword[m], r)); });
        expect_same(p, "store32 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.dword[m], r.cvt32())); });
        expect_same(p, "store16 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.word[m], r.cvt16())); });
        expect_same(p, "store8 " + what,  // xbyak's own (X86Asm passes it on)
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.byte[m], r.cvt8())); });
        expect_same(p, "store ptr " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.ptr[m], r)); });
      }
      for (uint32_t imm : kImm32) {
        const std::string what = at + ", " + std::to_string(imm);
        expect_same(p, "st8 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.byte[m], imm & 0xff)); });
        expect_same(p, "st16 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.word[m], imm & 0xffff)); });
        expect_same(p, "st32 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.dword[m], imm)); });
        const uint64_t sx = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(imm)));
        expect_same(p, "st64 " + what,
                    [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.qword[m], sx)); });
      }
    }
  }
}

// Forms X86Asm leaves to xbyak still come out right (an index register,
// a memory operand of an ALU instruction).
TEST(X86Asm, OtherFormsReachXbyak) {
  Pair p;
  using namespace Xbyak::util;
  expect_same(p, "indexed load",
              [&](CodeGenerator& a, bool fast) { BOTH(a, mov(rax, a.qword[r11 + r10 + 8])); });
  expect_same(p, "indexed store",
              [&](CodeGenerator& a, bool fast) { BOTH(a, mov(a.dword[r11 + r10 + 8], esi)); });
  expect_same(p, "alu mem",
              [&](CodeGenerator& a, bool fast) { BOTH(a, sub(r10, a.ptr[r12 + 0x40])); });
  expect_same(p, "cmp mem imm",
              [&](CodeGenerator& a, bool fast) { BOTH(a, cmp(a.byte[r12 + 0x40], 0)); });
  expect_same(p, "16-bit alu", [&](CodeGenerator& a, bool fast) { BOTH(a, add(ax, cx)); });
  expect_same(p, "8-bit mov", [&](CodeGenerator& a, bool fast) { BOTH(a, mov(sil, dl)); });
}

// Near the end of the buffer every form goes through xbyak, which stops at
// the end with ERR_CODE_IS_TOO_BIG instead of writing past it.
TEST(X86Asm, FullBufferIsReportedNotOverrun) {
  constexpr size_t kSmall = 64;
  std::vector<uint8_t> buf(kSmall + 32, 0xaa);
  X86Asm a(kSmall, buf.data());
  ClearError();
  for (int i = 0; i < 40 && GetError() == 0; ++i)
    a.mov(Reg64(i % 16), uint64_t{0x123456789abcdef0});
  EXPECT_EQ(GetError(), ERR_CODE_IS_TOO_BIG);
  EXPECT_LE(a.getSize(), kSmall);
  for (size_t i = kSmall; i < buf.size(); ++i) ASSERT_EQ(buf[i], 0xaa) << "byte " << i;
  ClearError();
}

}  // namespace
}  // namespace userbpf::vm::jit
