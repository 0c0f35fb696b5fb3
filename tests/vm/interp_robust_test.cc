// Coverage of the dispatch table (every valid opcode reaches a handler) and
// robustness: random well-formed programs with wild pointers either run or
// stop with an Error, never crash the host.
#include <random>

#include "isa/decode.h"
#include "isa/opcodes.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

// One valid instance of opcode code that touches only the stack.
Insn stack_safe_insn(uint8_t code) {
  const OpcodeInfo& info = opcode_info(code);
  switch (info.kind) {
    case OpKind::kAluBin:
      return make_insn(code, 0, insn_src(code) == kSrcX ? 1 : 0, 0,
                       insn_src(code) == kSrcX ? 0 : 3);
    case OpKind::kAluNeg:
      return make_insn(code, 0, 0, 0, 0);
    case OpKind::kAluEnd:
      return make_insn(code, 0, 0, 0, 32);
    case OpKind::kJa:
    case OpKind::kJcond:
      return make_insn(code, 0, 0, 0, 0);
    case OpKind::kJmpCond:
      return make_insn(code, 0, insn_src(code) == kSrcX ? 1 : 0, 0, 0);
    case OpKind::kCall:
      return make_insn(code, 0, kPseudoCallHelper, 0, kHelperSum5);
    case OpKind::kLdAbs:
      return make_insn(code, 0, 0, 0, 0);
    case OpKind::kLdInd:
      return make_insn(code, 0, 1, 0, 0);
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      return make_insn(code, 0, 10, -8, 0);
    case OpKind::kSt:
      return make_insn(code, 10, 0, -8, 1);
    case OpKind::kStx:
      return make_insn(code, 10, 1, -8, 0);
    case OpKind::kAtomic:
      return make_insn(code, 10, 1, -8, kAtomicAdd | kAtomicFetch);
    default:
      return make_insn(code, 0, 0, 0, 0);
  }
}

TEST(InterpRobust, EveryOpcodeHasAHandler) {
  int covered = 0;
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const OpKind kind = opcode_info(code).kind;
    if (kind == OpKind::kInvalid || kind == OpKind::kExit || kind == OpKind::kCallx) continue;
    Asm a;
    a.mov64_imm(0, 1).mov64_imm(1, 2);
    if (kind == OpKind::kLdImm64) {
      a.ld_imm64(0, 5);
    } else {
      a.emit(stack_safe_insn(code));
    }
    a.exit();
    TestProg p(a);
    ASSERT_TRUE(p.prepared.ok()) << "code 0x" << std::hex << c << ": "
                                 << p.prepared.error().message;
    vm::RunContext rc;
    uint8_t pkt[8] = {};
    rc.data = pkt;
    rc.data_end = pkt + sizeof(pkt);
    RunOutcome o = p.run_with(rc);
    EXPECT_TRUE(o.ok) << "code 0x" << std::hex << c << ": " << o.error.message;
    ++covered;
  }
  EXPECT_EQ(covered, 127 - 2);  // all but exit and callx (covered in interp_call_test)
}

// Random instructions of every kind with random registers (so most pointers
// are wild), jumps kept inside the program, ending in exit.
std::vector<Insn> random_program(std::mt19937& rng, size_t len) {
  std::vector<uint8_t> codes;
  for (int c = 0; c < 256; ++c) {
    if (opcode_info(static_cast<uint8_t>(c)).kind != OpKind::kInvalid)
      codes.push_back(static_cast<uint8_t>(c));
  }
  std::uniform_int_distribution<size_t> pick(0, codes.size() - 1);
  std::uniform_int_distribution<int> reg(0, 10);
  std::uniform_int_distribution<int> small(-16, 16);
  std::uniform_int_distribution<int> coin(0, 3);
  const int32_t imms[] = {0, 1, -1, 7, 8, 16, 32, 64, INT32_MIN, INT32_MAX, -512, 0x1000};
  std::uniform_int_distribution<size_t> imm(0, std::size(imms) - 1);
  std::vector<Insn> out;
  while (out.size() + 2 < len) {
    const uint8_t code = codes[pick(rng)];
    const OpKind kind = opcode_info(code).kind;
    if (kind == OpKind::kLdImm64) {
      out.push_back(make_insn(code, static_cast<uint8_t>(reg(rng) % 10), 0, 0, imms[imm(rng)]));
      out.push_back(make_insn(0, 0, 0, 0, coin(rng) ? 0 : imms[imm(rng)]));
      continue;
    }
    if (kind == OpKind::kCall) {
      out.push_back(make_insn(code, 0, 0, 0, coin(rng) ? kHelperSum5 : kHelperReadMem));
      continue;
    }
    // Random fields until the instruction is well formed (most tries pass).
    Insn i;
    do {
      i = make_insn(code, static_cast<uint8_t>(reg(rng)), static_cast<uint8_t>(reg(rng)),
                    static_cast<int16_t>(coin(rng) ? -8 * (1 + coin(rng)) : small(rng)),
                    imms[imm(rng)]);
      if (coin(rng) == 0) i.src = 0;
      if (coin(rng) == 0) i.imm = 0;
      if (coin(rng) != 0 && kind != OpKind::kLdx && kind != OpKind::kLdxSx) i.off = 0;
    } while (validate_insn(i, nullptr) != nullptr);
    if (kind == OpKind::kJa || kind == OpKind::kJmpCond || kind == OpKind::kJcond) {
      // Absolute target in [0, len) for now; made relative below.
      i.off = static_cast<int16_t>(
          std::uniform_int_distribution<int>(0, static_cast<int>(len) - 1)(rng));
    }
    out.push_back(i);
  }
  out.push_back(make_insn(kExit, 0, 0, 0, 0));
  // Absolute targets stashed in off -> relative, onto a first slot.
  std::vector<bool> second(out.size(), false);
  for (size_t pc = 0; pc + 1 < out.size(); ++pc) {
    if (is_ld_imm64(out[pc])) second[++pc] = true;
  }
  for (size_t pc = 0; pc < out.size(); ++pc) {
    if (second[pc]) continue;
    const OpKind kind = opcode_info(out[pc].code).kind;
    if (kind != OpKind::kJa && kind != OpKind::kJmpCond && kind != OpKind::kJcond) continue;
    size_t t = static_cast<size_t>(out[pc].off) % out.size();
    if (second[t]) --t;
    const int64_t rel = static_cast<int64_t>(t) - static_cast<int64_t>(pc) - 1;
    if (out[pc].code == (kClassJmp32 | kJmpJa)) {
      out[pc].imm = static_cast<int32_t>(rel), out[pc].off = 0;
    } else {
      out[pc].off = static_cast<int16_t>(rel);
    }
  }
  return out;
}

TEST(InterpRobust, RandomProgramsNeverCrash) {
  std::mt19937 rng(1234);
  uint8_t ctx[64] = {};
  uint8_t pkt[64] = {};
  int prepared = 0, ran_ok = 0, stopped = 0;
  for (int n = 0; n < 3000; ++n) {
    vm::Program prog;
    prog.name = "fuzz";
    prog.insns = random_program(rng, 8 + n % 40);
    prog.helpers = fake_helper_table();
    if (!vm::prepare_program(prog).ok()) continue;
    ++prepared;
    vm::RunContext rc;
    rc.ctx = ctx;
    rc.ctx_size = sizeof(ctx);
    rc.data = pkt;
    rc.data_end = pkt + sizeof(pkt);
    rc.insn_budget = 5000;
    Result<uint64_t> r = vm::interpret(prog, rc);
    if (r.ok()) {
      ++ran_ok;
    } else {
      ++stopped;
      EXPECT_TRUE(r.error().code == EFAULT || r.error().code == ELOOP || r.error().code == E2BIG ||
                  r.error().code == EINVAL)
          << r.error().message;
      EXPECT_TRUE(rc.faulted);
    }
  }
  std::printf("random programs: %d prepared, %d ran, %d stopped\n", prepared, ran_ok, stopped);
  // The generator must actually exercise the interpreter.
  EXPECT_GT(prepared, 1000);
  EXPECT_GT(ran_ok, 50);
  EXPECT_GT(stopped, 50);
}

}  // namespace
}  // namespace userbpf::test
