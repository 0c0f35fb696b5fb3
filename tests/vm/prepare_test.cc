// prepare_program(): what it rejects (with errno and pc) and the executable
// form it builds.
#include "isa/decode.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

Status prep(const Asm& a, std::vector<maps::Map*> maps = {}, bool sleepable = false) {
  vm::Program prog;
  prog.name = "p";
  prog.insns = a.build();
  prog.maps = std::move(maps);
  prog.helpers = fake_helper_table();
  prog.kfuncs = {&kFakeKfuncAdd};
  prog.sleepable = sleepable;
  return vm::prepare_program(prog);
}

void expect_reject(const Status& st, int code, const char* text) {
  ASSERT_FALSE(st.ok()) << "expected: " << text;
  EXPECT_EQ(st.error().code, code) << st.error().message;
  EXPECT_NE(st.error().message.find(text), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("program 'p'"), std::string::npos) << st.error().message;
}

TEST(Prepare, AcceptsMinimalProgram) {
  EXPECT_TRUE(prep(Asm().mov64_imm(0, 0).exit()).ok());
}

TEST(Prepare, SizeLimits) {
  vm::Program prog;
  prog.name = "p";
  Status st = vm::prepare_program(prog);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, E2BIG);  // the kernel's errno for insn_cnt == 0
}

TEST(Prepare, RejectsMalformedInstructions) {
  expect_reject(prep(Asm().emit(make_insn(0xff, 0, 0, 0, 0)).exit()), EINVAL,
                "pc 0: invalid opcode");
  expect_reject(prep(Asm().mov64_imm(0, 0).alu64_imm(kAluAdd, 10, 8).exit()), EINVAL,
                "pc 1: write to the read-only frame pointer");
  expect_reject(prep(Asm().mov64_imm(0, 0).emit(make_insn(0x07, 11, 0, 0, 1)).exit()), EINVAL,
                "pc 1: invalid register");
  expect_reject(prep(Asm().mov64_imm(0, 0).emit(make_insn(kLdImm64, 0, 0, 0, 0))), EINVAL,
                "pc 1: ld_imm64 is missing its second slot");
}

TEST(Prepare, RejectsBadJumps) {
  expect_reject(prep(Asm().ja(5).exit()), EINVAL, "pc 0: jump to 6 outside its function");
  expect_reject(prep(Asm().ja(-2).exit()), EINVAL, "pc 0: jump to -1");
  // Into the second slot of an ld_imm64.
  expect_reject(prep(Asm().ja(1).ld_imm64(0, 1).exit()), EINVAL, "pc 0: jump to 2");
  // Across a function boundary.
  Asm a;
  a.call_local("f").ja("inside").exit();
  a.label("f").mov64_imm(0, 1).label("inside").exit();
  expect_reject(prep(a), EINVAL, "pc 1: jump to 4 outside its function [0, 3)");
}

TEST(Prepare, FunctionsMustEndInExitOrGoto) {
  expect_reject(prep(Asm().mov64_imm(0, 0)), EINVAL, "pc 0: last instruction");
  expect_reject(prep(Asm().mov64_imm(0, 0).jmp_imm(kJmpJeq, 0, 0, -2)), EINVAL, "last instruction");
  expect_reject(prep(Asm().mov64_imm(0, 0).exit().ld_imm64(0, 1)), EINVAL,
                "pc 3: last instruction");
  // The main function runs into a subprogram's first instruction.
  Asm a;
  a.call_local("f").mov64_imm(0, 0);
  a.label("f").mov64_imm(0, 1).exit();
  expect_reject(prep(a), EINVAL, "pc 1: last instruction of the function at pc 0");
  EXPECT_TRUE(prep(Asm().mov64_imm(0, 0).ja(-2)).ok());  // ends in goto
  EXPECT_TRUE(prep(Asm().mov64_imm(0, 0).exit().gotol(-3)).ok());
}

TEST(Prepare, CallTargets) {
  expect_reject(prep(Asm().call_local(5).exit()), EINVAL, "pc 0: call target 6 out of range");
  expect_reject(prep(Asm().call_local(1).ld_imm64(0, 0).exit()), EINVAL, "call target 2");
  expect_reject(prep(Asm().ld_func(1, 7).exit()), EINVAL, "pc 0: callback target 8 out of range");
}

TEST(Prepare, HelpersAndKfuncs) {
  expect_reject(prep(Asm().call_helper(200).exit()), EINVAL, "pc 0: unknown helper 200");
  expect_reject(prep(Asm().mov64_imm(0, 0).call_helper(-1).exit()), EINVAL,
                "pc 1: unknown helper -1");
  expect_reject(prep(Asm().call_helper(100000).exit()), EINVAL, "unknown helper 100000");
  expect_reject(prep(Asm().call_kfunc(1).exit()), EINVAL, "pc 0: kfunc index 1 out of range");
  expect_reject(prep(Asm().call_kfunc(-1).exit()), EINVAL, "kfunc index -1");
  expect_reject(prep(Asm().call_helper(kHelperSleepy).exit()), EINVAL, "may sleep");
  EXPECT_TRUE(prep(Asm().call_helper(kHelperSleepy).exit(), {}, /*sleepable=*/true).ok());
  // No helper table at all.
  vm::Program prog;
  prog.name = "p";
  prog.insns = Asm().call_helper(1).exit().build();
  EXPECT_EQ(vm::prepare_program(prog).error().code, EINVAL);
}

uint64_t fake_slot_fn(uint64_t, uint64_t, vm::ObjRunState*) {
  return 0;
}

// The engines call a proto's slot_fn with nothing around it (no argument
// check, no region reset, no grant), so only protos that need none of that
// may have one.
TEST(Prepare, SlotFnProtosNeedNothingAroundTheCall) {
  auto prep_kfunc = [](const vm::HelperProto& proto) {
    vm::Program prog;
    prog.name = "p";
    prog.insns = Asm().mov64_imm(0, 0).call_kfunc(0).exit().build();
    prog.helpers = fake_helper_table();
    prog.kfuncs = {&proto};
    return vm::prepare_program(prog);
  };
  using vm::ArgKind;
  vm::HelperProto ok{"slot", kFakeKfuncAdd.fn, {ArgKind::kAnything, ArgKind::kAnything}};
  ok.slot_fn = fake_slot_fn;
  EXPECT_TRUE(prep_kfunc(ok).ok());
  vm::HelperProto p = ok;
  p.args[2] = ArgKind::kMem;
  p.args[3] = ArgKind::kConstSize;
  expect_reject(prep_kfunc(p), EINVAL, "pc 1: kfunc slot has a slot_fn");
  p = ok;
  p.args[4] = ArgKind::kFunc;
  expect_reject(prep_kfunc(p), EINVAL, "slot_fn");
  p = ok;
  p.moves_packet = true;
  expect_reject(prep_kfunc(p), EINVAL, "slot_fn");
  p = ok;
  p.ret = vm::RetKind::kMemOrNull;
  p.ret_size = 16;
  expect_reject(prep_kfunc(p), EINVAL, "slot_fn");
  // bpf_obj_new's: its objects are found by address, never granted.
  p.obj_call = vm::HelperProto::ObjCall::kNew;
  EXPECT_TRUE(prep_kfunc(p).ok());
  p = ok;
  p.ret = vm::RetKind::kMapValueOrNull;
  expect_reject(prep_kfunc(p), EINVAL, "slot_fn");
}

TEST(Prepare, MapReferences) {
  auto map = make_fake_map(16, 1, "data");
  expect_reject(prep(Asm().ld_map(1, 1).exit(), {map.get()}), EINVAL,
                "pc 0: map index 1 out of range");
  expect_reject(prep(Asm().ld_map_value(1, 0, 16).exit(), {map.get()}), EINVAL,
                "offset 16 past the value of map 'data'");
  expect_reject(prep(Asm().ld_imm64(1, 0, kPseudoBtfId).exit()), EOPNOTSUPP, "BTF id");
  maps::MapOps no_value = kFakeMapOps;
  no_value.direct_value_addr = nullptr;
  map->ops = &no_value;
  expect_reject(prep(Asm().ld_map_value(1, 0, 0).exit(), {map.get()}), EINVAL,
                "has no direct value address");
}

TEST(Prepare, ExecutableForm) {
  auto map = make_fake_map(16, 1);
  Asm a;
  a.ld_map(1, 0).ld_map_value(2, 0, 8).ld_func(3, "f").ld_imm64(4, 0x1122334455667788ull);
  a.emit(make_insn(kLdImm64, 5, kPseudoMapFd, 0, 0)).emit(make_insn(0, 0, 0, 0, 0));
  a.exit().label("f").exit();
  vm::Program prog;
  prog.name = "p";
  prog.insns = a.build();
  prog.maps = {map.get()};
  ASSERT_TRUE(vm::prepare_program(prog).ok());
  ASSERT_TRUE(prog.prepared);
  const auto& x = prog.exec_insns;
  ASSERT_EQ(x.size(), prog.insns.size());
  for (size_t pc : {0u, 2u, 4u, 6u, 8u}) EXPECT_EQ(x[pc].src, 0) << pc;
  EXPECT_EQ(ld_imm64_value(x[0], x[1]), reinterpret_cast<uintptr_t>(map.get()));
  EXPECT_EQ(ld_imm64_value(x[2], x[3]), reinterpret_cast<uintptr_t>(map->buf.data()) + 8);
  EXPECT_EQ(ld_imm64_value(x[4], x[5]), vm::make_callback_value(11));
  EXPECT_EQ(ld_imm64_value(x[6], x[7]), 0x1122334455667788ull);
  EXPECT_EQ(ld_imm64_value(x[8], x[9]), reinterpret_cast<uintptr_t>(map.get()));  // fd = index
  EXPECT_EQ(prog.func_entries, (std::vector<uint32_t>{0, 11}));
  // The linked form is left as it was.
  EXPECT_EQ(prog.insns[0].src, kPseudoMapIdx);
}

}  // namespace
}  // namespace userbpf::test
