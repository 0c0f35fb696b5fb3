// RunLoop (the host API's repeat loop) on both engines: every run starts as
// a fresh interpret()/jit_run() would (zeroed stack, full budget, no fault
// left over), and the loop restores the RunContext's hooks when it ends.
#include <gtest/gtest.h>

#include "jit_test_util.h"
#include "maps/map_internal.h"
#include "maps/registry.h"
#include "vm/jit/jit.h"

namespace userbpf::test {
namespace {

using namespace isa;

class RunLoopTest : public ::testing::TestWithParam<bool> {
 protected:
  bool jit() const { return GetParam(); }
  Status begin(vm::RunLoop& loop, vm::Program& prog, vm::RunContext& rc) {
    if (jit()) {
      Status st = vm::ensure_jit(prog);
      if (!st.ok()) return st;
      return vm::begin_jit_loop(loop, prog, rc);
    }
    return vm::begin_interp_loop(loop, prog, rc);
  }
};

// Reads a stack slot before writing it: every run must see 0, never the
// previous run's 42.
TEST_P(RunLoopTest, StackIsZeroedForEveryRun) {
  Asm a;
  a.ldx(kSizeDw, 0, 10, -8).mov64_imm(1, 42).stx(kSizeDw, 10, 1, -8).exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok());
  vm::RunContext rc;
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  for (int i = 0; i < 3; ++i) {
    Result<uint64_t> r = loop.run();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), 0u) << "run " << i;
  }
}

// A program that never writes memory reads the zeroed stack on every run
// (the loop skips re-clearing it after the first run).
TEST_P(RunLoopTest, ReadOnlyProgramSeesZeroStack) {
  Asm a;
  a.ldx(kSizeDw, 0, 10, -8).ldx(kSizeDw, 1, 10, -512).alu64_reg(kAluOr, 0, 1).exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok());
  vm::RunContext rc;
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  for (int i = 0; i < 4; ++i) {
    Result<uint64_t> r = loop.run();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), 0u) << "run " << i;
  }
}

// HelperProto::slot_fn's cache: what the fake kfunc finds in run->slot (then it
// "looks the slot up": g_fake_slot). Every run starts with kSlotUnknown, so
// a run never uses the slot an earlier run of the loop held.
int32_t g_fake_slot = 0;
uint64_t fake_slot_fn(uint64_t, uint64_t, vm::ObjRunState* run) {
  const int32_t found = run->slot;
  if (run->slot == vm::kSlotUnknown) run->slot = g_fake_slot;
  return static_cast<uint32_t>(found);
}
uint64_t fake_slot_plain(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t) {
  return 0xbad;  // never called: the engines call slot_fn
}

TEST_P(RunLoopTest, SlotCacheStartsUnknownInEveryRun) {
  vm::HelperProto proto{
      "fake_slot", fake_slot_plain, {vm::ArgKind::kAnything, vm::ArgKind::kAnything}};
  proto.slot_fn = fake_slot_fn;
  // r0 = first call's finding << 32 | second call's.
  Asm a;
  a.call_kfunc(0).mov64_reg(6, 0).alu64_imm(kAluLsh, 6, 32).call_kfunc(0);
  a.alu64_reg(kAluOr, 0, 6).exit();
  TestProg t(a);
  t.prog.kfuncs = {&proto};
  ASSERT_TRUE(t.prepared.ok());
  vm::RunContext rc;
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  for (int32_t run = 0; run < 3; ++run) {
    g_fake_slot = 10 + run;
    Result<uint64_t> r = loop.run();
    ASSERT_TRUE(r.ok()) << r.error().message;
    const uint64_t unknown = static_cast<uint32_t>(vm::kSlotUnknown);
    EXPECT_EQ(r.value(), unknown << 32 | static_cast<uint32_t>(10 + run)) << "run " << run;
  }
}

// The JIT's inlined per-CPU array lookup takes the copy of each run's CPU
// (RunContext::cpu, which the host loop may change between runs). The
// interpreter calls the map's lookup, which follows the held slot (equal to
// rc.cpu in real runs; this test holds none).
TEST_P(RunLoopTest, PercpuArrayCopyFollowsTheRunsCpu) {
  if (!jit()) GTEST_SKIP() << "the interpreter's lookup follows the held slot";
  maps::MapAttr attr;
  attr.type = static_cast<uint32_t>(maps::MapType::kPERCPU_ARRAY);
  attr.key_size = 4;
  attr.value_size = 8;
  attr.max_entries = 1;
  Result<maps::Map*> m = maps::create_map(attr);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const uint32_t ncpus = maps::map_num_cpus(m.value());
  ASSERT_GE(ncpus, 2u);
  // v = lookup(&0); *v += 1
  Asm a;
  a.st(kSizeW, 10, -4, 0).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
  a.jmp_imm(kJmpJeq, 0, 0, "out").ldx(kSizeDw, 1, 0, 0).alu64_imm(kAluAdd, 1, 1);
  a.stx(kSizeDw, 0, 1, 0).label("out").mov64_imm(0, 0).exit();
  TestProg t(a, {m.value()});
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  vm::RunContext rc;
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  const uint32_t cpus[] = {0, 1, 1, 0, 1};
  for (uint32_t c : cpus) {
    rc.cpu = c;
    ASSERT_TRUE(loop.run().ok());
  }
  std::vector<uint64_t> copies(ncpus);
  const uint32_t key = 0;
  ASSERT_EQ(m.value()->ops->lookup_elem_copy(m.value(), &key, copies.data(), 0), 0);
  EXPECT_EQ(copies[0], 2u);
  EXPECT_EQ(copies[1], 3u);
  m.value()->ops->free(m.value());
}

// A fault in one run is reported for that run only; the next run starts clean.
TEST_P(RunLoopTest, FaultDoesNotLeakIntoNextRun) {
  Asm a;
  a.ldx(kSizeB, 2, 1, 0)
      .jmp_imm(kJmpJeq, 2, 0, "ok")
      .mov64_imm(3, 0)
      .ldx(kSizeDw, 0, 3, 16)  // null load: EFAULT
      .exit()
      .label("ok")
      .mov64_imm(0, 7)
      .exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok());
  uint8_t ctx[8] = {};
  vm::RunContext rc;
  rc.ctx = ctx;
  rc.ctx_size = sizeof(ctx);
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  Result<uint64_t> r = loop.run();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 7u);
  EXPECT_FALSE(rc.faulted);

  ctx[0] = 1;
  r = loop.run();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EFAULT);
  EXPECT_TRUE(rc.faulted);
  EXPECT_EQ(rc.fault.pc, 3u);
  EXPECT_EQ(rc.fault.addr, 16u);

  ctx[0] = 0;
  r = loop.run();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 7u);
  EXPECT_FALSE(rc.faulted);
  EXPECT_TRUE(rc.fault.what.empty());
  EXPECT_EQ(rc.fault.pc, 0u);
}

// Each run gets the budget rc holds when it starts and leaves what is left.
TEST_P(RunLoopTest, BudgetIsPerRun) {
  Asm a;
  a.mov64_imm(0, 0).mov64_imm(1, 100);
  a.label("loop").alu64_imm(kAluAdd, 0, 1).alu64_imm(kAluSub, 1, 1).jmp_imm(kJmpJne, 1, 0, "loop");
  a.exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok());
  vm::RunContext rc;
  vm::RunLoop loop;
  ASSERT_TRUE(begin(loop, t.prog, rc).ok());
  rc.insn_budget = 10;
  Result<uint64_t> r = loop.run();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ELOOP);

  uint64_t left[2];
  for (uint64_t& l : left) {
    rc.insn_budget = 1'000'000;
    r = loop.run();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), 100u);
    l = rc.insn_budget;
  }
  EXPECT_LT(left[0], 1'000'000u);
  EXPECT_EQ(left[0], left[1]);
}

// While the loop lives, rc is the thread's current run with the engine's
// callback hook; afterwards both are back as they were.
TEST_P(RunLoopTest, RestoresRunContext) {
  Asm a;
  a.mov64_imm(0, 3).exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok());
  vm::RunContext rc;
  ASSERT_EQ(vm::current_run(), nullptr);
  {
    vm::RunLoop loop;
    ASSERT_TRUE(begin(loop, t.prog, rc).ok());
    EXPECT_EQ(vm::current_run(), &rc);
    EXPECT_NE(rc.call_fn, nullptr);
    Result<uint64_t> r = loop.run();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), 3u);
    // A nested one-shot run on another RunContext (a signal handler's) does
    // not disturb the loop.
    vm::RunContext inner;
    Result<uint64_t> n = jit() ? vm::jit_run(t.prog, inner) : vm::interpret(t.prog, inner);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(vm::current_run(), &rc);
    r = loop.run();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), 3u);
  }
  EXPECT_EQ(vm::current_run(), nullptr);
  EXPECT_EQ(rc.call_fn, nullptr);
  EXPECT_EQ(rc.engine_state, nullptr);
}

INSTANTIATE_TEST_SUITE_P(Engines, RunLoopTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "Jit" : "Interp");
                         });

}  // namespace
}  // namespace userbpf::test
