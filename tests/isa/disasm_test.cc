// The disassembler against llvm-objdump-19: fixed strings checked by hand
// against llvm-objdump, and a differential test that assembles a corpus of
// every opcode (random valid fields) with llvm-mc-19 and compares line by line.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <regex>
#include <string>
#include <unistd.h>
#include <vector>

#include "isa/asm.h"
#include "isa/decode.h"
#include "isa/disasm.h"
#include "isa/opcodes.h"

namespace userbpf::isa {
namespace {

using test::Asm;
using test::make_insn;

std::string fmt(const Insn& i) {
  return format_insn(i);
}

TEST(Disasm, KnownStrings) {
  // Each expected string was printed by llvm-objdump-19 -d for these bytes.
  EXPECT_EQ(fmt(make_insn(0x61, 1, 1, 4, 0)), "r1 = *(u32 *)(r1 + 0x4)");
  EXPECT_EQ(fmt(make_insn(0x0c, 0, 1, 0, 0)), "w0 += w1");
  EXPECT_EQ(fmt(make_insn(0x04, 0, 0, 0, 5)), "w0 += 0x5");
  EXPECT_EQ(fmt(make_insn(0x17, 0, 0, 0, -5)), "r0 -= -0x5");
  EXPECT_EQ(fmt(make_insn(0x25, 1, 0, 3, 5)), "if r1 > 0x5 goto +0x3");
  EXPECT_EQ(fmt(make_insn(0xce, 1, 2, -2, 0)), "if w1 s< w2 goto -0x2");
  EXPECT_EQ(fmt(make_insn(0x85, 0, 0, 0, 1)), "call 0x1");
  EXPECT_EQ(fmt(make_insn(0x85, 0, 1, 0, -1)), "call -0x1");
  EXPECT_EQ(fmt(make_insn(0xdb, 1, 2, 0, 0x00)), "lock *(u64 *)(r1 + 0x0) += r2");
  EXPECT_EQ(fmt(make_insn(0xdb, 1, 0, 0, 0x01)), "r0 = atomic_fetch_add((u64 *)(r1 + 0x0), r0)");
  EXPECT_EQ(fmt(make_insn(0xdb, 1, 2, 8, kAtomicCmpxchg)), "r0 = cmpxchg_64(r1 + 0x8, r0, r2)");
  EXPECT_EQ(fmt(make_insn(0xc3, 1, 2, 8, kAtomicCmpxchg)), "w0 = cmpxchg32_32(r1 + 0x8, w0, w2)");
  EXPECT_EQ(fmt(make_insn(0xdb, 1, 2, 8, kAtomicXchg)), "r2 = xchg_64(r1 + 0x8, r2)");
  EXPECT_EQ(fmt(make_insn(0xc3, 1, 2, 8, kAtomicXchg)), "w2 = xchg32_32(r1 + 0x8, w2)");
  EXPECT_EQ(fmt(make_insn(0xc3, 1, 2, 0, 0x40)), "lock *(u32 *)(r1 + 0x0) |= w2");
  EXPECT_EQ(fmt(make_insn(0xc3, 1, 2, 4, 0xa1)), "w2 = atomic_fetch_xor((u32 *)(r1 + 0x4), w2)");
  EXPECT_EQ(fmt(make_insn(0x87, 1, 0, 0, 0)), "r1 = -r1");
  EXPECT_EQ(fmt(make_insn(0x84, 1, 0, 0, 0)), "w1 = -w1");
  EXPECT_EQ(fmt(make_insn(0xdc, 1, 0, 0, 16)), "r1 = be16 r1");
  EXPECT_EQ(fmt(make_insn(0xd4, 1, 0, 0, 32)), "r1 = le32 r1");
  EXPECT_EQ(fmt(make_insn(0xd7, 1, 0, 0, 64)), "r1 = bswap64 r1");
  EXPECT_EQ(fmt(make_insn(0x3f, 1, 2, 1, 0)), "r1 s/= r2");
  EXPECT_EQ(fmt(make_insn(0x94, 1, 0, 1, 3)), "w1 s%= 0x3");
  EXPECT_EQ(fmt(make_insn(0xbf, 1, 2, 8, 0)), "r1 = (s8)r2");
  EXPECT_EQ(fmt(make_insn(0xbc, 1, 2, 16, 0)), "w1 = (s16)w2");
  EXPECT_EQ(fmt(make_insn(0xbf, 1, 2, 32, 0)), "r1 = (s32)r2");
  EXPECT_EQ(fmt(make_insn(0x91, 1, 2, -8, 0)), "r1 = *(s8 *)(r2 - 0x8)");
  EXPECT_EQ(fmt(make_insn(0x72, 10, 0, -8, 5)), "*(u8 *)(r10 - 0x8) = 0x5");
  EXPECT_EQ(fmt(make_insn(0x7b, 10, 1, -8, 0)), "*(u64 *)(r10 - 0x8) = r1");
  EXPECT_EQ(fmt(make_insn(0x63, 10, 1, -8, 0)), "*(u32 *)(r10 - 0x8) = r1");
  EXPECT_EQ(fmt(make_insn(0x30, 0, 0, 0, 5)), "r0 = *(u8 *)skb[0x5]");
  EXPECT_EQ(fmt(make_insn(0x48, 0, 1, 0, 0)), "r0 = *(u16 *)skb[r1]");
  EXPECT_EQ(fmt(make_insn(0x48, 0, 1, 0, 4)), "r0 = *(u16 *)skb[r1 + 0x4]");  // llvm drops imm
  EXPECT_EQ(fmt(make_insn(0x06, 0, 0, 0, 5)), "gotol +0x5");
  EXPECT_EQ(fmt(make_insn(0x05, 0, 0, -1, 0)), "goto -0x1");
  EXPECT_EQ(fmt(make_insn(0xe5, 0, 0, 2, 0)), "may_goto +0x2");
  EXPECT_EQ(fmt(make_insn(0x95, 0, 0, 0, 0)), "exit");
  EXPECT_EQ(fmt(make_insn(0x8d, 3, 0, 0, 0)), "callx r3");
  EXPECT_EQ(fmt(make_insn(0xbf, 1, 2, 1, 1)), "r1 = addr_space_cast(r2, 0x0, 0x1)");
  EXPECT_EQ(fmt(make_insn(0xbf, 1, 2, 1, 1 << 16)), "r1 = addr_space_cast(r2, 0x1, 0x0)");
  EXPECT_EQ(fmt(make_insn(0xc7, 1, 0, 0, 3)), "r1 s>>= 0x3");
  EXPECT_EQ(fmt(make_insn(0x7c, 1, 2, 0, 0)), "w1 >>= w2");
  EXPECT_EQ(fmt(make_insn(0xb4, 1, 0, 0, -1)), "w1 = -0x1");
  EXPECT_EQ(fmt(make_insn(0x57, 1, 0, 0, -1)), "r1 &= -0x1");
  EXPECT_EQ(fmt(make_insn(0x55, 1, 0, -32768, INT32_MIN)), "if r1 != -0x80000000 goto -0x8000");
  EXPECT_EQ(fmt(make_insn(0x61, 1, 2, -32768, 0)), "r1 = *(u32 *)(r2 - 0x8000)");
  EXPECT_EQ(fmt(make_insn(0x45, 1, 0, 1, 8)), "if r1 & 0x8 goto +0x1");
  EXPECT_EQ(fmt(make_insn(0x1e, 1, 2, 1, 0)), "if w1 == w2 goto +0x1");

  const Insn lo = make_insn(kLdImm64, 1, 0, 0, static_cast<int32_t>(0x89abcdef));
  const Insn hi = make_insn(0, 0, 0, 0, 0x01234567);
  EXPECT_EQ(format_insn(lo, &hi), "r1 = 0x123456789abcdef ll");
  const Insn m1 = make_insn(0, 0, 0, 0, -1);
  EXPECT_EQ(format_insn(make_insn(kLdImm64, 1, 0, 0, -1), &m1), "r1 = -0x1 ll");
  const Insn min = make_insn(0, 0, 0, 0, INT32_MIN);
  EXPECT_EQ(format_insn(make_insn(kLdImm64, 1, 0, 0, 0), &min), "r1 = -0x8000000000000000 ll");
  EXPECT_EQ(format_insn(lo, nullptr), "<unknown>");

  EXPECT_EQ(fmt(make_insn(0xdc, 0, 0, 1, 0)), "<unknown>");
  EXPECT_EQ(fmt(make_insn(0xdb, 0, 0, 0, 0xe0)), "<unknown>");
  EXPECT_EQ(fmt(make_insn(0x0c, 12, 1, 0, 0)), "<unknown>");
}

TEST(Disasm, PseudoNotes) {
  Asm a;
  a.ld_map(1, 2).ld_map_value(2, 1, 16).ld_func(3, "f").call_local("f").call_kfunc(3);
  a.ld_imm64(4, 9).exit().label("f").exit();
  const std::vector<Insn> p = a.build();
  DisasmOptions opts;
  opts.raw_bytes = false;
  EXPECT_EQ(disassemble_program(p.data(), p.size(), opts),
            "       0:\tr1 = 0x2 ll  ; map #2\n"
            "       2:\tr2 = 0x1000000001 ll  ; map #1 value + 0x10\n"
            "       4:\tr3 = 0x6 ll  ; func pc 11\n"
            "       6:\tcall 0x4  ; call pc 11\n"
            "       7:\tcall 0x3  ; kfunc #3\n"
            "       8:\tr4 = 0x9 ll\n"
            "      10:\texit\n"
            "      11:\texit\n");
  opts.pseudo_notes = false;
  EXPECT_EQ(disassemble_program(p.data(), 2, opts), "       0:\tr1 = 0x2 ll\n");
}

TEST(Disasm, ProgramListing) {
  Asm a;
  a.mov64_imm(0, 0).label("loop").alu64_imm(kAluAdd, 0, 1).jmp_imm(kJmpJlt, 0, 10, "loop");
  a.ld_imm64(1, 0x5).exit();
  const std::vector<Insn> p = a.build();
  DisasmOptions opts;
  opts.symbol = "count";
  opts.note = [](size_t pc, const Insn& i) { return pc == 3 ? std::string("five") : ""; };
  EXPECT_EQ(disassemble_program(p.data(), p.size(), opts),
            "       0:\tb7 00 00 00 00 00 00 00\tr0 = 0x0\n"
            "       1:\t07 00 00 00 01 00 00 00\tr0 += 0x1\n"
            "       2:\ta5 00 fe ff 0a 00 00 00\tif r0 < 0xa goto -0x2 <count+0x8>\n"
            "       3:\t18 01 00 00 05 00 00 00 00 00 00 00 00 00 00 00\tr1 = 0x5 ll  ; five\n"
            "       5:\t95 00 00 00 00 00 00 00\texit\n");
  opts.raw_bytes = false;
  opts.note = nullptr;
  EXPECT_EQ(disassemble_program(p.data(), 2, opts), "       0:\tr0 = 0x0\n       1:\tr0 += 0x1\n");
}

// ---- differential test against llvm-objdump-19 ------------------------------

std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

// pc -> text of the instruction at pc, from llvm-objdump output.
std::vector<std::string> objdump_lines(const std::string& obj, const char* extra, size_t count) {
  std::vector<std::string> lines(count);
  const std::string out = run(std::string("llvm-objdump-19 -d ") + extra + " " + obj);
  static const std::regex line_re(R"(^\s*(\d+):\t[0-9a-f ]+\t(.*)$)");
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(start, end - start);
    std::smatch m;
    if (std::regex_match(line, m, line_re)) {
      const size_t pc = std::stoul(m[1]);
      std::string text = m[2];
      const size_t sym = text.rfind(" <");
      if (sym != std::string::npos && text.back() == '>' &&
          text.find(' ', sym + 1) == std::string::npos) {
        text.erase(sym);
      }
      if (pc < count) lines[pc] = text;
    }
    start = end + 1;
  }
  return lines;
}

// Random but valid fields for opcode code.
std::vector<Insn> sample(uint8_t code, std::mt19937& rng) {
  std::uniform_int_distribution<int> reg(0, 9);
  std::uniform_int_distribution<int> off(-40, 40);
  const int32_t imms[] = {0, 1, 5, -1, -5, 0x7fffffff, INT32_MIN, 0x1234, -0x1234, 63};
  std::uniform_int_distribution<size_t> imm_idx(0, std::size(imms) - 1);
  std::vector<Insn> out;
  for (int n = 0; n < 12; ++n) {
    Insn i = make_insn(code, static_cast<uint8_t>(reg(rng)), static_cast<uint8_t>(reg(rng)),
                       static_cast<int16_t>(off(rng)), imms[imm_idx(rng)]);
    const OpcodeInfo& info = opcode_info(code);
    if (info.kind == OpKind::kAluBin || info.kind == OpKind::kAluNeg ||
        info.kind == OpKind::kAluEnd) {
      i.off = 0;
      if (insn_src(code) == kSrcX) {
        i.imm = 0;
        if (insn_op(code) == kAluMov) {
          const int16_t offs[] = {0, 8, 16, 32, 1};
          i.off = offs[n % 5];
          if (i.off == 1) i.imm = (n & 1) ? kAddrSpaceCastToKern : kAddrSpaceCastToUser;
          if (insn_class(code) == kClassAlu && (i.off == 32 || i.off == 1)) i.off = 0, i.imm = 0;
        }
      } else {
        i.src = 0;
      }
      if ((insn_op(code) == kAluDiv || insn_op(code) == kAluMod) && (n & 1)) i.off = 1;
      if (info.kind == OpKind::kAluNeg) i.imm = 0;
      if (info.kind == OpKind::kAluEnd) i.imm = 16 << (n % 3), i.src = 0;
    } else if (info.kind == OpKind::kJmpCond) {
      if (insn_src(code) == kSrcX)
        i.imm = 0;
      else
        i.src = 0;
    } else if (info.kind == OpKind::kJa || info.kind == OpKind::kJcond) {
      i.dst = i.src = 0;
      if (insn_class(code) == kClassJmp32)
        i.off = 0, i.imm = off(rng);
      else
        i.imm = 0;
    } else if (info.kind == OpKind::kCall) {
      i.dst = 0, i.off = 0, i.src = static_cast<uint8_t>(n % 3);
    } else if (info.kind == OpKind::kCallx) {
      i.src = 0, i.off = 0, i.imm = 0;
    } else if (info.kind == OpKind::kExit) {
      i = make_insn(code, 0, 0, 0, 0);
    } else if (info.kind == OpKind::kLdAbs) {
      i.dst = i.src = 0, i.off = 0;
    } else if (info.kind == OpKind::kLdInd) {
      i.dst = 0, i.off = 0, i.imm = 0;  // llvm-objdump drops a nonzero imm
    } else if (info.kind == OpKind::kLdx || info.kind == OpKind::kLdxSx ||
               info.kind == OpKind::kStx) {
      i.imm = 0;
    } else if (info.kind == OpKind::kSt) {
      i.src = 0;
    } else if (info.kind == OpKind::kAtomic) {
      const int32_t ops[] = {0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1};
      i.imm = ops[n % 10];
    } else if (info.kind == OpKind::kLdImm64) {
      i.src = 0, i.off = 0;
      out.push_back(i);
      out.push_back(make_insn(0, 0, 0, 0, imms[imm_idx(rng)]));
      continue;
    }
    out.push_back(i);
  }
  return out;
}

TEST(Disasm, MatchesLlvmObjdump) {
  if (run("command -v llvm-mc-19 && command -v llvm-objdump-19").empty()) {
    GTEST_SKIP() << "llvm-mc-19 / llvm-objdump-19 not installed";
  }
  std::mt19937 rng(42);
  std::vector<Insn> corpus;
  for (int c = 0; c < 256; ++c) {
    if (opcode_info(static_cast<uint8_t>(c)).kind == OpKind::kInvalid) continue;
    for (const Insn& i : sample(static_cast<uint8_t>(c), rng)) corpus.push_back(i);
  }
  char dir[] = "/tmp/userbpf_disasm_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string s_path = std::string(dir) + "/corpus.s";
  const std::string o_path = std::string(dir) + "/corpus.o";
  FILE* f = fopen(s_path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  for (const Insn& i : corpus) {
    uint64_t q;
    static_assert(sizeof(q) == sizeof(i));
    std::memcpy(&q, &i, sizeof(q));
    fprintf(f, ".quad 0x%016llx\n", static_cast<unsigned long long>(q));
  }
  fclose(f);
  run("llvm-mc-19 -triple bpfel -filetype=obj " + s_path + " -o " + o_path);
  const std::vector<std::string> plain = objdump_lines(o_path, "", corpus.size());
  const std::vector<std::string> v4 = objdump_lines(o_path, "--mcpu=v4", corpus.size());
  run("rm -rf " + std::string(dir));

  size_t compared = 0;
  for (size_t pc = 0; pc < corpus.size(); ++pc) {
    const Insn& i = corpus[pc];
    const Insn* next = pc + 1 < corpus.size() ? &corpus[pc + 1] : nullptr;
    const char* why = validate_insn(i, next);
    ASSERT_EQ(why, nullptr) << "corpus pc " << pc << ": " << why << " code 0x" << std::hex
                            << int(i.code) << " imm " << i.imm;
    std::string want = plain[pc];
    // The default (v1) decoder knows only the legacy 32-bit xadd: it prints other
    // 32-bit atomics as <unknown> and even drops the fetch bit of add. llvm decodes
    // them right with alu32 (--mcpu=v3 and later), so those are the reference.
    if (i.code == (kClassStx | kModeAtomic | kSizeW)) want = v4[pc];
    EXPECT_EQ(format_insn(i, next), want)
        << "pc " << pc << " code 0x" << std::hex << int(i.code) << " dst " << std::dec << int(i.dst)
        << " src " << int(i.src) << " off " << i.off << " imm " << i.imm;
    ++compared;
    if (is_ld_imm64(i)) ++pc;
  }
  EXPECT_GT(compared, 1000u);
}

}  // namespace
}  // namespace userbpf::isa
