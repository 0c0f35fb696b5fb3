// The interpreter's fused obj calls (vm/interp_form.cc; vm::InterpObjCall in
// vm/program.h): the moves that set a bpf_obj_new / bpf_obj_drop call's
// arguments, the call and the `if r0 == 0 goto` after it run as one
// instruction of interp_insns. Tested here:
//   InterpForm.*     build_interp_form on hand-built programs: which pc heads
//                    a fused run, what its entry records (arguments, call_off,
//                    null_branch, the inline-path fields), nothing else changed.
//   InterpObjCall.*  vm::interpret: with a recording slot_fn, the call sees
//                    what the moves would leave, r1-r5 are clobbered, the null
//                    branch (and its budget), jumps into the run, faults name
//                    the call; with a real MemDomain and the helpers' slot_fns,
//                    the inline paths keep objects and stats balanced, bad
//                    drops fault at the call, held objects are refused; the
//                    facts (accesses proven inside an object run unchecked,
//                    a drop of a known object knows its class) hold only
//                    where they should, and unchecked accesses act as
//                    checked ones.
// Programs run through vm::interpret directly (not TestProg's engine hook):
// the fused form is the interpreter's alone.
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "helpers/helpers_obj.h"
#include "maps/bpf_obj.h"
#include "mem/domain.h"
#include "obj_test_domain.h"
#include "vm/interp_state.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;
using ObjCall = vm::HelperProto::ObjCall;

constexpr uint8_t kConst = vm::InterpObjCall::kArgConst;
constexpr uint64_t kBudget = 1ull << 32;

// ---- a recording slot_fn ----------------------------------------------------

struct SlotCall {
  uint64_t r1, r2;
  vm::ObjRunState* run;
};
// What the fake slot_fn saw and what it does: returns ret (or ret_of(r1,
// r2)), or faults like a refused bpf_obj_drop.
struct FakeSlot {
  std::vector<SlotCall> calls;
  uint64_t ret = 0;
  uint64_t (*ret_of)(uint64_t r1, uint64_t r2) = nullptr;
  bool fault = false;
};
FakeSlot g_fake;

uint64_t fake_slot_fn(uint64_t r1, uint64_t r2, vm::ObjRunState* run) {
  g_fake.calls.push_back({r1, r2, run});
  if (g_fake.fault) {
    vm::interp::fault_in_helper(vm::current_run(), EINVAL, r1, "fake slot_fn refuses 0x%" PRIx64,
                                r1);
    return 0;
  }
  return g_fake.ret_of ? g_fake.ret_of(r1, r2) : g_fake.ret;
}

uint64_t fake_fn(uint64_t r1, uint64_t r2, uint64_t, uint64_t, uint64_t) {
  return r1 + r2;
}

// Kfunc indexes of the fake programs (fake_kfuncs()).
enum FakeKfunc : int32_t {
  kKfNew = 0,       // obj_call kNew, fake_slot_fn: fused
  kKfDrop = 1,      // obj_call kDrop, fake_slot_fn: fused
  kKfPlain = 2,     // fake_slot_fn, obj_call kNone: never fused (the reference)
  kKfNoSlotFn = 3,  // obj_call kNew without a slot_fn: never fused
};

std::vector<const vm::HelperProto*> fake_kfuncs() {
  static const std::vector<vm::HelperProto> protos = [] {
    std::vector<vm::HelperProto> v;
    for (ObjCall kind : {ObjCall::kNew, ObjCall::kDrop, ObjCall::kNone, ObjCall::kNew}) {
      vm::HelperProto p{"fake_obj", fake_fn, {vm::ArgKind::kAnything, vm::ArgKind::kAnything}};
      p.slot_fn = v.size() == static_cast<size_t>(kKfNoSlotFn) ? nullptr : fake_slot_fn;
      p.obj_call = kind;
      v.push_back(p);
    }
    return v;
  }();
  return {&protos[0], &protos[1], &protos[2], &protos[3]};
}

// ---- programs ---------------------------------------------------------------

// The program a, prepared (expects success), of domain if given.
std::unique_ptr<vm::Program> prepare(const Asm& a, mem::MemDomain* domain = nullptr,
                                     std::vector<const vm::HelperProto*> kfuncs = fake_kfuncs(),
                                     std::vector<maps::Map*> maps = {}) {
  auto p = std::make_unique<vm::Program>();
  p->name = "form";
  p->insns = a.build();
  p->helpers = fake_helper_table();
  p->kfuncs = std::move(kfuncs);
  p->maps = std::move(maps);
  p->mem_domain = domain;
  const Status st = vm::prepare_program(*p);
  EXPECT_TRUE(st.ok()) << st.error().message;
  return p;
}

RunOutcome run(vm::Program& p, void* ctx = nullptr, size_t ctx_size = 0,
               uint64_t budget = kBudget) {
  vm::RunContext rc;
  rc.ctx = ctx;
  rc.ctx_size = ctx_size;
  rc.ctx_writable = true;
  rc.insn_budget = budget;
  const Result<uint64_t> r = vm::interpret(p, rc);
  RunOutcome o;
  o.ok = r.ok();
  if (r.ok()) {
    o.r0 = r.value();
  } else {
    o.error = r.error();
  }
  o.fault = rc.fault;
  o.budget_left = rc.insn_budget;
  return o;
}

// The run stopped on a bad memory access at pc.
void expect_efault_at(const RunOutcome& o, size_t pc) {
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EFAULT) << o.error.message;
  EXPECT_EQ(o.fault.pc, pc);
}

bool is_fused(const Insn& i) {
  return i.code == vm::kExecObjNew || i.code == vm::kExecObjDrop ||
         i.code == vm::kExecObjNewKnown || i.code == vm::kExecObjDropKnown;
}

// The pc of the instruction fused as interp_obj_calls[idx], or -1.
int head_of(const vm::Program& p, size_t idx) {
  for (size_t pc = 0; pc < p.interp_insns.size(); pc++)
    if (is_fused(p.interp_insns[pc]) && p.interp_insns[pc].imm == static_cast<int32_t>(idx))
      return static_cast<int>(pc);
  return -1;
}

// interp_insns is exec_insns but at the fused heads, one per entry, and the
// `add K` + jump pairs (fused_add_jump_code).
void expect_unchanged_but_heads(const vm::Program& p) {
  ASSERT_EQ(p.interp_insns.size(), p.exec_insns.size());
  std::vector<bool> named(p.interp_obj_calls.size(), false);
  for (size_t pc = 0; pc < p.interp_insns.size(); pc++) {
    const Insn& f = p.interp_insns[pc];
    if (is_fused(f)) {
      ASSERT_GE(f.imm, 0) << "pc " << pc;
      ASSERT_LT(static_cast<size_t>(f.imm), named.size()) << "pc " << pc;
      const auto idx = static_cast<size_t>(f.imm);
      EXPECT_FALSE(named[idx]) << "pc " << pc << ": entry " << idx << " named twice";
      named[idx] = true;
      continue;
    }
    const Insn& e = p.exec_insns[pc];
    if (f.code != e.code && f.code == vm::obj_access_code(e.code)) {  // facts: unchecked
      Insn g = f;
      g.code = e.code;
      EXPECT_EQ(std::memcmp(&g, &e, sizeof(Insn)), 0) << "pc " << pc;
      continue;
    }
    if (f.code != e.code && pc + 1 < p.exec_insns.size()) {
      const bool alu32 = e.code == (kClassAlu | kSrcK | kAluAdd);
      EXPECT_TRUE(alu32 || e.code == (kClassAlu64 | kSrcK | kAluAdd)) << "pc " << pc;
      EXPECT_EQ(int{f.code}, int{vm::fused_add_jump_code(alu32, p.exec_insns[pc + 1].code)})
          << "pc " << pc;
      Insn g = f;
      g.code = e.code;
      EXPECT_EQ(std::memcmp(&g, &e, sizeof(Insn)), 0) << "pc " << pc;
      continue;
    }
    EXPECT_EQ(std::memcmp(&f, &e, sizeof(Insn)), 0) << "pc " << pc;
  }
  for (size_t i = 0; i < named.size(); i++) EXPECT_TRUE(named[i]) << "entry " << i;
}

// The program's one fused call (a default entry and a failure if it has
// not exactly one).
vm::InterpObjCall only_call(const vm::Program& p) {
  EXPECT_EQ(p.interp_obj_calls.size(), 1u);
  return p.interp_obj_calls.size() == 1 ? p.interp_obj_calls[0] : vm::InterpObjCall{};
}

// An expected argument of a fused call: a constant, or the register read.
struct Arg {
  uint8_t reg;
  uint64_t v;
};
constexpr Arg imm(uint64_t v) {
  return {kConst, v};
}
constexpr Arg in_reg(uint8_t r) {
  return {r, 0};
}

void expect_args(const vm::InterpObjCall& f, Arg a1, Arg a2) {
  const Arg want[2] = {a1, a2};
  for (int i = 0; i < 2; i++) {
    EXPECT_EQ(int{f.arg_reg[i]}, int{want[i].reg}) << "r" << i + 1;
    if (want[i].reg == kConst) EXPECT_EQ(f.arg[i], want[i].v) << "r" << i + 1;
  }
}

// Runs p with the fake slot_fn returning ret: the run returns ret and the
// slot_fn was called once, with r1 and r2.
void expect_one_call(vm::Program& p, uint64_t ret, uint64_t r1, uint64_t r2) {
  g_fake = FakeSlot{};
  g_fake.ret = ret;
  const RunOutcome o = run(p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, ret);
  ASSERT_EQ(g_fake.calls.size(), 1u);
  EXPECT_EQ(g_fake.calls[0].r1, r1);
  EXPECT_EQ(g_fake.calls[0].r2, r2);
  EXPECT_NE(g_fake.calls[0].run, nullptr);
}

// ---- InterpForm: the fused form ---------------------------------------------

// The run ends at the call; it starts at its first move (an ld_imm64 takes
// two slots); the entry has what the moves leave in r1 and r2.
TEST(InterpForm, HeadIsTheFirstMoveOfTheRun) {
  const struct {
    int32_t kf;
    uint8_t code;
  } kKinds[] = {{kKfNew, vm::kExecObjNew}, {kKfDrop, vm::kExecObjDrop}};
  for (const auto [kf, code] : kKinds) {
    SCOPED_TRACE(kf);
    Asm a;
    a.ld_imm64(1, 8).mov64_imm(2, 0).mov64_imm(1, 16).ld_imm64(2, 0x1234).call_kfunc(kf).exit();
    auto p = prepare(a);
    const vm::InterpObjCall f = only_call(*p);
    EXPECT_EQ(head_of(*p, 0), 0);
    EXPECT_EQ(p->interp_insns[0].code, code);
    EXPECT_EQ(f.call_off, 6u);
    expect_args(f, imm(16), imm(0x1234));
    EXPECT_EQ(f.slot_fn, &fake_slot_fn);
    EXPECT_FALSE(f.null_branch);
    expect_unchanged_but_heads(*p);
  }
}

TEST(InterpForm, ANonMoveEndsTheRun) {
  const struct {
    const char* what;
    std::function<void(Asm&)> emit;
  } kBreakers[] = {
      {"r1 += 1", [](Asm& a) { a.alu64_imm(kAluAdd, 1, 1); }},
      {"w3 = w1", [](Asm& a) { a.mov32_reg(3, 1); }},
      {"r3 = (s8)r1", [](Asm& a) { a.movsx64(3, 1, 8); }},
      {"r6 = 1", [](Asm& a) { a.mov64_imm(6, 1); }},
      {"r0 = 1", [](Asm& a) { a.mov64_imm(0, 1); }},
      {"*(u64 *)(r10 - 8) = r1", [](Asm& a) { a.stx(kSizeDw, 10, 1, -8); }},
      {"r3 = *(u64 *)(r10 - 8)", [](Asm& a) { a.ldx(kSizeDw, 3, 10, -8); }},
      {"if r1 == 0 goto +0", [](Asm& a) { a.jmp_imm(kJmpJeq, 1, 0, 0); }},
      {"call a helper", [](Asm& a) { a.call_helper(kHelperSum5); }},
      {"call an unfused kfunc", [](Asm& a) { a.call_kfunc(kKfPlain); }},
  };
  for (const auto& b : kBreakers) {
    SCOPED_TRACE(b.what);
    Asm a;
    a.mov64_imm(1, 5).mov64_imm(2, 6);
    b.emit(a);
    const int head = static_cast<int>(a.pc());
    a.mov64_imm(2, 7).call_kfunc(kKfNew).exit();
    auto p = prepare(a);
    const vm::InterpObjCall f = only_call(*p);
    EXPECT_EQ(head_of(*p, 0), head);
    EXPECT_EQ(f.call_off, 1u);
    expect_args(f, in_reg(1), imm(7));  // r1 as it was before the run
    expect_unchanged_but_heads(*p);
  }
}

TEST(InterpForm, CallWithoutMovesIsFusedOnItself) {
  auto p = prepare(Asm().call_kfunc(kKfDrop).exit());
  vm::InterpObjCall f = only_call(*p);
  EXPECT_EQ(head_of(*p, 0), 0);
  EXPECT_EQ(f.call_off, 0u);
  expect_args(f, in_reg(1), in_reg(2));

  // Two calls: the moves after the first start a new run.
  p = prepare(Asm()
                  .mov64_imm(1, 16)
                  .mov64_imm(2, 0)
                  .call_kfunc(kKfNew)
                  .mov64_reg(1, 0)
                  .call_kfunc(kKfDrop)
                  .mov64_imm(0, 0)
                  .call_kfunc(kKfDrop)
                  .exit());
  ASSERT_EQ(p->interp_obj_calls.size(), 3u);
  EXPECT_EQ(head_of(*p, 0), 0);
  EXPECT_EQ(p->interp_obj_calls[0].call_off, 2u);
  EXPECT_EQ(head_of(*p, 1), 3);
  EXPECT_EQ(p->interp_obj_calls[1].call_off, 1u);
  expect_args(p->interp_obj_calls[1], in_reg(0), in_reg(2));
  EXPECT_EQ(head_of(*p, 2), 6);  // after `r0 = 0`, which is no argument move
  EXPECT_EQ(p->interp_obj_calls[2].call_off, 0u);
  expect_unchanged_but_heads(*p);
}

// Register moves record the register (as of before the run) or the
// constant the run already put there; later moves overwrite earlier ones.
TEST(InterpForm, ArgumentsAreWhatTheMovesLeave) {
  auto map = make_fake_map(8, 1);
  const auto map_addr = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(map.get()));
  const struct {
    const char* what;
    std::function<void(Asm&)> moves;
    Arg r1, r2;
  } kCases[] = {
      {"r1 = r0", [](Asm& a) { a.mov64_reg(1, 0); }, in_reg(0), in_reg(2)},
      {"r1 = r7", [](Asm& a) { a.mov64_reg(1, 7); }, in_reg(7), in_reg(2)},
      {"r1 = r10", [](Asm& a) { a.mov64_reg(1, 10); }, in_reg(10), in_reg(2)},
      {"r1 = 5; r2 = r1", [](Asm& a) { a.mov64_imm(1, 5).mov64_reg(2, 1); }, imm(5), imm(5)},
      {"r3 = 4; r1 = r3; r3 = 9; r2 = r3",
       [](Asm& a) { a.mov64_imm(3, 4).mov64_reg(1, 3).mov64_imm(3, 9).mov64_reg(2, 3); }, imm(4),
       imm(9)},
      {"r3 = r1; r1 = r2; r2 = r3",
       [](Asm& a) { a.mov64_reg(3, 1).mov64_reg(1, 2).mov64_reg(2, 3); }, in_reg(2), in_reg(1)},
      {"r5 = r4; r1 = r5", [](Asm& a) { a.mov64_reg(5, 4).mov64_reg(1, 5); }, in_reg(4), in_reg(2)},
      {"w1 = -1; r2 = -1", [](Asm& a) { a.mov32_imm(1, -1).mov64_imm(2, -1); }, imm(0xffffffff),
       imm(~0ull)},
      {"r2 = 0x1122334455667788 ll", [](Asm& a) { a.ld_imm64(2, 0x1122334455667788ull); },
       in_reg(1), imm(0x1122334455667788ull)},
      // The executable form's map address is a constant like any other.
      {"r2 = map ll", [](Asm& a) { a.ld_map(2, 0); }, in_reg(1), imm(map_addr)},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.what);
    Asm a;
    a.mov64_imm(0, 0);
    c.moves(a);
    const size_t call = a.pc();
    a.call_kfunc(kKfNew).exit();
    auto p = prepare(a, nullptr, fake_kfuncs(), {map.get()});
    const vm::InterpObjCall f = only_call(*p);
    EXPECT_EQ(head_of(*p, 0), 1);
    EXPECT_EQ(f.call_off, call - 1);
    expect_args(f, c.r1, c.r2);
    expect_unchanged_but_heads(*p);
  }
}

TEST(InterpForm, NullBranchIsOnlyIfR0EqualsZeroRightAfterTheCall) {
  const struct {
    const char* what;
    std::function<void(Asm&)> after;
    bool null_branch;
  } kCases[] = {
      {"if r0 == 0", [](Asm& a) { a.jmp_imm(kJmpJeq, 0, 0, "out"); }, true},
      {"if r0 != 0", [](Asm& a) { a.jmp_imm(kJmpJne, 0, 0, "out"); }, false},
      {"if r0 == 1", [](Asm& a) { a.jmp_imm(kJmpJeq, 0, 1, "out"); }, false},
      {"if r1 == 0", [](Asm& a) { a.jmp_imm(kJmpJeq, 1, 0, "out"); }, false},
      {"if w0 == 0", [](Asm& a) { a.jmp32_imm(kJmpJeq, 0, 0, "out"); }, false},
      {"if r0 == r1", [](Asm& a) { a.jmp_reg(kJmpJeq, 0, 1, "out"); }, false},
      {"goto", [](Asm& a) { a.ja("out"); }, false},
      {"r6 = r0", [](Asm& a) { a.mov64_reg(6, 0); }, false},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.what);
    Asm a;
    a.mov64_imm(1, 1).mov64_imm(2, 2).call_kfunc(kKfNew);
    c.after(a);
    a.mov64_imm(0, 1).exit().label("out").mov64_imm(0, 2).exit();
    auto p = prepare(a);
    EXPECT_EQ(only_call(*p).null_branch, c.null_branch);
    expect_unchanged_but_heads(*p);
  }
}

TEST(InterpForm, OnlyObjCallsWithASlotFnAreFused) {
  auto p = prepare(Asm()
                       .mov64_imm(1, 1)
                       .mov64_imm(2, 2)
                       .call_kfunc(kKfPlain)
                       .mov64_imm(1, 1)
                       .call_kfunc(kKfNoSlotFn)
                       .exit());
  EXPECT_TRUE(p->interp_obj_calls.empty());
  expect_unchanged_but_heads(*p);
}

// The inline fast paths are for the program's own domain (a constant r2
// equal to mem_domain), new's also for a constant size of 1..48 bytes.
TEST(InterpForm, InlineFieldsOnlyForTheProgramsDomain) {
  mem::MemDomain dom{mem::MemDomainOptions{1, 1, {}}};
  const auto d = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&dom));
  const struct {
    const char* what;
    int32_t kf;
    std::function<void(Asm&)> moves;
    mem::MemDomain* prog_domain;
    bool inline_path;
    uint32_t size;
  } kCases[] = {
      {"new 16", kKfNew, [d](Asm& a) { a.mov64_imm(1, 16).ld_imm64(2, d); }, &dom, true, 16},
      {"new 1", kKfNew, [d](Asm& a) { a.mov64_imm(1, 1).ld_imm64(2, d); }, &dom, true, 1},
      {"new 48", kKfNew, [d](Asm& a) { a.mov64_imm(1, 48).ld_imm64(2, d); }, &dom, true, 48},
      {"new 49", kKfNew, [d](Asm& a) { a.mov64_imm(1, 49).ld_imm64(2, d); }, &dom, false, 0},
      {"new 0", kKfNew, [d](Asm& a) { a.mov64_imm(1, 0).ld_imm64(2, d); }, &dom, false, 0},
      {"new r6", kKfNew, [d](Asm& a) { a.mov64_reg(1, 6).ld_imm64(2, d); }, &dom, false, 0},
      {"new, other domain", kKfNew, [d](Asm& a) { a.mov64_imm(1, 16).ld_imm64(2, d + 8); }, &dom,
       false, 0},
      {"new, domain in r6", kKfNew, [](Asm& a) { a.mov64_imm(1, 16).mov64_reg(2, 6); }, &dom, false,
       0},
      {"new, program without domain", kKfNew, [d](Asm& a) { a.mov64_imm(1, 16).ld_imm64(2, d); },
       nullptr, false, 0},
      {"drop r6", kKfDrop, [d](Asm& a) { a.mov64_reg(1, 6).ld_imm64(2, d); }, &dom, true, 0},
      {"drop, other domain", kKfDrop, [d](Asm& a) { a.mov64_reg(1, 6).ld_imm64(2, d - 8); }, &dom,
       false, 0},
      {"drop, domain in r6", kKfDrop, [](Asm& a) { a.mov64_reg(1, 6).mov64_reg(2, 6); }, &dom,
       false, 0},
      {"drop, program without domain", kKfDrop, [d](Asm& a) { a.mov64_reg(1, 6).ld_imm64(2, d); },
       nullptr, false, 0},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.what);
    Asm a;
    c.moves(a);
    a.call_kfunc(c.kf).exit();
    auto p = prepare(a, c.prog_domain);
    const vm::InterpObjCall f = only_call(*p);
    EXPECT_EQ(f.domain, c.inline_path ? &dom : nullptr);
    EXPECT_EQ(f.size, c.size);
    if (c.size != 0) EXPECT_EQ(f.cls, static_cast<uint32_t>(maps::obj_class(c.size)));
  }
}

// ---- InterpObjCall: running fused calls -------------------------------------

// The suite's fixture (the fused call's entry is vm::InterpObjCall here).
class InterpObjCall : public ::testing::Test {
 protected:
  void SetUp() override { g_fake = FakeSlot{}; }
  void TearDown() override { g_fake = FakeSlot{}; }
};

// Straight-line moves then the call: the slot_fn gets the values the moves
// leave, as the unfused call (kKfPlain, same slot_fn) does.
TEST_F(InterpObjCall, SlotFnGetsWhatTheMovesLeave) {
  const struct {
    const char* what;
    std::function<void(Asm&)> moves;
    uint64_t r1, r2;
  } kCases[] = {
      {"no moves", [](Asm&) {}, 0x11, 0x22},
      {"r1 = 8 ll; r2 = 0; r1 = 16; r2 = 0x1234 ll",
       [](Asm& a) { a.ld_imm64(1, 8).mov64_imm(2, 0).mov64_imm(1, 16).ld_imm64(2, 0x1234); }, 16,
       0x1234},
      {"r1 = r0; r2 = 7", [](Asm& a) { a.mov64_reg(1, 0).mov64_imm(2, 7); }, 0x1000, 7},
      {"r1 = r7; r2 = -1", [](Asm& a) { a.mov64_reg(1, 7).mov64_imm(2, -1); }, 0x77, ~0ull},
      {"r3 = 4; r1 = r3; r3 = 9; r2 = r3",
       [](Asm& a) { a.mov64_imm(3, 4).mov64_reg(1, 3).mov64_imm(3, 9).mov64_reg(2, 3); }, 4, 9},
      {"w1 = -1; r2 = r1", [](Asm& a) { a.mov32_imm(1, -1).mov64_reg(2, 1); }, 0xffffffff,
       0xffffffff},
      {"r3 = r1; r1 = r2; r2 = r3",
       [](Asm& a) { a.mov64_reg(3, 1).mov64_reg(1, 2).mov64_reg(2, 3); }, 0x22, 0x11},
      {"r5 = r3; r1 = r5", [](Asm& a) { a.mov64_reg(5, 3).mov64_reg(1, 5); }, 0x33, 0x22},
  };
  for (int32_t kf : {kKfNew, kKfDrop, kKfPlain}) {
    for (const auto& c : kCases) {
      SCOPED_TRACE(::testing::Message() << "kfunc " << kf << ": " << c.what);
      Asm a;
      // r1-r3 set before the run (r7 and r0 are no argument moves).
      a.mov64_imm(1, 0x11).mov64_imm(2, 0x22).mov64_imm(3, 0x33);
      a.mov64_imm(7, 0x77).mov64_imm(0, 0x1000);
      c.moves(a);
      a.call_kfunc(kf).exit();
      auto p = prepare(a);
      EXPECT_EQ(p->interp_obj_calls.size(), kf == kKfPlain ? 0u : 1u);
      expect_one_call(*p, 0xabc, c.r1, c.r2);
    }
  }
}

// Fused or not, a call gets the run's one ObjRunState.
TEST_F(InterpObjCall, SlotFnGetsTheRunsObjState) {
  auto p = prepare(Asm()
                       .mov64_imm(1, 1)
                       .call_kfunc(kKfNew)
                       .mov64_imm(1, 2)
                       .call_kfunc(kKfPlain)
                       .mov64_imm(1, 3)
                       .call_kfunc(kKfDrop)
                       .exit());
  ASSERT_EQ(p->interp_obj_calls.size(), 2u);
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  ASSERT_EQ(g_fake.calls.size(), 3u);
  EXPECT_NE(g_fake.calls[0].run, nullptr);
  EXPECT_EQ(g_fake.calls[0].run, g_fake.calls[1].run);
  EXPECT_EQ(g_fake.calls[2].run, g_fake.calls[1].run);
}

// After the call r1-r5 read as kClobberedReg (what the unfused call leaves),
// r0 is the slot_fn's, r6-r9 are kept.
TEST_F(InterpObjCall, ClobbersR1ToR5AndKeepsR6ToR9) {
  for (int32_t kf : {kKfNew, kKfDrop}) {
    for (bool null_check : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "kfunc " << kf << (null_check ? " with" : " without") << " the null branch");
      Asm a;
      a.mov64_reg(6, 1);  // ctx: where the registers go
      a.mov64_imm(7, 0x77).mov64_imm(8, 0x88).mov64_imm(9, 0x99);
      a.mov64_imm(3, 0x33).mov64_imm(4, 0x44).mov64_imm(5, 0x55).mov64_imm(1, 0x11).mov64_imm(2,
                                                                                              0x22);
      a.call_kfunc(kf);
      if (null_check) a.jmp_imm(kJmpJeq, 0, 0, 0);
      for (uint8_t r = 0; r <= 9; r++) a.stx(kSizeDw, 6, r, static_cast<int16_t>(8 * r));
      a.mov64_imm(0, 0).exit();
      auto p = prepare(a);
      const vm::InterpObjCall f = only_call(*p);
      EXPECT_EQ(f.null_branch, null_check);
      EXPECT_EQ(f.call_off, 5u);
      uint64_t regs[10] = {};
      g_fake.ret = 0x1234;
      const RunOutcome o = run(*p, regs, sizeof(regs));
      ASSERT_TRUE(o.ok) << o.error.message;
      EXPECT_EQ(regs[0], 0x1234u);
      for (int r = 1; r <= 5; r++) EXPECT_EQ(regs[r], vm::interp::kClobberedReg) << "r" << r;
      EXPECT_EQ(regs[6], reinterpret_cast<uintptr_t>(regs));
      EXPECT_EQ(regs[7], 0x77u);
      EXPECT_EQ(regs[8], 0x88u);
      EXPECT_EQ(regs[9], 0x99u);
    }
  }
}

// r0 == 0 takes the branch, any other r0 (a high half alone included) falls
// through to the instruction after the branch.
TEST_F(InterpObjCall, NullBranchTakenOnlyForZero) {
  Asm a;
  a.mov64_imm(1, 8).mov64_imm(2, 0).call_kfunc(kKfNew).jmp_imm(kJmpJeq, 0, 0, "null");
  a.mov64_imm(0, 1).exit();
  a.label("null").mov64_imm(0, 2).exit();
  auto p = prepare(a);
  ASSERT_TRUE(only_call(*p).null_branch);
  const struct {
    uint64_t ret, want;
  } kCases[] = {{0, 2}, {5, 1}, {1ull << 40, 1}};
  for (const auto [ret, want] : kCases) {
    g_fake.ret = ret;
    const RunOutcome o = run(*p);
    ASSERT_TRUE(o.ok) << o.error.message;
    EXPECT_EQ(o.r0, want) << "slot_fn returned " << ret;
  }
}

uint64_t zero_below_r2(uint64_t r1, uint64_t r2) {
  return r1 >= r2 ? r1 : 0;
}

// A null branch back to the loop head: taken and charged as the unfused
// branch is (budget left equal, exhausted at the same pc).
TEST_F(InterpObjCall, BackwardNullBranchChargesTheBudget) {
  auto loop = [](int32_t kf) {
    Asm a;
    a.mov64_imm(6, 0);
    a.label("loop").alu64_imm(kAluAdd, 6, 1);          // 1
    a.mov64_reg(1, 6).mov64_imm(2, 3).call_kfunc(kf);  // 2-4: r0 = r6 >= 3 ? r6 : 0
    a.jmp_imm(kJmpJeq, 0, 0, "loop");                  // 5: back by 5
    a.mov64_reg(0, 6).exit();
    return prepare(a);
  };
  auto fused = loop(kKfNew);
  auto plain = loop(kKfPlain);
  ASSERT_TRUE(only_call(*fused).null_branch);
  EXPECT_EQ(head_of(*fused, 0), 2);
  EXPECT_TRUE(plain->interp_obj_calls.empty());
  g_fake.ret_of = zero_below_r2;

  const RunOutcome f = run(*fused);
  const RunOutcome u = run(*plain);
  ASSERT_TRUE(f.ok) << f.error.message;
  ASSERT_TRUE(u.ok) << u.error.message;
  EXPECT_EQ(f.r0, 3u);
  EXPECT_EQ(u.r0, 3u);
  EXPECT_EQ(g_fake.calls.size(), 6u);
  EXPECT_EQ(u.budget_left, kBudget - 2 * 5);  // two taken branches back by 5
  EXPECT_EQ(f.budget_left, u.budget_left);

  // 9: the first branch back fits, the second does not.
  for (vm::Program* p : {fused.get(), plain.get()}) {
    const RunOutcome o = run(*p, nullptr, 0, 9);
    ASSERT_FALSE(o.ok);
    EXPECT_EQ(o.error.code, ELOOP) << o.error.message;
    EXPECT_EQ(o.fault.pc, 5u);
  }
}

// A jump into the run lands on the original instructions: the moves from
// there on and the call, with whatever r1/r2 held before the jump.
TEST_F(InterpObjCall, JumpIntoTheRunRunsTheOriginalInstructions) {
  const struct {
    const char* target;
    uint64_t r1, r2;
  } kCases[] = {
      {"head", 16, 0x1234},  // the fused instruction itself
      {"second move", 16, 0x1234}, {"third move", 16, 0x1234}, {"ld_imm64 move", 0x55, 0x1234},
      {"call", 0x55, 0x66},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.target);
    Asm a;
    a.mov64_imm(1, 0x55).mov64_imm(2, 0x66).ja(c.target);
    a.label("head").ld_imm64(1, 8);
    a.label("second move").mov64_imm(2, 0);
    a.label("third move").mov64_imm(1, 16);
    a.label("ld_imm64 move").ld_imm64(2, 0x1234);
    a.label("call").call_kfunc(kKfNew).exit();
    auto p = prepare(a);
    EXPECT_EQ(head_of(*p, 0), 3);
    expect_one_call(*p, 7, c.r1, c.r2);
  }

  // A loop whose first pass runs the fused head and whose second jumps
  // past it.
  Asm a;
  a.mov64_imm(6, 0);
  a.mov64_imm(1, 0x11);                                    // 1: head
  a.label("mid").mov64_reg(2, 6).call_kfunc(kKfNew);       // 2, 3
  a.alu64_imm(kAluAdd, 6, 1).mov64_imm(1, 0x55);           // 4, 5
  a.jmp_imm(kJmpJlt, 6, 2, "mid").mov64_reg(0, 6).exit();  // 6
  auto p = prepare(a);
  EXPECT_EQ(head_of(*p, 0), 1);
  g_fake = FakeSlot{};
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  ASSERT_EQ(g_fake.calls.size(), 2u);
  EXPECT_EQ(g_fake.calls[0].r1, 0x11u);
  EXPECT_EQ(g_fake.calls[0].r2, 0u);
  EXPECT_EQ(g_fake.calls[1].r1, 0x55u);
  EXPECT_EQ(g_fake.calls[1].r2, 1u);
}

// A fault in the slot_fn stops the run at once and names the call's pc,
// not the fused head's.
TEST_F(InterpObjCall, FaultInTheSlotFnNamesTheCall) {
  for (int32_t kf : {kKfNew, kKfDrop}) {
    SCOPED_TRACE(kf);
    Asm a;
    a.mov64_imm(6, 1);                                                     // 0
    a.mov64_imm(1, 0x1bad).mov64_imm(2, 0).ld_imm64(2, 2).call_kfunc(kf);  // 1, 2, 3-4, 5
    a.jmp_imm(kJmpJeq, 0, 0, 0);                                           // 6
    a.call_kfunc(kKfPlain).mov64_imm(0, 0).exit();                         // must not run
    auto p = prepare(a);
    EXPECT_EQ(head_of(*p, 0), 1);
    g_fake.calls.clear();
    g_fake.fault = true;
    const RunOutcome o = run(*p);
    ASSERT_FALSE(o.ok);
    EXPECT_EQ(o.error.code, EINVAL) << o.error.message;
    EXPECT_EQ(o.fault.pc, 5u);
    EXPECT_EQ(o.fault.addr, 0x1badu);
    EXPECT_NE(o.fault.what.find("fake slot_fn refuses"), std::string::npos) << o.fault.what;
    EXPECT_EQ(g_fake.calls.size(), 1u);
  }
}

// ---- InterpObjCall: real objects --------------------------------------------

// The helpers' slot_fns, counted: a fused call that takes the inline path
// never calls them.
uint32_t g_slow_new = 0;
uint32_t g_slow_drop = 0;
uint64_t counted_obj_new(uint64_t size, uint64_t domain, vm::ObjRunState* run) {
  ++g_slow_new;
  return helpers::bpf_obj_new_in_slot(size, domain, run);
}
uint64_t counted_obj_drop(uint64_t p, uint64_t domain, vm::ObjRunState* run) {
  ++g_slow_drop;
  return helpers::bpf_obj_drop_in_slot(p, domain, run);
}

constexpr int32_t kKfObjNew = ObjTestDomain::kKfNew;
constexpr int32_t kKfObjDrop = ObjTestDomain::kKfDrop;

// ObjTestDomain with the counted slot_fns. Its 16-byte list is refilled
// once first, so the only slow call of a run is its first (the run's slot
// not known yet).
struct ObjDomain : ObjTestDomain {
  ObjDomain() : ObjTestDomain(counted_obj_new, counted_obj_drop) {
    void* o = maps::obj_new_in_slot(dom, kSize, guard->slot());
    EXPECT_NE(o, nullptr);
    EXPECT_EQ(maps::obj_drop_in_slot(dom, o, guard->slot()), maps::ObjError::kOk);
    dom.global_ma.flush();
    g_slow_new = g_slow_drop = 0;
  }

  // bpf_obj_new of a kSize object and bpf_obj_drop(r<obj>) as the loader
  // leaves them: its r1 = size and r2 = domain (ld_imm64, or from
  // domain_reg) after clang's r1 = type id and r2 = 0. The call's pc.
  size_t obj_new(Asm& a, int domain_reg = -1) const {
    a.ld_imm64(1, 5).mov64_imm(2, 0).mov64_imm(1, kSize);
    set_r2(a, domain_reg);
    a.call_kfunc(kKfObjNew);
    return a.pc() - 1;
  }
  // The same for a kBigSize object (another size class).
  size_t obj_new_big(Asm& a) const {
    a.ld_imm64(1, 6).mov64_imm(2, 0).mov64_imm(1, kBigSize);
    set_r2(a, -1);
    a.call_kfunc(kKfNewBig);
    return a.pc() - 1;
  }
  size_t obj_drop(Asm& a, uint8_t obj, int domain_reg = -1) const {
    a.mov64_reg(1, obj);
    set_r2(a, domain_reg);
    a.call_kfunc(kKfObjDrop);
    return a.pc() - 1;
  }
  void set_r2(Asm& a, int domain_reg) const {
    if (domain_reg < 0) {
      a.ld_imm64(2, addr());
    } else {
      a.mov64_reg(2, static_cast<uint8_t>(domain_reg));
    }
  }
};

// kN times: new, check it is zeroed, store into it, drop. Returns kN plus
// any nonzero bit read from a fresh object. With r2 the domain constant
// the fused calls take the inline paths; with it in a register, the
// slot_fns: the outcome is the same.
TEST_F(InterpObjCall, NewStoreDropLoopBalances) {
  constexpr int32_t kN = 100;
  for (bool domain_in_reg : {false, true}) {
    SCOPED_TRACE(domain_in_reg ? "domain in r8: the slot_fns" : "domain constant: inline paths");
    ObjDomain d;
    const int dreg = domain_in_reg ? 8 : -1;
    Asm a;
    a.mov64_imm(6, 0).mov64_imm(9, 0).ld_imm64(8, d.addr());
    a.label("loop");
    d.obj_new(a, dreg);
    a.jmp_imm(kJmpJeq, 0, 0, "fail");
    a.ldx(kSizeDw, 3, 0, 8).alu64_reg(kAluOr, 9, 3);  // r9 |= the fresh object's data
    a.stx(kSizeDw, 0, 6, 8);
    d.obj_drop(a, 0, dreg);
    a.alu64_imm(kAluAdd, 6, 1).jmp_imm(kJmpJlt, 6, kN, "loop");
    a.mov64_reg(0, 6).alu64_reg(kAluAdd, 0, 9).exit();
    a.label("fail").mov64_imm(0, -1).exit();
    auto p = d.prepare(a);
    ASSERT_EQ(p->interp_obj_calls.size(), 2u);
    EXPECT_TRUE(p->interp_obj_calls[0].null_branch);
    EXPECT_EQ(p->interp_obj_calls[0].domain, domain_in_reg ? nullptr : &d.dom);
    EXPECT_EQ(p->interp_obj_calls[1].domain, domain_in_reg ? nullptr : &d.dom);
    // The facts follow the object from the new to the drop: both known
    // when they have the inline paths.
    EXPECT_EQ(p->interp_insns[head_of(*p, 0)].code,
              domain_in_reg ? vm::kExecObjNew : vm::kExecObjNewKnown);
    EXPECT_EQ(p->interp_insns[head_of(*p, 1)].code,
              domain_in_reg ? vm::kExecObjDrop : vm::kExecObjDropKnown);

    const uint64_t base = d.in_use();
    const RunOutcome o = run(*p);
    ASSERT_TRUE(o.ok) << o.error.message;  // a run left holding objects fails
    EXPECT_EQ(o.r0, static_cast<uint64_t>(kN));
    if (domain_in_reg) {
      EXPECT_EQ(g_slow_new, static_cast<uint32_t>(kN));
      EXPECT_EQ(g_slow_drop, static_cast<uint32_t>(kN));
    } else {
      EXPECT_EQ(g_slow_new, 1u);  // the first: the run's slot not known yet
      EXPECT_EQ(g_slow_drop, 0u);
    }
    EXPECT_EQ(d.in_use(), base);
  }
}

// The inline new makes its object the region the next accesses hit: all of
// its data, not a byte more (the store just past it faults, as without the
// cache), both for the run's first object (the call) and later ones.
TEST_F(InterpObjCall, NewObjectsRegionIsExactlyItsData) {
  for (int32_t off : {ObjDomain::kSize - 8, ObjDomain::kSize}) {
    SCOPED_TRACE(off);
    ObjDomain d;
    Asm a;
    d.obj_new(a);  // the call: the run's slot not known yet
    a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
    d.obj_new(a);  // inline
    a.jmp_imm(kJmpJeq, 0, 0, "drop6").mov64_reg(7, 0);
    // A jump target: the facts forget r7 (else the store in bounds would be
    // unchecked and the object's new would skip the region cache).
    a.jmp_imm(kJmpJeq, 7, 0, "store").label("store");
    const size_t store = a.pc();
    a.st(kSizeDw, 7, static_cast<int16_t>(off), 1);
    d.obj_drop(a, 7);
    a.label("drop6");
    d.obj_drop(a, 6);
    a.label("out").mov64_imm(0, 0).exit();
    auto p = d.prepare(a);
    EXPECT_EQ(p->interp_insns[store].code, p->exec_insns[store].code);  // checked
    EXPECT_EQ(p->interp_insns[head_of(*p, 1)].code, vm::kExecObjNew);
    const RunOutcome o = run(*p);
    EXPECT_EQ(g_slow_new, 1u);
    if (off < ObjDomain::kSize) {
      EXPECT_TRUE(o.ok) << o.error.message;
    } else {
      expect_efault_at(o, store);
    }
  }
}

// bpf_obj_drop of what is no object, or of an object already dropped: the
// inline path declines, the call faults at its own pc.
TEST_F(InterpObjCall, BadDropFaultsAtTheCall) {
  {
    ObjDomain d;
    Asm a;
    d.obj_new(a);  // the run's slot known: the drop below tries the inline path
    a.jmp_imm(kJmpJeq, 0, 0, "out");
    d.obj_drop(a, 0);
    const size_t head = a.pc() + 2;
    a.mov64_reg(6, 10).alu64_imm(kAluAdd, 6, -8);
    const size_t call = d.obj_drop(a, 6);
    a.label("out").mov64_imm(0, 0).exit();
    auto p = d.prepare(a);
    ASSERT_EQ(p->interp_obj_calls.size(), 3u);
    EXPECT_EQ(p->interp_obj_calls[2].domain, &d.dom);
    EXPECT_EQ(head_of(*p, 2), static_cast<int>(head));
    const RunOutcome o = run(*p);
    ASSERT_FALSE(o.ok);
    EXPECT_EQ(o.error.code, EINVAL) << o.error.message;
    EXPECT_EQ(o.fault.pc, call);
    EXPECT_NE(o.fault.what.find("not an object"), std::string::npos) << o.fault.what;
  }
  {
    ObjDomain d;
    Asm a;
    d.obj_new(a);
    a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
    d.obj_drop(a, 6);
    const size_t second = d.obj_drop(a, 6);
    a.label("out").mov64_imm(0, 0).exit();
    auto p = d.prepare(a);
    const uint64_t base = d.in_use();
    const RunOutcome o = run(*p);
    ASSERT_FALSE(o.ok);
    EXPECT_EQ(o.error.code, EINVAL) << o.error.message;
    EXPECT_EQ(o.fault.pc, second);
    EXPECT_NE(o.fault.what.find("does not own"), std::string::npos) << o.fault.what;
    EXPECT_EQ(g_slow_drop, 1u);  // the second only: the first took the inline path
    EXPECT_EQ(d.in_use(), base);
  }
}

// bpf_obj_drop(NULL) is nothing, also once the run's memo has unused
// (zero) entries and its slot is known.
TEST_F(InterpObjCall, DropOfNullIsNothing) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out");
  d.obj_drop(a, 0);
  a.mov64_imm(6, 0);
  d.obj_drop(a, 6);
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  const uint64_t base = d.in_use();
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(d.in_use(), base);
}

// A run that returns holding an object (here one from the inline path) is
// refused and the object dropped.
TEST_F(InterpObjCall, ReturningHoldingAnObjectIsRefused) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out");
  d.obj_drop(a, 6);
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  const uint64_t base = d.in_use();
  const RunOutcome o = run(*p);
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EINVAL) << o.error.message;
  EXPECT_EQ(o.fault.pc, vm::interp::kNoFaultPc);
  EXPECT_NE(o.fault.what.find("holding 1 object"), std::string::npos) << o.fault.what;
  EXPECT_EQ(g_slow_new, 1u);  // the second new took the inline path
  EXPECT_EQ(g_slow_drop, 0u);
  EXPECT_EQ(d.in_use(), base);
}

// ---- the facts: objects the run holds (interp_form.cc find_obj_facts) -------

// Whether the access at pc of p runs unchecked (expect_unchanged_but_heads
// says any change of a load or store is to its obj_access_code).
bool unchecked(const vm::Program& p, size_t pc) {
  return p.interp_insns[pc].code != p.exec_insns[pc].code;
}

// Accesses the facts prove inside a fresh 16-byte object run unchecked:
// after the null test, through copies and constant adds, loads and stores
// of every size. Not before the null test, nothing past either end (the
// state word just before the data included), nothing after the register
// is otherwise written, no atomics.
TEST_F(InterpObjCall, FactsProveAccessesInsideAFreshObject) {
  ObjDomain d;
  Asm a;
  std::vector<std::pair<size_t, bool>> want;  // pc, unchecked
  auto at = [&](bool u) -> Asm& {
    want.emplace_back(a.pc(), u);
    return a;
  };
  d.obj_new(a);
  at(false).ldx(kSizeB, 3, 0, 0);  // r0 may be null
  a.jmp_imm(kJmpJeq, 0, 0, "out");
  at(true).st(kSizeDw, 0, 0, 1);
  at(true).st(kSizeDw, 0, 8, 1);
  at(false).st(kSizeDw, 0, 9, 1);   // one byte past the end
  at(false).st(kSizeDw, 0, -8, 1);  // the state word
  at(false).st(kSizeB, 0, -1, 1);
  at(true).stx(kSizeB, 0, 6, 15);
  at(false).stx(kSizeH, 0, 6, 15);
  at(true).stx(kSizeW, 0, 6, 4);
  at(true).ldx(kSizeW, 3, 0, 12);
  at(true).ldx(kSizeH, 3, 0, 2);
  at(true).ldxsx(kSizeH, 3, 0, 14);
  at(true).ldxsx(kSizeB, 3, 0, 15);
  at(true).ldxsx(kSizeW, 3, 0, 0);
  at(false).ldxsx(kSizeW, 3, 0, 13);
  a.mov64_reg(7, 0).alu64_imm(kAluAdd, 7, 8);
  at(true).ldx(kSizeDw, 3, 7, 0);
  at(true).ldx(kSizeDw, 3, 7, -8);
  at(false).ldx(kSizeDw, 3, 7, 8);
  at(false).ldx(kSizeB, 3, 7, -9);
  a.alu64_imm(kAluSub, 7, 8);
  at(true).st(kSizeH, 7, 14, 1);
  a.alu64_imm(kAluMul, 7, 1);  // any other operation: a number now
  at(false).st(kSizeB, 7, 0, 1);
  a.mov64_reg(8, 0).alu32_imm(kAluAdd, 8, 0);  // so is a 32-bit add
  at(false).st(kSizeB, 8, 0, 1);
  at(false).atomic(kSizeDw, kAtomicAdd, 0, 6, 0);  // atomics keep their checks
  d.obj_drop(a, 0);
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  for (const auto& [pc, u] : want) EXPECT_EQ(unchecked(*p, pc), u) << "pc " << pc;
  expect_unchanged_but_heads(*p);
}

// Facts die where another path may join (a jump target), at any call (a
// callee could drop or publish the object) and after an exit; an object
// they no longer follow keeps its checks, and its new and drop the
// general paths.
TEST_F(InterpObjCall, FactsEndAtJumpTargetsCallsAndExits) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
  const size_t before_target = a.pc();
  a.st(kSizeDw, 6, 0, 1);
  a.jmp_imm(kJmpJeq, 9, 1, "target").label("target");
  const size_t after_target = a.pc();
  a.st(kSizeDw, 6, 0, 1);
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "drop6").mov64_reg(7, 0);
  const size_t before_call = a.pc();
  a.st(kSizeDw, 7, 0, 1);
  a.mov64_imm(1, 0).mov64_imm(2, 0).mov64_imm(3, 0).mov64_imm(4, 0).mov64_imm(5, 0);
  a.call_helper(kHelperSum5);
  const size_t after_call = a.pc();
  a.st(kSizeDw, 7, 0, 1);
  d.obj_drop(a, 7);
  a.label("drop6");
  d.obj_drop(a, 6);
  a.label("out").mov64_imm(0, 0).exit();
  // Code after an exit is reached by a jump only (here: none, so it is
  // dead, but its facts must start empty all the same).
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out2");
  a.exit();
  const size_t after_exit = a.pc();
  a.st(kSizeDw, 0, 0, 1);
  a.label("out2").exit();
  auto p = d.prepare(a);
  EXPECT_TRUE(unchecked(*p, before_target));
  EXPECT_FALSE(unchecked(*p, after_target));
  EXPECT_TRUE(unchecked(*p, before_call));
  EXPECT_FALSE(unchecked(*p, after_call));
  EXPECT_FALSE(unchecked(*p, after_exit));
  ASSERT_EQ(p->interp_obj_calls.size(), 5u);
  for (size_t i = 0; i < 4; i++) {
    const uint8_t code = p->interp_insns[head_of(*p, i)].code;
    EXPECT_TRUE(code == vm::kExecObjNew || code == vm::kExecObjDrop) << "entry " << i;
  }
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 0u);
  EXPECT_EQ(g_slow_drop, 0u);  // the general inline drops (the memo)
}

// A known drop's entry: the object's size, class, state words and lists;
// its new needs no memo. A drop of what may be null (no null test), with
// a null branch after it, or that must clobber a register read later,
// stays general.
TEST_F(InterpObjCall, KnownDropHasTheObjectsClass) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
  d.obj_drop(a, 6);
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  ASSERT_EQ(p->interp_obj_calls.size(), 2u);
  EXPECT_EQ(p->interp_insns[head_of(*p, 0)].code, vm::kExecObjNewKnown);
  EXPECT_EQ(p->interp_insns[head_of(*p, 1)].code, vm::kExecObjDropKnown);
  const vm::InterpObjCall& drop = p->interp_obj_calls[1];
  EXPECT_EQ(drop.size, static_cast<uint32_t>(ObjDomain::kSize));
  EXPECT_EQ(drop.cls, static_cast<uint32_t>(maps::obj_class(ObjDomain::kSize)));
  EXPECT_EQ(drop.owned, maps::obj_owned_state(d.dom, ObjDomain::kSize));
  EXPECT_EQ(drop.freed, maps::obj_free_state(d.dom, ObjDomain::kSize));
  EXPECT_EQ(drop.lists.class_word, d.dom.global_ma.class_word(drop.cls));
  EXPECT_EQ(drop.lists.class_word, p->interp_obj_calls[0].lists.class_word);
  EXPECT_EQ(drop.lists.base, p->interp_obj_calls[0].lists.base);
  EXPECT_EQ(int{drop.arg_reg[0]}, 6);
  expect_unchanged_but_heads(*p);

  Asm b;  // the drop's r0 tested after it (nothing a compiler emits, but valid)
  d.obj_new(b);
  b.jmp_imm(kJmpJeq, 0, 0, "out");
  d.obj_drop(b, 0);
  b.jmp_imm(kJmpJeq, 0, 0, "out");
  b.label("out").mov64_imm(0, 0).exit();
  auto q = d.prepare(b);
  EXPECT_EQ(q->interp_insns[head_of(*q, 1)].code, vm::kExecObjDrop);
  const RunOutcome o = run(*q);
  ASSERT_TRUE(o.ok) << o.error.message;

  Asm m;  // no null test: the drop may get null (it stays general, and drops nothing)
  d.obj_new(m);
  d.obj_drop(m, 0);
  m.mov64_imm(0, 0).exit();
  auto pm = d.prepare(m);
  EXPECT_EQ(pm->interp_insns[head_of(*pm, 1)].code, vm::kExecObjDrop);
  const RunOutcome om = run(*pm);
  ASSERT_TRUE(om.ok) << om.error.message;

  Asm c;  // r3 read after the drop: the drop clobbers it, so does its new's
  d.obj_new(c);
  c.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0).mov64_reg(3, 6);
  d.obj_drop(c, 6);
  c.mov64_reg(0, 3).exit();
  c.label("out").mov64_imm(0, 0).exit();
  auto r = d.prepare(c);
  EXPECT_EQ(r->interp_insns[head_of(*r, 0)].code, vm::kExecObjNew);
  EXPECT_EQ(r->interp_insns[head_of(*r, 1)].code, vm::kExecObjDrop);
  const RunOutcome oc = run(*r);
  ASSERT_TRUE(oc.ok) << oc.error.message;
  EXPECT_EQ(oc.r0, vm::interp::kClobberedReg);
}

// Unchecked accesses read and write the object exactly as checked ones
// would: every size, sign extension, and the values seen again through
// checked loads (after a jump target) and by the next object that reuses
// the memory (zeroed by its new).
TEST_F(InterpObjCall, UncheckedAccessesActOnTheObject) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(6, 0);
  a.ld_imm64(3, 0x8877665544332211ull).stx(kSizeDw, 6, 3, 0);
  a.st(kSizeW, 6, 8, -2).st(kSizeH, 6, 12, 0x7ffe).st(kSizeB, 6, 14, 0x80);
  a.mov64_imm(3, 0x1ff).stx(kSizeB, 6, 3, 15);
  a.ldxsx(kSizeB, 7, 6, 14);                            // -128
  a.ldxsx(kSizeW, 8, 6, 8);                             // -2
  a.ldx(kSizeH, 9, 6, 0);                               // 0x2211
  a.alu64_reg(kAluAdd, 7, 8).alu64_reg(kAluAdd, 7, 9);  // 0x2211 - 130
  a.jmp_imm(kJmpJne, 9, 0, "checked").label("checked");
  a.ldx(kSizeDw, 8, 6, 8);  // checked: 0xff80'7ffe'ffff'fffe
  a.ld_imm64(3, 0xff807ffefffffffeull).jmp_reg(kJmpJne, 8, 3, "fail");
  d.obj_drop(a, 6);
  d.obj_new(a);  // the same memory again (the slot's list is LIFO), zeroed
  a.jmp_imm(kJmpJeq, 0, 0, "fail");
  a.ldx(kSizeDw, 8, 0, 0).ldx(kSizeDw, 4, 0, 8).alu64_reg(kAluOr, 8, 4);
  a.mov64_reg(9, 0);
  d.obj_drop(a, 0);
  a.jmp_imm(kJmpJne, 8, 0, "fail").jmp_reg(kJmpJne, 9, 6, "fail");
  a.mov64_reg(0, 7).exit();
  a.label("fail").mov64_imm(0, -1).exit();
  auto p = d.prepare(a);
  size_t n_unchecked = 0;
  for (size_t pc = 0; pc < p->exec_insns.size(); pc++)
    if (p->interp_insns[pc].code != p->exec_insns[pc].code &&
        p->interp_insns[pc].code == vm::obj_access_code(p->exec_insns[pc].code))
      n_unchecked++;
  EXPECT_EQ(n_unchecked, 10u);
  const uint64_t base = d.in_use();
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, uint64_t{0x2211 - 130});
  EXPECT_EQ(d.in_use(), base);
}

// A known drop keeps its object for the run's next known new of its class
// (run_frames' kept object): that new gets it back (the object the slot's
// LIFO list would give), a new of another class does not, and the next
// known drop first puts the kept one back on its list. Nothing is lost: the
// end of the run gives the last one back.
TEST_F(InterpObjCall, KnownDropKeepsItsObjectForItsClass) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);  // A
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(6, 0);
  d.obj_drop(a, 6);  // A kept
  d.obj_new_big(a);  // B: another class, not A
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(7, 0);
  a.st(kSizeDw, 7, ObjDomain::kBigSize - 8, -1);  // B's last word
  d.obj_drop(a, 7);                               // A back on its list, B kept
  d.obj_new(a);                                   // A again
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(8, 0);
  d.obj_drop(a, 8);  // B back on its list, A kept
  d.obj_new_big(a);  // B again, zeroed
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(9, 0);
  a.ldx(kSizeDw, 3, 9, ObjDomain::kBigSize - 8).jmp_imm(kJmpJne, 3, 0, "fail");
  d.obj_drop(a, 9);  // A back, B kept until the run ends
  a.jmp_reg(kJmpJeq, 7, 6, "fail").jmp_reg(kJmpJne, 8, 6, "fail");
  a.jmp_reg(kJmpJne, 9, 7, "fail");
  a.mov64_imm(0, 1).exit();
  a.label("fail").mov64_imm(0, -1).exit();
  auto p = d.prepare(a);
  ASSERT_EQ(p->interp_obj_calls.size(), 8u);
  for (int i = 0; i < 8; i += 2) {
    EXPECT_EQ(p->interp_insns[head_of(*p, i)].code, vm::kExecObjNewKnown) << i;
    EXPECT_EQ(p->interp_insns[head_of(*p, i + 1)].code, vm::kExecObjDropKnown) << i;
  }
  EXPECT_NE(p->interp_obj_calls[0].lists.base, p->interp_obj_calls[2].lists.base);
  const uint64_t base = d.in_use();
  for (int run_no = 0; run_no < 2; run_no++) {  // each run starts with nothing kept
    SCOPED_TRACE(run_no);
    const RunOutcome o = run(*p);
    ASSERT_TRUE(o.ok) << o.error.message;
    EXPECT_EQ(o.r0, 1u);
    EXPECT_EQ(g_slow_drop, 0u);  // every drop inline
    EXPECT_EQ(d.in_use(), base);
  }
}

// A callback run by a helper keeps objects of its own: its news do not take
// the object its caller's drop kept (that one is the caller's until the
// caller's next new), and its kept object goes back when it returns.
TEST_F(InterpObjCall, CallbacksKeepTheirOwnObjects) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);  // A
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(6, 0);
  d.obj_drop(a, 6);  // A kept by this frame
  a.mov64_imm(1, 3).ld_func(2, "cb").mov64_imm(3, 0).call_helper(kHelperLoop);
  a.mov64_reg(7, 0);  // the sum of the callbacks' objects
  d.obj_new(a);       // A again
  a.jmp_imm(kJmpJeq, 0, 0, "fail").mov64_reg(8, 0);
  d.obj_drop(a, 8);
  a.jmp_reg(kJmpJne, 8, 6, "fail");
  a.mov64_reg(1, 6).alu64_imm(kAluMul, 1, 3).jmp_reg(kJmpJeq, 7, 1, "fail");
  a.mov64_imm(0, 1).exit();
  a.label("fail").mov64_imm(0, -1).exit();
  a.label("cb");  // a new and a drop; r0 = the object's address
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "cb_out").mov64_reg(6, 0);
  d.obj_drop(a, 6);
  a.mov64_reg(0, 6);
  a.label("cb_out");
  // A function's r1-r5 are live at its exit (its caller may read them):
  // cleared here, so the calls clobber nothing and are known.
  for (uint8_t r = 1; r <= 5; r++) a.mov64_imm(r, 0);
  a.exit();
  auto p = d.prepare(a);
  for (int i = 0; i < 6; i++) {
    EXPECT_EQ(p->interp_insns[head_of(*p, i)].code,
              i % 2 ? vm::kExecObjDropKnown : vm::kExecObjNewKnown)
        << i;
  }
  const uint64_t base = d.in_use();
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 1u);
  EXPECT_EQ(d.in_use(), base);
}

// A run that stops after a known drop kept its object gives it back too.
TEST_F(InterpObjCall, KeptObjectGoesBackWhenTheRunFaults) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out").mov64_reg(6, 0);
  d.obj_drop(a, 6);  // kept
  a.mov64_imm(3, 0);
  const size_t bad = a.pc();
  a.st(kSizeDw, 3, 8, 1);  // a null pointer store: the run faults
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  EXPECT_EQ(p->interp_insns[head_of(*p, 1)].code, vm::kExecObjDropKnown);
  const uint64_t base = d.in_use();
  const RunOutcome o = run(*p);
  expect_efault_at(o, bad);
  EXPECT_EQ(d.in_use(), base);
}

// The facts take the object's size from what the code shows: r1 the
// proto's ret_size on the straight path to the call. A new whose r1 may be
// something else (the call a jump target, or r1 another constant: not what
// the loader emits, but a valid program) makes no fact, and an access past
// the real object's end faults instead of running unchecked.
TEST_F(InterpObjCall, FactsNeedTheSizeInR1) {
  for (bool jump : {true, false}) {
    SCOPED_TRACE(jump ? "call reached by a jump with r1 = 8" : "r1 = 8 right before the call");
    ObjDomain d;
    Asm a;
    if (jump) {
      a.mov64_imm(6, 0).jmp_imm(kJmpJeq, 6, 0, "small");  // taken
      a.mov64_imm(1, ObjDomain::kSize).ld_imm64(2, d.addr()).ja("call");
      a.label("small");
    }
    a.mov64_imm(1, 8).ld_imm64(2, d.addr());
    a.label("call").call_kfunc(kKfObjNew);
    a.jmp_imm(kJmpJeq, 0, 0, "out");
    const size_t store = a.pc();
    a.st(kSizeDw, 0, 8, 1);
    d.obj_drop(a, 0);
    a.label("out").mov64_imm(0, 0).exit();
    auto p = d.prepare(a);
    EXPECT_FALSE(unchecked(*p, store));
    const RunOutcome o = run(*p);
    expect_efault_at(o, store);
  }
}

// The state word before an object's data is never the program's: a store
// there faults, whatever the facts know (its check stays).
TEST_F(InterpObjCall, StateWordStoreFaults) {
  ObjDomain d;
  Asm a;
  d.obj_new(a);
  a.jmp_imm(kJmpJeq, 0, 0, "out");
  const size_t store = a.pc();
  a.st(kSizeDw, 0, -8, 0);
  d.obj_drop(a, 0);
  a.label("out").mov64_imm(0, 0).exit();
  auto p = d.prepare(a);
  const RunOutcome o = run(*p);
  expect_efault_at(o, store);
}

// ---- which argument registers a fused call clobbers --------------------------

// The call writes kClobberedReg only into the r1-r5 some path after it reads
// before writing (bits 1-5 of clobber): none when all are written first or
// never read; what a later instruction, call argument or branch reads; all
// when a subprogram returns (its caller may read them).
TEST(InterpForm, ClobbersOnlyTheArgumentRegistersReadLater) {
  constexpr uint8_t kAll = 0x3e;
  const auto bit = [](int r) { return static_cast<uint8_t>(1u << r); };
  const struct {
    const char* what;
    std::function<void(Asm&)> after;  // after `call new` (fused on itself)
    uint8_t want;
  } cases[] = {
      {"all written, then exit",
       [](Asm& a) {
         for (uint8_t r = 1; r <= 5; r++) a.mov64_imm(r, 0);
         a.exit();
       },
       0},
      {"none read before the program's exit", [](Asm& a) { a.exit(); }, 0},
      {"r3 read", [](Asm& a) { a.mov64_reg(0, 3).exit(); }, bit(3)},
      {"r4 read on one branch only",
       [](Asm& a) {
         a.jmp_imm(kJmpJeq, 0, 0, "write").alu64_reg(kAluAdd, 0, 4).exit();
         a.label("write").mov64_imm(4, 1).mov64_reg(0, 4).exit();
       },
       bit(4)},
      {"the next call's arguments: r1 set first, r2 read",
       [](Asm& a) { a.mov64_reg(1, 0).call_kfunc(kKfPlain).exit(); }, bit(2)},
      {"a store through r5", [](Asm& a) { a.stx(kSizeDw, 10, 5, -8).exit(); }, bit(5)},
      {"r2 read at the loop head",
       [](Asm& a) {
         a.label("head").alu64_reg(kAluAdd, 0, 2).alu64_imm(kAluAdd, 6, 1);
         a.jmp_imm(kJmpJlt, 6, 3, "head").exit();
       },
       bit(2)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Asm a;
    a.mov64_imm(6, 0).call_kfunc(kKfNew);
    c.after(a);
    auto p = prepare(a);
    EXPECT_EQ(int{only_call(*p).clobber}, int{c.want});
  }
  // In a subprogram, its exit leaves r1-r5 to the caller: all are live.
  Asm a;
  a.call_local("sub").exit();
  a.label("sub").call_kfunc(kKfNew).exit();
  auto p = prepare(a);
  EXPECT_EQ(int{only_call(*p).clobber}, int{kAll});
}

// ---- `add K` fused with the jump after it ------------------------------------

// Which adds are fused: an immediate add (64- or 32-bit) right before a
// conditional jump (JMP or JMP32, K or X) or a JMP ja; no other pair.
TEST(InterpForm, AddKFusesWithTheJumpAfterIt) {
  Asm a;
  a.mov64_imm(0, 0)
      .mov64_imm(1, 0)
      .alu64_imm(kAluAdd, 1, 3)  // 2: + jgt K
      .jmp_imm(kJmpJgt, 1, 10, "out")
      .alu32_imm(kAluAdd, 2, 1)  // 4: + jlt X (JMP32)
      .jmp32_reg(kJmpJlt, 2, 1, "out")
      .alu64_imm(kAluAdd, 3, 1)  // 6: + ja
      .ja("next")
      .label("next")
      .alu64_reg(kAluAdd, 4, 1)  // 8: add X: not fused
      .jmp_imm(kJmpJeq, 4, 0, "out")
      .alu64_imm(kAluSub, 5, 1)  // 10: sub: not fused
      .jmp_imm(kJmpJeq, 5, 0, "out")
      .alu64_imm(kAluAdd, 6, 1)  // 12: + mov: not fused
      .mov64_imm(7, 0)
      .alu32_imm(kAluAdd, 8, 1)  // 14: + gotol (JMP32 ja): not fused
      .gotol("out")
      .label("out")
      .exit();
  auto p = prepare(a);
  const auto code = [&](size_t pc) { return int{p->interp_insns[pc].code}; };
  EXPECT_EQ(code(2), vm::fused_add_jump_code(false, kClassJmp | kSrcK | kJmpJgt));
  EXPECT_EQ(code(4), vm::fused_add_jump_code(true, kClassJmp32 | kSrcX | kJmpJlt));
  EXPECT_EQ(code(6), vm::fused_add_jump_code(false, kClassJmp | kJmpJa));
  for (size_t pc : {8u, 10u, 12u, 14u})
    EXPECT_EQ(code(pc), int{p->exec_insns[pc].code}) << "pc " << pc;
  // The fused codes are distinct and not opcodes of the ISA or of the
  // executable form.
  std::vector<int> seen;
  for (bool alu32 : {false, true}) {
    for (uint8_t cls : {kClassJmp, kClassJmp32})
      for (uint8_t op : {kJmpJeq, kJmpJgt, kJmpJge, kJmpJset, kJmpJne, kJmpJsgt, kJmpJsge, kJmpJlt,
                         kJmpJle, kJmpJslt, kJmpJsle})
        for (uint8_t src : {kSrcK, kSrcX})
          seen.push_back(vm::fused_add_jump_code(alu32, cls | op | src));
    seen.push_back(vm::fused_add_jump_code(alu32, kClassJmp | kJmpJa));
  }
  for (int c : seen) {
    EXPECT_NE(c, 0);
    EXPECT_EQ(opcode_info(static_cast<uint8_t>(c)).kind, OpKind::kInvalid) << c;
    EXPECT_FALSE(vm::fused_detail::is_exec_code(static_cast<uint8_t>(c))) << c;
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());
  expect_unchanged_but_heads(*p);
}

// A loop whose entry jumps straight onto the test (the fused add's jump):
// the jump runs alone there and fused on later passes, with the same
// result and the same budget (each taken backward jump charges its
// distance, 3).
TEST(InterpForm, JumpOntoTheFusedJumpRunsItAlone) {
  Asm a;
  a.mov64_imm(0, 0)
      .mov64_imm(1, 0)
      .ja("test")
      .label("loop")
      .alu64_imm(kAluAdd, 0, 1)
      .alu64_imm(kAluAdd, 1, 1)
      .label("test")
      .jmp_imm(kJmpJlt, 1, 5, "loop")
      .exit();
  auto p = prepare(a);
  ASSERT_NE(p->interp_insns[4].code, p->exec_insns[4].code);  // fused
  const RunOutcome o = run(*p);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 5u);
  EXPECT_EQ(o.budget_left, kBudget - 5 * 3);
  // A budget one short stops at the test, as unfused.
  const RunOutcome short_run = run(*p, nullptr, 0, 14);
  ASSERT_FALSE(short_run.ok);
  EXPECT_EQ(short_run.error.code, ELOOP);
  EXPECT_EQ(short_run.fault.pc, 5u);
}

}  // namespace
}  // namespace userbpf::test
