// bpf_loop with a known callback, inlined by the JIT (emit_inline_loop):
// every outcome must equal the interpreter's call through the real helper
// (results, early stop, flag and count errors, faults and budget inside the
// callback, the frame limit, the registers the callback starts with).
#include <gtest/gtest.h>

#include "helpers/registry.h"
#include "jit_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

constexpr int32_t kBpfLoop = 181;

// A program on the real helper table (bpf_loop is kernel id 181).
struct LoopProg {
  vm::Program prog;
  explicit LoopProg(const Asm& a) {
    prog.name = "loop";
    prog.insns = a.build();
    prog.helpers = helpers::helper_table();
    Status st = vm::prepare_program(prog);
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
};

// r0 = bpf_loop(nr, cb, &ctx_slot, flags) * 1000 + ctx_slot; cb adds i + 1 to
// *ctx and stops (returns 1) when i == stop_at.
Asm sum_loop(int32_t nr, int32_t flags, int32_t stop_at) {
  Asm a;
  a.st(kSizeDw, 10, -8, 0).mov64_imm(1, nr).ld_func(2, "cb").mov64_reg(3, 10);
  a.alu64_imm(kAluAdd, 3, -8).mov64_imm(4, flags).call_helper(kBpfLoop);
  a.alu64_imm(kAluMul, 0, 1000).ldx(kSizeDw, 1, 10, -8).alu64_reg(kAluAdd, 0, 1).exit();
  a.label("cb").ldx(kSizeDw, 3, 2, 0).alu64_reg(kAluAdd, 3, 1).alu64_imm(kAluAdd, 3, 1);
  a.stx(kSizeDw, 2, 3, 0).mov64_imm(0, 0).jmp_imm(kJmpJne, 1, stop_at, "go").mov64_imm(0, 1);
  a.label("go").exit();
  return a;
}

// may_goto inside an inlined callback spends the run's budget (the JIT's
// r15 is neither saved nor zeroed around the callback): every fall-through
// is counted once, in r6 or in the callback's *ctx, so r6 ends at exactly
// the budget, as in the interpreter.
TEST(JitInlineLoop, MayGotoInCallbackSpendsTheRunsBudget) {
  Asm a;
  a.mov64_imm(6, 0);
  a.label("loop").may_goto("out").alu64_imm(kAluAdd, 6, 1).st(kSizeDw, 10, -8, 0);
  a.mov64_imm(1, 3).ld_func(2, "cb").mov64_reg(3, 10).alu64_imm(kAluAdd, 3, -8);
  a.mov64_imm(4, 0).call_helper(kBpfLoop);
  a.ldx(kSizeDw, 1, 10, -8).alu64_reg(kAluAdd, 6, 1).ja("loop");
  a.label("out").mov64_reg(0, 6).exit();
  a.label("cb").mov64_imm(3, 0);
  a.label("again").jmp_imm(kJmpJge, 3, 2, "done").may_goto("done");
  a.alu64_imm(kAluAdd, 3, 1).ja("again");
  a.label("done").ldx(kSizeDw, 4, 2, 0).alu64_reg(kAluAdd, 4, 3).stx(kSizeDw, 2, 4, 0);
  a.mov64_imm(0, 0).exit();
  LoopProg p(a);
  EngineRun j = expect_same(p.prog, {}, 1ull << 32, "may_goto");
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 8u * 1024 * 1024);
}

TEST(JitInlineLoop, ResultsAndEarlyStop) {
  struct Case {
    int32_t nr, flags, stop_at;
    uint64_t want;
  } cases[] = {
      {10, 0, -1, 10 * 1000 + 55},  // all calls
      {10, 0, 3, 4 * 1000 + 10},    // stops after the call with i == 3
      {0, 0, -1, 0},                // no call
      {5, 1, -1, uint64_t(-EINVAL) * 1000},
      {(1 << 23) + 1, 0, -1, uint64_t(-E2BIG) * 1000},
      {-1, 0, -1, uint64_t(-E2BIG) * 1000},  // nr is a u32: 0xffffffff
  };
  for (const Case& c : cases) {
    LoopProg p(sum_loop(c.nr, c.flags, c.stop_at));
    EngineRun j = expect_same(p.prog, {}, 1ull << 32, "nr " + std::to_string(c.nr));
    EXPECT_TRUE(j.ok) << j.message;
    EXPECT_EQ(j.r0, c.want) << "nr " << c.nr;
  }
}

TEST(JitInlineLoop, FaultAndBudgetInsideTheCallback) {
  Asm a;
  a.mov64_imm(1, 5).ld_func(2, "cb").mov64_imm(3, 0).mov64_imm(4, 0).call_helper(kBpfLoop);
  a.mov64_imm(0, 1).exit();
  a.label("cb").mov64_imm(0, 0).jmp_imm(kJmpJlt, 1, 2, "ok").ldx(kSizeDw, 0, 0, 0);
  a.label("ok").exit();
  LoopProg p(a);
  EngineRun j = expect_same(p.prog);
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);

  Asm b;
  b.mov64_imm(1, 1000).ld_func(2, "cb").mov64_imm(3, 0).mov64_imm(4, 0).call_helper(kBpfLoop);
  b.exit();
  b.label("cb").mov64_imm(0, 0).label("spin").alu64_imm(kAluAdd, 0, 1);
  b.jmp_imm(kJmpJlt, 0, 100, "spin").mov64_imm(0, 0).exit();
  LoopProg q(b);
  for (uint64_t budget :
       {uint64_t{0}, uint64_t{1}, uint64_t{50}, uint64_t{10'000}, uint64_t{1'000'000}}) {
    EngineRun k = expect_same(q.prog, {}, budget, "budget " + std::to_string(budget));
    EXPECT_EQ(k.ok, budget == 1'000'000) << k.message;
  }
}

// Nested bpf_loop calls run out of frames at the interpreter's depth.
TEST(JitInlineLoop, NestedLoopsHitTheFrameLimit) {
  Asm a;
  a.mov64_imm(1, 1).ld_func(2, "cb").mov64_imm(3, 0).mov64_imm(4, 0).call_helper(kBpfLoop);
  a.exit();
  a.label("cb").mov64_imm(1, 1).ld_func(2, "cb").mov64_imm(3, 0).mov64_imm(4, 0);
  a.call_helper(kBpfLoop).exit();
  LoopProg p(a);
  EngineRun j = expect_same(p.prog);
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, E2BIG);
}

// The callback starts with r0 and r6-r9 zeroed and a fresh (zeroed) frame;
// the caller's r6-r9 survive the loop; r1-r5 are clobbered after it.
TEST(JitInlineLoop, RegistersAndFrames) {
  Asm a;
  a.mov64_imm(6, 6).mov64_imm(7, 7).mov64_imm(8, 8).mov64_imm(9, 9);
  a.st(kSizeDw, 10, -8, 0).mov64_imm(1, 3).ld_func(2, "cb").mov64_reg(3, 10);
  a.alu64_imm(kAluAdd, 3, -8).mov64_imm(4, 0).call_helper(kBpfLoop);
  a.ldx(kSizeDw, 0, 10, -8).alu64_reg(kAluAdd, 0, 6).alu64_reg(kAluAdd, 0, 7);
  a.alu64_reg(kAluAdd, 0, 8).alu64_reg(kAluAdd, 0, 9).exit();
  // *ctx += r0 + r6 + r7 + r8 + r9 + (old stack word) + r3 + r4 + r5; then
  // dirty the frame and the callee-saved registers.
  a.label("cb").mov64_reg(1, 0).alu64_reg(kAluAdd, 1, 6).alu64_reg(kAluAdd, 1, 7);
  a.alu64_reg(kAluAdd, 1, 8).alu64_reg(kAluAdd, 1, 9).ldx(kSizeDw, 0, 10, -16);
  a.alu64_reg(kAluAdd, 1, 0).alu64_reg(kAluAdd, 1, 3).alu64_reg(kAluAdd, 1, 4);
  a.alu64_reg(kAluAdd, 1, 5).ldx(kSizeDw, 0, 2, 0).alu64_reg(kAluAdd, 0, 1);
  a.alu64_imm(kAluAdd, 0, 100).stx(kSizeDw, 2, 0, 0).st(kSizeDw, 10, -16, 1000);
  a.mov64_imm(6, 1).mov64_imm(9, 1).mov64_imm(0, 0).exit();
  LoopProg p(a);
  EngineRun j = expect_same(p.prog, {}, 1ull << 32, "", false);
  EXPECT_TRUE(j.ok) << j.message;
  // Each call adds 100 plus the frame word: 0 on the first call, 1000 after
  // (the frame below main's is cleared once per run, then reused).
  EXPECT_EQ(j.r0, 100u + 1100u + 1100u + 30u);
}

}  // namespace
}  // namespace userbpf::test
