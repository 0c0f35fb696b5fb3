// Interpreter calls: bpf-to-bpf calls and their frames, the 8-frame limit,
// helper and kfunc calls with argument checks, callbacks (call_fn) and callx.
#include <cstring>

#include "vm/interp_state.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

TEST(InterpCall, LocalCallPassesArgsAndReturnsR0) {
  Asm a;
  a.mov64_imm(1, 40).mov64_imm(2, 2).call_local("add").alu64_imm(kAluMul, 0, 10).exit();
  a.label("add").mov64_reg(0, 1).alu64_reg(kAluAdd, 0, 2).exit();
  EXPECT_EQ(run_r0(a), 420u);
}

TEST(InterpCall, CalleeSavedRegistersAndFramePointer) {
  Asm a;
  a.mov64_imm(6, 6).mov64_imm(7, 7).mov64_imm(8, 8).mov64_imm(9, 9);
  a.st(kSizeDw, 10, -8, 1000).mov64_reg(5, 10);  // r5 = caller's r10
  a.call_local("f");
  // r0 = f() + r6 + r7 + r8 + r9 + caller's stack slot (untouched by f).
  a.alu64_reg(kAluAdd, 0, 6).alu64_reg(kAluAdd, 0, 7).alu64_reg(kAluAdd, 0, 8);
  a.alu64_reg(kAluAdd, 0, 9).ldx(kSizeDw, 1, 10, -8).alu64_reg(kAluAdd, 0, 1).exit();
  // f: clobbers r6-r9, uses its own stack slot, returns 1 if its r10 differs
  // from the caller's by one frame.
  a.label("f").mov64_imm(6, 0).mov64_imm(7, 0).mov64_imm(8, 0).mov64_imm(9, 0);
  a.st(kSizeDw, 10, -8, 5).mov64_reg(0, 5).alu64_reg(kAluSub, 0, 10);
  a.jmp_imm(kJmpJeq, 0, 512, "ok").mov64_imm(0, 100000).exit();
  a.label("ok").mov64_imm(0, 1).exit();
  EXPECT_EQ(run_r0(a), 1u + 6 + 7 + 8 + 9 + 1000);
}

TEST(InterpCall, CalleeMayUseCallerStackButNotAPoppedFrame) {
  // The callee writes through a pointer into the caller's frame: allowed.
  Asm a;
  a.mov64_reg(1, 10).alu64_imm(kAluAdd, 1, -8).call_local("w").ldx(kSizeDw, 0, 10, -8).exit();
  a.label("w").st(kSizeDw, 1, 0, 77).exit();
  EXPECT_EQ(run_r0(a), 77u);
  // The callee returns a pointer into its own frame; after return it is gone.
  Asm b;
  b.call_local("leak").ldx(kSizeDw, 0, 0, 0).exit();
  b.label("leak").st(kSizeDw, 10, -8, 1).mov64_reg(0, 10).alu64_imm(kAluAdd, 0, -8).exit();
  TestProg p(b);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run();
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, 1u);
}

TEST(InterpCall, EightFramesAndNoMore) {
  // f(n) = n == 0 ? 0 : 1 + f(n - 1), called from main.
  auto with_n = [](int n) {
    Asm a;
    a.mov64_imm(1, n).call_local("f").exit();
    a.label("f").mov64_imm(0, 0).jmp_imm(kJmpJeq, 1, 0, "ret");
    a.alu64_imm(kAluSub, 1, 1).call_local("f").alu64_imm(kAluAdd, 0, 1);
    a.label("ret").exit();
    return a;
  };
  TestProg ok(with_n(6));
  RunOutcome o = ok.run();
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 6u);
  TestProg deep(with_n(7));
  RunOutcome d = deep.run();
  ASSERT_FALSE(d.ok);
  EXPECT_EQ(d.error.code, E2BIG);
  EXPECT_EQ(d.fault.pc, 6u);  // the call in f that would make frame 9
  EXPECT_NE(d.error.message.find("pc 6"), std::string::npos) << d.error.message;
}

TEST(InterpCall, HelperCallAndClobberedArgs) {
  Asm a;
  a.mov64_imm(1, 1).mov64_imm(2, 2).mov64_imm(3, 3).mov64_imm(4, 4).mov64_imm(5, 5);
  a.call_helper(kHelperSum5).mov64_reg(6, 0).mov64_reg(0, 1).exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  EXPECT_EQ(p.run().r0, vm::interp::kClobberedReg);
  Asm b;
  b.mov64_imm(1, 1).mov64_imm(2, 2).mov64_imm(3, 3).mov64_imm(4, 4).mov64_imm(5, 5);
  b.call_helper(kHelperSum5).exit();
  EXPECT_EQ(run_r0(b), 15u);
}

TEST(InterpCall, KfuncCall) {
  Asm a;
  a.mov64_imm(1, 30).mov64_imm(2, 12).call_kfunc(0).exit();
  EXPECT_EQ(run_r0(a), 42u);
}

TEST(InterpCall, MapHelpersWithStackKeysAndValues) {
  auto map = make_fake_map(8, 4);
  Asm a;
  // key = 2 on the stack; value = 99 on the stack; update; lookup; read through r0.
  a.st(kSizeW, 10, -4, 2).st(kSizeDw, 10, -16, 99);
  a.ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  a.mov64_reg(3, 10).alu64_imm(kAluAdd, 3, -16).mov64_imm(4, 0).call_helper(kHelperUpdate);
  a.ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(kHelperLookup);
  a.jmp_imm(kJmpJeq, 0, 0, "miss").ldx(kSizeDw, 1, 0, 0).st(kSizeDw, 0, 0, 5).mov64_reg(0, 1);
  a.exit().label("miss").mov64_imm(0, -1).exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  RunOutcome o = p.run();
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 99u);
  uint64_t v;
  std::memcpy(&v, map->buf.data() + 16, 8);
  EXPECT_EQ(v, 5u);
}

bool read_only_access_ok(const maps::Map* m, uintptr_t addr, size_t size, bool write) {
  return !write && fake_access_ok(m, addr, size, write);
}

TEST(InterpCall, LookedUpValuesKeepTheMapsWritability) {
  // The value pointer from a lookup becomes a cached region; a map that only
  // allows reads still rejects writes through it.
  maps::MapOps ops = kFakeMapOps;
  ops.access_ok = read_only_access_ok;
  auto map = make_fake_map(8, 2);
  map->ops = &ops;
  map->buf[8] = 42;
  Asm a;
  a.st(kSizeW, 10, -4, 1).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  a.call_helper(kHelperLookup).ldx(kSizeB, 6, 0, 0).ldx(kSizeB, 6, 0, 0);
  a.st(kSizeB, 0, 0, 1).exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run();
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.fault.pc, 8u);
  EXPECT_NE(o.fault.what.find("read-only"), std::string::npos) << o.fault.what;
  EXPECT_EQ(map->buf[8], 42);
}

RunOutcome run_prog(const Asm& a, std::vector<maps::Map*> maps = {}, void* ctx = nullptr,
                    size_t ctx_size = 0, bool writable = true) {
  TestProg p(a, std::move(maps));
  EXPECT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  return p.run(ctx, ctx_size, writable);
}

void expect_arg_fault(const RunOutcome& o, uint32_t pc, const char* text) {
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, pc);
  EXPECT_NE(o.error.message.find(text), std::string::npos) << o.error.message;
}

TEST(InterpCall, HelperArgumentChecks) {
  auto map = make_fake_map(8, 4);
  // Not a map of this program.
  expect_arg_fault(
      run_prog(Asm().mov64_imm(1, 8).mov64_reg(2, 10).call_helper(kHelperLookup).exit(),
               {map.get()}),
      2, "fake_lookup arg1 (map) is not a map");
  // Key straddles the top of the stack (4-byte key at r10 - 2).
  expect_arg_fault(run_prog(Asm()
                                .ld_map(1, 0)
                                .mov64_reg(2, 10)
                                .alu64_imm(kAluAdd, 2, -2)
                                .call_helper(kHelperLookup)
                                .exit(),
                            {map.get()}),
                   4, "fake_lookup arg2 (map key) of 4 bytes is not readable");
  // Uninit memory of size 16 at r10 - 8: past the top.
  expect_arg_fault(run_prog(Asm()
                                .mov64_reg(1, 10)
                                .alu64_imm(kAluAdd, 1, -8)
                                .mov64_imm(2, 16)
                                .call_helper(kHelperFill)
                                .exit()),
                   3, "fake_fill arg1 (writable memory) of 16 bytes is not writable");
  // Size 0 where the proto needs > 0.
  expect_arg_fault(run_prog(Asm()
                                .mov64_reg(1, 10)
                                .alu64_imm(kAluAdd, 1, -8)
                                .mov64_imm(2, 0)
                                .call_helper(kHelperFill)
                                .exit()),
                   3, "with size 0");
  // Read-only context is not writable memory for a helper either.
  uint8_t ctx[16] = {3};
  expect_arg_fault(
      run_prog(Asm().mov64_imm(2, 8).call_helper(kHelperFill).exit(), {}, ctx, sizeof(ctx), false),
      1, "not writable");
  // kCtx must be the context pointer itself.
  expect_arg_fault(
      run_prog(Asm().alu64_imm(kAluAdd, 1, 1).call_helper(kHelperCtx).exit(), {}, ctx, sizeof(ctx)),
      1, "is not the program's context");
  // Fixed-size memory must be 8-byte aligned.
  expect_arg_fault(
      run_prog(Asm().mov64_reg(1, 10).alu64_imm(kAluAdd, 1, -12).call_helper(kHelperFixed).exit()),
      2, "is not 8-byte aligned");
  // A string without NUL before the end of the stack.
  expect_arg_fault(run_prog(Asm()
                                .st(kSizeDw, 10, -8, 0x41414141)
                                .st(kSizeW, 10, -4, 0x41414141)
                                .mov64_reg(1, 10)
                                .alu64_imm(kAluAdd, 1, -8)
                                .call_helper(kHelperStrlen)
                                .exit()),
                   4, "not NUL-terminated");
  // kFunc must be a function of this program.
  expect_arg_fault(
      run_prog(Asm().mov64_imm(1, 3).mov64_imm(2, 12345).call_helper(kHelperLoop).exit()), 2,
      "is not a function");
}

TEST(InterpCall, HelperArgumentsThatPass) {
  // Fill 12 bytes at r10 - 12, then sum them through read_mem: 12 * 0xab.
  Asm a;
  a.mov64_reg(1, 10).alu64_imm(kAluAdd, 1, -12).mov64_imm(2, 12).call_helper(kHelperFill);
  a.mov64_reg(1, 10).alu64_imm(kAluAdd, 1, -12).mov64_imm(2, 12).call_helper(kHelperReadMem).exit();
  EXPECT_EQ(run_r0(a), 12u * 0xab);
  // Size 0 with kConstSizeOrZero: any pointer, even NULL.
  Asm b;
  b.mov64_imm(1, 0).mov64_imm(2, 0).call_helper(kHelperReadMem).exit();
  EXPECT_EQ(run_r0(b), 0u);
  // A NUL-terminated string on the stack.
  Asm c;
  c.st(kSizeDw, 10, -8, 0x00636261).mov64_reg(1, 10).alu64_imm(kAluAdd, 1, -8);
  c.call_helper(kHelperStrlen).exit();
  EXPECT_EQ(run_r0(c), 3u);
  // Context argument.
  uint8_t ctx[4] = {42};
  RunOutcome o = run_prog(Asm().call_helper(kHelperCtx).exit(), {}, ctx, sizeof(ctx));
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 42u);
  // Fixed-size writable memory.
  Asm d;
  d.mov64_reg(1, 10)
      .alu64_imm(kAluAdd, 1, -8)
      .call_helper(kHelperFixed)
      .ldx(kSizeDw, 0, 10, -8)
      .exit();
  EXPECT_EQ(run_r0(d), 0x1122334455667788ull);
}

TEST(InterpCall, MemOrNullReturnIsAccessible) {
  Asm a;
  a.call_helper(kHelperScratch).st(kSizeDw, 0, 8, 7).ldx(kSizeDw, 0, 0, 8).exit();
  EXPECT_EQ(run_r0(a), 7u);
  Asm b;
  b.call_helper(kHelperScratch).ldx(kSizeB, 0, 0, 16).exit();  // one past the 16 bytes
  TestProg p(b);
  EXPECT_EQ(p.run().error.code, EFAULT);
}

TEST(InterpCall, UnpreparedProgramIsRejected) {
  vm::Program prog;
  prog.name = "raw";
  prog.insns = Asm().mov64_imm(0, 1).exit().build();
  vm::RunContext rc;
  Result<uint64_t> r = vm::interpret(prog, rc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
}

// ---- callbacks ----------------------------------------------------------------

TEST(InterpCall, CallbacksThroughCallFn) {
  // sum over i in [0, 5) of cb(i, ctx) where cb returns i * 10 + *ctx; ctx
  // points into main's stack frame, which the callback may read.
  Asm a;
  a.st(kSizeDw, 10, -8, 3).mov64_imm(1, 5).ld_func(2, "cb").mov64_reg(3, 10);
  a.alu64_imm(kAluAdd, 3, -8).call_helper(kHelperLoop).exit();
  a.label("cb").st(kSizeDw, 10, -8, 1).mov64_reg(0, 1).alu64_imm(kAluMul, 0, 10);
  a.ldx(kSizeDw, 3, 2, 0).alu64_reg(kAluAdd, 0, 3).exit();
  EXPECT_EQ(run_r0(a), (0 + 10 + 20 + 30 + 40) + 5u * 3);
}

TEST(InterpCall, FaultInCallbackStopsTheWholeRun) {
  Asm a;
  a.mov64_imm(1, 5)
      .ld_func(2, "cb")
      .mov64_imm(3, 0)
      .call_helper(kHelperLoop)
      .mov64_imm(0, 1)
      .exit();
  a.label("cb").mov64_imm(0, 0).jmp_imm(kJmpJlt, 1, 2, "ok").ldx(kSizeDw, 0, 0, 0);
  a.label("ok").exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  RunOutcome o = p.run();
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, 9u);  // the load inside the callback
  EXPECT_NE(o.error.message.find("null pointer load"), std::string::npos) << o.error.message;
}

TEST(InterpCall, CallbackBudgetExhaustion) {
  Asm a;
  a.mov64_imm(1, 1000).ld_func(2, "cb").mov64_imm(3, 0).call_helper(kHelperLoop).exit();
  a.label("cb")
      .mov64_imm(0, 0)
      .label("spin")
      .alu64_imm(kAluAdd, 0, 1)
      .jmp_imm(kJmpJlt, 0, 100, "spin");
  a.exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run(nullptr, 0, true, 10000);
  EXPECT_EQ(o.error.code, ELOOP);
  RunOutcome ok = p.run(nullptr, 0, true, 1'000'000);
  ASSERT_TRUE(ok.ok) << ok.error.message;
  EXPECT_EQ(ok.r0, 100u * 1000);
}

TEST(InterpCall, CallbacksCountTowardTheFrameLimit) {
  // cb(n) = n == 0 ? 0 : 1 + recurse(cb, n - 1): each level is a helper call
  // plus a callback frame.
  auto prog = [](int n) {
    Asm a;
    a.ld_func(1, "cb").mov64_imm(2, n).call_helper(kHelperRecurse).exit();
    a.label("cb").mov64_imm(0, 0).jmp_imm(kJmpJeq, 1, 0, "ret");
    a.mov64_reg(2, 1).alu64_imm(kAluSub, 2, 1).ld_func(1, "cb").call_helper(kHelperRecurse);
    a.alu64_imm(kAluAdd, 0, 1).label("ret").exit();
    return a;
  };
  TestProg ok(prog(6));  // frames: main + 7 callbacks = 8
  RunOutcome o = ok.run();
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 6u);
  TestProg deep(prog(7));
  EXPECT_EQ(deep.run().error.code, E2BIG);
}

TEST(InterpCall, Callx) {
  Asm a;
  a.ld_func(3, "f").mov64_imm(1, 20).callx(3).alu64_imm(kAluAdd, 0, 1).exit();
  a.label("f").mov64_reg(0, 1).alu64_imm(kAluMul, 0, 2).exit();
  EXPECT_EQ(run_r0(a), 41u);
  // A plain number is not a function.
  Asm b;
  b.mov64_imm(3, 4).callx(3).exit().label("f").exit();
  TestProg p(b);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run();
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, 1u);
  // A tagged value that is not a function entry.
  Asm c;
  c.ld_imm64(3, vm::make_callback_value(1)).callx(3).exit();
  TestProg q(c);
  ASSERT_TRUE(q.prepared.ok());
  EXPECT_EQ(q.run().error.code, EFAULT);
}

TEST(InterpCall, InterpretCallbackRunsAFunctionOnItsOwn) {
  // main takes f's address (so f is a function) and exits 0; f(a, b) = a * b
  // + its own stack slot.
  Asm a;
  a.ld_func(2, "f").mov64_imm(0, 0).exit();
  a.label("f").st(kSizeDw, 10, -8, 2).mov64_reg(0, 1).alu64_reg(kAluMul, 0, 2);
  a.ldx(kSizeDw, 1, 10, -8).alu64_reg(kAluAdd, 0, 1).exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  vm::RunContext rc;
  Result<uint64_t> r =
      vm::interpret_callback(p.prog, rc, vm::make_callback_value(4), {6, 7, 0, 0, 0});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), 44u);
  Result<uint64_t> bad = vm::interpret_callback(p.prog, rc, vm::make_callback_value(5), {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_FALSE(vm::interpret_callback(p.prog, rc, 4, {}).ok());  // untagged
}

TEST(InterpCall, CurrentRunIsVisibleToHelpers) {
  EXPECT_EQ(vm::current_run(), nullptr);
  Asm a;
  a.mov64_imm(1, 1).ld_func(2, "cb").mov64_imm(3, 0).call_helper(kHelperLoop).exit();
  a.label("cb").mov64_imm(0, 9).exit();
  EXPECT_EQ(run_r0(a), 9u);
  EXPECT_EQ(vm::current_run(), nullptr);  // restored after the run
}

}  // namespace
}  // namespace userbpf::test
