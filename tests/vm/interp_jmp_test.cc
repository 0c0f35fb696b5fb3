// Interpreter control flow: every JMP/JMP32 condition (signed, unsigned,
// immediate sign extension), goto, gotol, may_goto and the instruction budget.
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

// Returns whether "if a <op> b" is taken (r0 = 1) or not (r0 = 0).
bool taken_reg(bool jmp32, uint8_t op, uint64_t a, uint64_t b) {
  Asm p;
  p.ld_imm64(1, a).ld_imm64(2, b).mov64_imm(0, 1);
  if (jmp32) {
    p.jmp32_reg(op, 1, 2, "yes");
  } else {
    p.jmp_reg(op, 1, 2, "yes");
  }
  p.mov64_imm(0, 0).label("yes").exit();
  return run_r0(p) == 1;
}
bool taken_imm(bool jmp32, uint8_t op, uint64_t a, int32_t imm) {
  Asm p;
  p.ld_imm64(1, a).mov64_imm(0, 1);
  if (jmp32) {
    p.jmp32_imm(op, 1, imm, "yes");
  } else {
    p.jmp_imm(op, 1, imm, "yes");
  }
  p.mov64_imm(0, 0).label("yes").exit();
  return run_r0(p) == 1;
}

struct Case {
  uint8_t op;
  uint64_t a, b;
  bool want64, want32;
};

TEST(InterpJmp, Conditions) {
  const uint64_t m1 = ~0ull;
  const uint64_t hi = 1ull << 32;  // differs only above bit 31
  const Case cases[] = {
      {kJmpJeq, 5, 5, true, true},
      {kJmpJeq, 5, hi | 5, false, true},
      {kJmpJne, 5, 5, false, false},
      {kJmpJne, 5, hi | 5, true, false},
      {kJmpJgt, 6, 5, true, true},
      {kJmpJgt, 5, 5, false, false},
      {kJmpJgt, m1, 1, true, true},
      {kJmpJgt, hi, 1, true, false},
      {kJmpJge, 5, 5, true, true},
      {kJmpJge, 4, 5, false, false},
      {kJmpJlt, 1, m1, true, true},
      {kJmpJlt, 5, 5, false, false},
      {kJmpJle, 5, 5, true, true},
      {kJmpJle, 6, 5, false, false},
      {kJmpJset, 6, 2, true, true},
      {kJmpJset, 6, 1, false, false},
      {kJmpJset, hi, hi, true, false},
      {kJmpJsgt, 1, m1, true, true},
      {kJmpJsgt, m1, 1, false, false},
      {kJmpJsgt, 0x80000000, 1, true, false},  // positive in 64 bits, negative in 32
      {kJmpJsge, m1, m1, true, true},
      {kJmpJsge, m1, 0, false, false},
      {kJmpJslt, m1, 0, true, true},
      {kJmpJslt, 0, m1, false, false},
      {kJmpJslt, 0x80000000, 0, false, true},
      {kJmpJsle, m1, m1, true, true},
      {kJmpJsle, 1, 0, false, false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(taken_reg(false, c.op, c.a, c.b), c.want64) << int(c.op) << " " << c.a << " " << c.b;
    EXPECT_EQ(taken_reg(true, c.op, c.a, c.b), c.want32) << int(c.op) << " " << c.a << " " << c.b;
  }
}

TEST(InterpJmp, ImmediateIsSignExtended) {
  EXPECT_TRUE(taken_imm(false, kJmpJeq, ~0ull, -1));  // -1 is 0xffff...ffff
  EXPECT_FALSE(taken_imm(false, kJmpJeq, 0xffffffff, -1));
  EXPECT_TRUE(taken_imm(true, kJmpJeq, 0xffffffff, -1));
  EXPECT_TRUE(taken_imm(false, kJmpJgt, ~0ull, -2));  // unsigned compare with 0xff..fe
  EXPECT_FALSE(taken_imm(false, kJmpJgt, 5, -2));
  EXPECT_TRUE(taken_imm(false, kJmpJsgt, 5, -2));
  EXPECT_TRUE(taken_imm(true, kJmpJslt, 0xfffffffe, -1));
  EXPECT_TRUE(taken_imm(false, kJmpJset, 1ull << 40, -1));
  EXPECT_FALSE(taken_imm(true, kJmpJset, 1ull << 40, -1));
  EXPECT_TRUE(taken_imm(false, kJmpJle, 0, 0));
  EXPECT_TRUE(taken_imm(true, kJmpJge, 1ull << 40, 0));
}

TEST(InterpJmp, GotoAndGotol) {
  Asm a;
  a.mov64_imm(0, 1).ja("end").mov64_imm(0, 2).label("end").exit();
  EXPECT_EQ(run_r0(a), 1u);
  Asm b;
  b.mov64_imm(0, 1).gotol("end").mov64_imm(0, 2).mov64_imm(0, 3).label("end").exit();
  EXPECT_EQ(run_r0(b), 1u);
  // Backward gotol.
  Asm c;
  c.mov64_imm(0, 0).ja("start").label("back").alu64_imm(kAluAdd, 0, 10).exit();
  c.label("start").alu64_imm(kAluAdd, 0, 1).gotol("back");
  EXPECT_EQ(run_r0(c), 11u);
}

TEST(InterpJmp, LoopCounts) {
  Asm a;
  a.mov64_imm(0, 0).mov64_imm(1, 0);
  a.label("loop").alu64_reg(kAluAdd, 0, 1).alu64_imm(kAluAdd, 1, 1);
  a.jmp_imm(kJmpJlt, 1, 101, "loop").exit();
  EXPECT_EQ(run_r0(a), 5050u);
}

TEST(InterpJmp, MayGotoFallsThroughUntilBudgetSpent) {
  // r0 counts iterations of an otherwise infinite loop bounded only by may_goto.
  Asm a;
  a.mov64_imm(0, 0);
  a.label("loop").may_goto("out").alu64_imm(kAluAdd, 0, 1).ja("loop");
  a.label("out").exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  RunOutcome o = p.run();
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 8u * 1024 * 1024);  // kernel BPF_MAX_LOOPS
  // Per run: a second run gets the full budget again.
  EXPECT_EQ(p.run().r0, 8u * 1024 * 1024);
}

// A function at label fn whose r0 counts its may_goto fall-throughs, at
// most limit of them (again, done: labels of its own; Asm keeps the
// pointers).
void add_counting_fn(Asm& a, const char* fn, const char* again, const char* done, int32_t limit) {
  a.label(fn).mov64_imm(0, 0);
  a.label(again).jmp_imm(kJmpJge, 0, limit, done).may_goto(done);
  a.alu64_imm(kAluAdd, 0, 1).ja(again);
  a.label(done).exit();
}

// Runs a program whose r0 is the number of may_goto fall-throughs of its
// run: every run spends exactly the budget.
void expect_budget_spent(const Asm& a) {
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  for (int run = 0; run < 2; ++run) {  // a second run starts afresh
    RunOutcome o = p.run();
    ASSERT_TRUE(o.ok) << o.error.message;
    EXPECT_EQ(o.r0, 8u * 1024 * 1024) << "run " << run;
  }
}

// The may_goto budget is the run's, not a frame's: fall-throughs in a
// callee count against it and stay counted after the callee returns (the
// JIT keeps it in a register, which bpf-to-bpf returns must not restore).
// Every fall-through adds one to r6 (main's) or to the callee's r0.
TEST(InterpJmp, MayGotoBudgetIsSharedAcrossCalls) {
  Asm a;
  a.mov64_imm(6, 0);
  a.label("loop").may_goto("out").alu64_imm(kAluAdd, 6, 1).call_local("sub");
  a.alu64_reg(kAluAdd, 6, 0).ja("loop");
  a.label("out").mov64_reg(0, 6).exit();
  add_counting_fn(a, "sub", "sub_again", "sub_done", 3);
  expect_budget_spent(a);
}

// The same through callbacks a helper runs from C (the fake bpf_loop sums
// their r0).
TEST(InterpJmp, MayGotoBudgetIsSharedWithCallbacks) {
  Asm a;
  a.mov64_imm(7, 0);
  a.label("loop").may_goto("out").alu64_imm(kAluAdd, 7, 1);
  a.mov64_imm(1, 2).ld_func(2, "cb").mov64_imm(3, 0).call_helper(kHelperLoop);
  a.alu64_reg(kAluAdd, 7, 0).ja("loop");
  a.label("out").mov64_reg(0, 7).exit();
  add_counting_fn(a, "cb", "cb_again", "cb_done", 5);
  expect_budget_spent(a);
}

TEST(InterpJmp, RunawayLoopExhaustsBudget) {
  Asm a;
  a.mov64_imm(0, 0).label("loop").alu64_imm(kAluAdd, 0, 1).ja("loop").exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run(nullptr, 0, true, 1'000'000);
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, ELOOP);
  EXPECT_NE(o.error.message.find("pc 2"), std::string::npos) << o.error.message;
  EXPECT_NE(o.error.message.find("'test'"), std::string::npos) << o.error.message;
  EXPECT_EQ(o.fault.pc, 2u);
  // goto -1: a one-instruction loop still ends.
  Asm b;
  b.mov64_imm(0, 0).ja(-1).exit();
  TestProg q(b);
  ASSERT_TRUE(q.prepared.ok());
  RunOutcome o2 = q.run(nullptr, 0, true, 1000);
  EXPECT_EQ(o2.error.code, ELOOP);
  EXPECT_EQ(o2.fault.pc, 1u);
}

TEST(InterpJmp, BudgetIsChargedPerLoopBodyAndReported) {
  // 10 iterations of a 3-instruction body: the backward jump charges 3 each.
  Asm a;
  a.mov64_imm(0, 0);
  a.label("loop").alu64_imm(kAluAdd, 0, 1).mov64_reg(2, 0).jmp_imm(kJmpJlt, 0, 10, "loop").exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run(nullptr, 0, true, 1000);
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.r0, 10u);
  EXPECT_EQ(o.budget_left, 1000u - 9 * 3);  // 9 taken backward jumps
  RunOutcome tight = p.run(nullptr, 0, true, 26);
  EXPECT_EQ(tight.error.code, ELOOP);
  RunOutcome exact = p.run(nullptr, 0, true, 27);
  EXPECT_TRUE(exact.ok) << exact.error.message;
}

}  // namespace
}  // namespace userbpf::test
