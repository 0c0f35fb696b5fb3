// Inlined array map lookups (bpf_map_lookup_elem of a constant ARRAY map):
// the JIT must behave exactly like the interpreter's helper call, values,
// NULL results, key checks, write permission and region grants included.
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>

#include "isa/opcodes.h"
#include "jit_test_util.h"
#include "maps/registry.h"
#include "vm/interp_state.h"

namespace userbpf::test {
namespace {

using namespace isa;

MapPtr make_array(uint32_t value_size, uint32_t max_entries, uint32_t flags = 0) {
  maps::MapAttr attr;
  attr.type = static_cast<uint32_t>(maps::MapType::kARRAY);
  attr.key_size = 4;
  attr.value_size = value_size;
  attr.max_entries = max_entries;
  attr.map_flags = flags;
  Result<maps::Map*> m = maps::create_map(attr);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  return MapPtr(m.ok() ? m.value() : nullptr);
}

// Every value byte of an array map, in key order.
std::vector<uint8_t> contents(maps::Map* m) {
  std::vector<uint8_t> out;
  for (uint32_t k = 0; k < m->attr.max_entries; ++k) {
    const auto* v = static_cast<const uint8_t*>(m->ops->lookup_elem(m, &k));
    out.insert(out.end(), v, v + m->attr.value_size);
  }
  return out;
}

void clear(maps::Map* m) {
  for (uint32_t k = 0; k < m->attr.max_entries; ++k) {
    std::memset(m->ops->lookup_elem(m, &k), 0, m->attr.value_size);
  }
}

// Runs a on both engines from cleared maps; results, errors and the maps'
// contents afterwards must be identical (fault addresses only if exact_addr:
// the engines' stacks live at different addresses). Returns the JIT's run.
EngineRun same_on_both(const Asm& a, const std::vector<maps::Map*>& ms, bool exact_addr = true) {
  TestProg t(a, ms);
  EXPECT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  for (maps::Map* m : ms) clear(m);
  EngineRun i = run_engine(t.prog, false, {});
  std::vector<std::vector<uint8_t>> after_i;
  for (maps::Map* m : ms) after_i.push_back(contents(m));
  for (maps::Map* m : ms) clear(m);
  EngineRun j = run_engine(t.prog, true, {});
  EXPECT_NE(t.prog.jit.load(), nullptr);
  EXPECT_EQ(i.ok, j.ok) << "interp: " << i.message << "\njit: " << j.message;
  EXPECT_EQ(i.r0, j.r0);
  EXPECT_EQ(i.err, j.err);
  if (exact_addr) {
    EXPECT_EQ(i.message, j.message);
    EXPECT_EQ(i.fault.addr, j.fault.addr);
  } else {
    EXPECT_EQ(i.message.substr(0, i.message.rfind(" at ")),
              j.message.substr(0, j.message.rfind(" at ")));
  }
  EXPECT_EQ(i.fault.pc, j.fault.pc);
  EXPECT_EQ(i.budget_left, j.budget_left);
  for (size_t k = 0; k < ms.size(); ++k) EXPECT_EQ(after_i[k], contents(ms[k])) << "map " << k;
  return j;
}

// for (key = 0; key < n; key++) { v = lookup(map, &key); if (v) { *v += key;
// r6 += *v } else r6 += 1000 }; return r6
Asm counting_loop(int32_t n, int16_t value_off = 0) {
  Asm a;
  a.mov64_imm(6, 0).st(kSizeW, 10, -4, 0);
  a.label("loop").ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
  a.jmp_imm(kJmpJeq, 0, 0, "null");
  a.ldx(kSizeW, 3, 10, -4).ldx(kSizeDw, 4, 0, value_off).alu64_reg(kAluAdd, 4, 3);
  a.stx(kSizeDw, 0, 4, value_off).alu64_reg(kAluAdd, 6, 4).ja("next");
  a.label("null").alu64_imm(kAluAdd, 6, 1000);
  a.label("next").ldx(kSizeW, 3, 10, -4).alu64_imm(kAluAdd, 3, 1).stx(kSizeW, 10, 3, -4);
  a.jmp_imm(kJmpJlt, 3, n, "loop");
  a.mov64_reg(0, 6).exit();
  return a;
}

TEST(JitInlineLookup, ValuesAndOutOfRangeKeysMatchTheInterpreter) {
  MapPtr m = make_array(8, 10);
  EngineRun j = same_on_both(counting_loop(13), {m.get()});
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 45u + 3 * 1000);  // keys 10..12 have no value
}

TEST(JitInlineLookup, PaddedValuesStopAtValueSize) {
  MapPtr m = make_array(12, 4);  // elements of 16 bytes, values of 12
  Asm ok = counting_loop(4, 4);  // 8 bytes at offset 4: inside
  EXPECT_TRUE(same_on_both(ok, {m.get()}).ok);
  Asm bad = counting_loop(4, 8);  // 8 bytes at offset 8: into the padding
  EngineRun j = same_on_both(bad, {m.get()});
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);
}

// Accesses through a looked-up value go unchecked only when proven inside
// the value (emit_facts.cc); anything else takes the checked path and must
// give the interpreter's answer.
TEST(JitInlineLookup, ProvenValueAccessesOnlyInsideTheValue) {
  MapPtr m = make_array(8, 3);
  // key k, then r0 += 8: [value + 8, +8) is the next element for k < 2
  // (map memory: allowed) and past the array for k == 2 (fault).
  for (int32_t key : {0, 2}) {
    Asm a;
    a.st(kSizeW, 10, -4, key).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
    a.call_helper(1).jmp_imm(kJmpJeq, 0, 0, "null");
    a.alu64_imm(kAluAdd, 0, 8).st(kSizeDw, 0, 0, 5).ldx(kSizeDw, 0, 0, 0).exit();
    a.label("null").mov64_imm(0, 99).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_EQ(j.ok, key == 0) << j.message;
  }
  // No null check: an out-of-range key's NULL is dereferenced (fault).
  Asm b;
  b.st(kSizeW, 10, -4, 7).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  b.call_helper(1).ldx(kSizeDw, 0, 0, 0).exit();
  EngineRun j = same_on_both(b, {m.get()});
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);
  // A copy kept across a call (r6) stays a value; a negative offset does not.
  Asm c;
  c.st(kSizeW, 10, -4, 1).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  c.call_helper(1).jmp_imm(kJmpJeq, 0, 0, "null").mov64_reg(6, 0);
  c.st(kSizeW, 10, -4, 0).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
  c.st(kSizeDw, 6, 0, 11).ldx(kSizeDw, 0, 6, -8).exit();  // the previous element: allowed
  c.label("null").mov64_imm(0, 99).exit();
  j = same_on_both(c, {m.get()});
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 0u);
}

// Pointers derived from r10 are checked statically only inside the frame.
TEST(JitInlineLookup, ProvenStackAccessesOnlyInsideTheFrame) {
  Asm a;
  a.mov64_reg(3, 10).alu64_imm(kAluAdd, 3, -16).st(kSizeDw, 3, 8, 5).ldx(kSizeDw, 0, 10, -8);
  a.exit();
  EngineRun j = same_on_both(a, {});
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 5u);
  for (int32_t off : {-520, 0}) {  // below the frame chain, above the stack
    Asm b;
    b.mov64_reg(3, 10).alu64_imm(kAluAdd, 3, off).ldx(kSizeDw, 0, 3, 0).exit();
    EngineRun k = same_on_both(b, {}, false);
    EXPECT_FALSE(k.ok);
    EXPECT_EQ(k.err, EFAULT);
  }
}

TEST(JitInlineLookup, ReadOnlyMapsRejectWritesFrozenOnesDoNot) {
  MapPtr ro = make_array(8, 4, maps::kBpfFRdonlyProg);
  EngineRun j = same_on_both(counting_loop(4), {ro.get()});
  EXPECT_FALSE(j.ok);
  EXPECT_NE(j.message.find("read-only"), std::string::npos) << j.message;
  MapPtr fr = make_array(8, 4);
  fr->frozen.store(true);  // freezing only blocks the host (BPF_MAP_FREEZE)
  j = same_on_both(counting_loop(4), {fr.get()});
  EXPECT_TRUE(j.ok) << j.message;
  MapPtr plain = make_array(8, 4);
  EXPECT_EQ(j.r0, same_on_both(counting_loop(4), {plain.get()}).r0);  // same stores
}

TEST(JitInlineLookup, KeyOutsideTheStackTakesTheCheckedPath) {
  MapPtr m = make_array(8, 4);
  // Key read from a map value (index 0's value, which holds 0): allowed.
  Asm a;
  a.st(kSizeW, 10, -4, 2).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
  a.jmp_imm(kJmpJeq, 0, 0, "out").st(kSizeDw, 0, 0, 77);
  a.ld_map(1, 0).mov64_reg(2, 0).call_helper(1);  // key = 77 (low half): out of range
  a.jmp_imm(kJmpJne, 0, 0, "out").mov64_imm(0, 5).exit();
  a.label("out").mov64_imm(0, 9).exit();
  EXPECT_EQ(same_on_both(a, {m.get()}).r0, 5u);
  // A wild key pointer faults with the helper argument message.
  Asm b;
  b.ld_map(1, 0).mov64_imm(2, 0x1000).call_helper(1).exit();
  EngineRun j = same_on_both(b, {m.get()});
  EXPECT_FALSE(j.ok);
  EXPECT_NE(j.message.find("arg2"), std::string::npos) << j.message;
  // A key at the top of the frame chain that runs past it faults too.
  Asm c;
  c.ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -2).call_helper(1).exit();
  j = same_on_both(c, {m.get()}, /*exact_addr=*/false);
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);
}

// Array values take no grant slot on either engine (interp::remember_value):
// lookups in a loop never push out kHelperScratch's grant, so the store
// through it still works after any number of them; hash values do push it
// out (jit_map_grant_test.cc).
TEST(JitInlineLookup, ArrayValuesTakeNoGrantSlot) {
  MapPtr m = make_array(8, 40);
  for (int32_t lookups : {15, 16, 40}) {
    Asm a;
    a.call_helper(kHelperScratch).mov64_reg(7, 0).st(kSizeW, 10, -4, 0);
    a.label("loop").ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
    a.ldx(kSizeW, 3, 10, -4).alu64_imm(kAluAdd, 3, 1).stx(kSizeW, 10, 3, -4);
    a.jmp_imm(kJmpJlt, 3, lookups, "loop");
    a.st(kSizeDw, 7, 0, 1).mov64_imm(0, 1).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_TRUE(j.ok) << lookups << ": " << j.message;
  }
}

// A value the facts stop following (a jump target in between, a copy
// through the stack, a helper argument, 32-bit arithmetic, an atomic) is
// still reachable through the region checks, on both engines: the JIT
// caches it at the lookup, and the slow path finds array values by itself.
TEST(JitInlineLookup, ValuesTheFactsLoseStayAccessible) {
  MapPtr m = make_array(16, 4);
  auto lookup = [](Asm& a, int32_t key) {
    a.st(kSizeW, 10, -4, key).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
    a.call_helper(1).jmp_imm(kJmpJeq, 0, 0, "null");
  };
  {  // a join: r6 is used after a jump target
    Asm a;
    lookup(a, 1);
    a.mov64_reg(6, 0).mov64_imm(7, 0).jmp_imm(kJmpJeq, 7, 0, "join").mov64_imm(7, 1);
    a.label("join").st(kSizeDw, 6, 8, 21).ldx(kSizeDw, 0, 6, 8).alu64_reg(kAluAdd, 0, 7).exit();
    a.label("null").mov64_imm(0, 99).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_TRUE(j.ok) << j.message;
    EXPECT_EQ(j.r0, 21u);
  }
  {  // spilled to the stack and reloaded, then past the value: a fault
    for (int16_t off : {8, 16}) {
      Asm a;
      lookup(a, 3);
      a.stx(kSizeDw, 10, 0, -16).ldx(kSizeDw, 6, 10, -16).st(kSizeDw, 6, off, 5);
      a.ldx(kSizeDw, 0, 6, off).exit();
      a.label("null").mov64_imm(0, 99).exit();
      EngineRun j = same_on_both(a, {m.get()});
      EXPECT_EQ(j.ok, off == 8) << j.message;
    }
  }
  {  // a helper argument (kHelperReadMem sums the value's bytes)
    Asm a;
    lookup(a, 2);
    a.st(kSizeDw, 0, 0, 0x0102).mov64_reg(1, 0).mov64_imm(2, 16).call_helper(kHelperReadMem).exit();
    a.label("null").mov64_imm(0, 99).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_TRUE(j.ok) << j.message;
    EXPECT_EQ(j.r0, 3u);
  }
  {  // an atomic add through the value, and a pointer rebuilt with ALU ops
    Asm a;
    lookup(a, 0);
    a.mov64_imm(1, 7).atomic(kSizeDw, kAtomicAdd, 0, 1, 0);
    a.mov64_reg(3, 0).alu64_imm(kAluXor, 3, 0).alu64_imm(kAluOr, 3, 0);
    a.ldx(kSizeDw, 0, 3, 0).exit();
    a.label("null").mov64_imm(0, 99).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_TRUE(j.ok) << j.message;
    EXPECT_EQ(j.r0, 7u);
  }
}

// `if r0 == 0` / `if r0 != 0` right after an inlined lookup branch from the
// lookup itself: both outcomes, forward and backward (charging the budget
// like the jump), and a jump target on the test keeps it a real test.
TEST(JitInlineLookup, NullTestAfterTheLookup) {
  MapPtr m = make_array(8, 6);
  for (uint8_t op : {kJmpJeq, kJmpJne}) {
    // for (k = 0; k < 10; k++) r6 += lookup(k) ? *v + 1 : 100
    Asm a;
    a.mov64_imm(6, 0).st(kSizeW, 10, -4, 0);
    a.label("loop").ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
    if (op == kJmpJeq) {
      a.jmp_imm(kJmpJeq, 0, 0, "null").ldx(kSizeDw, 3, 0, 0).alu64_imm(kAluAdd, 3, 1);
      a.alu64_reg(kAluAdd, 6, 3).ja("next");
      a.label("null").alu64_imm(kAluAdd, 6, 100);
    } else {
      a.jmp_imm(kJmpJne, 0, 0, "found").alu64_imm(kAluAdd, 6, 100).ja("next");
      a.label("found").ldx(kSizeDw, 3, 0, 0).alu64_imm(kAluAdd, 3, 1).alu64_reg(kAluAdd, 6, 3);
    }
    a.label("next").ldx(kSizeW, 3, 10, -4).alu64_imm(kAluAdd, 3, 1).stx(kSizeW, 10, 3, -4);
    a.jmp_imm(kJmpJlt, 3, 10, "loop").mov64_reg(0, 6).exit();
    EngineRun j = same_on_both(a, {m.get()});
    EXPECT_TRUE(j.ok) << j.message;
    EXPECT_EQ(j.r0, 6u + 4 * 100);
  }
  // Backward: `if r0 != 0 goto top` loops while keys are found; the budget
  // runs out inside the loop on both engines at the same instruction.
  for (uint64_t budget : {uint64_t{1} << 20, uint64_t{40}}) {
    Asm b;
    b.mov64_imm(6, 0).st(kSizeW, 10, -4, 0);
    b.label("top").ldx(kSizeW, 3, 10, -4).alu64_imm(kAluAdd, 3, 1).stx(kSizeW, 10, 3, -4);
    b.alu64_imm(kAluAdd, 6, 1).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
    b.call_helper(1).jmp_imm(kJmpJne, 0, 0, "top").mov64_reg(0, 6).exit();
    TestProg t(b, {m.get()});
    ASSERT_TRUE(t.prepared.ok());
    EngineRun j = expect_same(t.prog, {}, budget);
    EXPECT_EQ(j.ok, budget > 40) << j.message;
    if (j.ok) EXPECT_EQ(j.r0, 6u);  // keys 1..5 found, 6 is not
  }
  // A jump lands on the test: it must run as a test for that path too.
  Asm c;
  c.mov64_imm(0, 0).st(kSizeW, 10, -4, 2).jmp_imm(kJmpJeq, 0, 0, "test");
  c.ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
  c.label("test").jmp_imm(kJmpJeq, 0, 0, "null").mov64_imm(0, 1).exit();
  c.label("null").mov64_imm(0, 2).exit();
  EXPECT_EQ(same_on_both(c, {m.get()}).r0, 2u);
}

// Register writes the JIT drops because nothing reads them (emit_live.cc)
// must be exactly those no path reads: a subprogram's r1-r5 read by its
// caller after the call, the caller's r6-r9 and r0 read by a callee, r1-r5
// read after a lookup (clobbered), values read only on one branch.
TEST(JitInlineLookup, DroppedWritesAreNeverRead) {
  MapPtr m = make_array(8, 2);
  Asm a;
  a.mov64_imm(6, 3).mov64_imm(0, 4).call_local("sub");  // sub reads r0 and r6
  a.alu64_reg(kAluAdd, 0, 2);                           // and leaves r2
  a.mov64_imm(7, 5).mov64_imm(8, 6).jmp_imm(kJmpJgt, 0, 100, "big");
  a.alu64_reg(kAluAdd, 0, 7).exit();
  a.label("big").alu64_reg(kAluAdd, 0, 8).exit();
  a.label("sub").mov64_reg(2, 6).alu64_imm(kAluMul, 2, 10).alu64_reg(kAluAdd, 2, 0);
  a.st(kSizeW, 10, -4, 1).ld_map(1, 0).mov64_reg(3, 10).alu64_imm(kAluAdd, 3, -4);
  a.mov64_reg(4, 2).mov64_reg(2, 3).call_helper(1);
  a.mov64_reg(0, 4).alu64_imm(kAluRsh, 0, 60).mov64_reg(2, 0).mov64_imm(0, 0).exit();
  EngineRun j = same_on_both(a, {m.get()});
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, (vm::interp::kClobberedReg >> 60) + 5);
}

TEST(JitInlineLookup, MapChosenOnTwoPathsIsNotAssumed) {
  // r1 is one of two maps depending on a branch: a jump target sits between
  // each ld_imm64 and the call, so the call must use the map r1 really holds.
  MapPtr small = make_array(8, 2);
  MapPtr big = make_array(8, 8);
  for (int32_t pick : {0, 1}) {
    Asm a;
    a.st(kSizeW, 10, -4, 5).mov64_imm(6, pick).ld_map(1, 0);
    a.jmp_imm(kJmpJeq, 6, 0, "call").ld_map(1, 1);
    a.label("call").mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4).call_helper(1);
    a.jmp_imm(kJmpJeq, 0, 0, "null").mov64_imm(0, 1).exit();
    a.label("null").mov64_imm(0, 2).exit();
    EXPECT_EQ(same_on_both(a, {small.get(), big.get()}).r0, pick == 0 ? 2u : 1u);
  }
}

TEST(JitInlineLookup, ClobbersArgumentRegistersLikeACall) {
  MapPtr m = make_array(8, 2);
  Asm a;
  a.st(kSizeW, 10, -4, 0).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  a.call_helper(1).mov64_reg(0, 1).alu64_reg(kAluXor, 0, 2).alu64_reg(kAluAdd, 0, 5).exit();
  EXPECT_EQ(same_on_both(a, {m.get()}).r0, vm::interp::kClobberedReg);
}

// Global data (ld_imm64 of a map value) plus a register: the JIT checks only
// the register against the value's size (emit_facts.cc kValueIndexed), the
// full check runs whenever that quick test fails.
// for (i = 0; i < 64; i += 8) { p = &g[8] + i - 8; *(u64 *)p = i; *(u32 *)(p
// + 4) += 1; r6 += *(u64 *)p }; return r6
TEST(JitGlobalData, IndexedAccessesMatchTheInterpreter) {
  MapPtr g = make_array(64, 1);
  Asm a;
  a.mov64_imm(6, 0).mov64_imm(2, 0);
  a.label("loop").ld_map_value(1, 0, 8).alu64_reg(kAluAdd, 1, 2).alu64_imm(kAluAdd, 1, -8);
  a.stx(kSizeDw, 1, 2, 0).ldx(kSizeW, 3, 1, 4).alu64_imm(kAluAdd, 3, 1).stx(kSizeW, 1, 3, 4);
  a.ldx(kSizeDw, 4, 1, 0).alu64_reg(kAluAdd, 6, 4);
  a.alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJlt, 2, 64, "loop");
  a.mov64_reg(0, 6).exit();
  EngineRun j = same_on_both(a, {g.get()});
  EXPECT_TRUE(j.ok) << j.message;
  // Words 0..7 hold i with 1 in the upper half: sum of i + 8 * 2^32.
  EXPECT_EQ(j.r0, (0u + 8 + 16 + 24 + 32 + 40 + 48 + 56) + (uint64_t{8} << 32));
}

// The last index that fits, one past it, and a negative one (huge unsigned).
TEST(JitGlobalData, IndexOutsideTheValueFaultsLikeTheInterpreter) {
  MapPtr g = make_array(64, 1);
  for (int32_t idx : {56, 57, 64, -8, 4096}) {
    Asm a;
    a.mov64_imm(2, idx).ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2);
    a.st(kSizeDw, 1, 0, 5).ldx(kSizeDw, 0, 1, 0).exit();
    EngineRun j = same_on_both(a, {g.get()});
    if (idx == 56) {
      EXPECT_TRUE(j.ok) << j.message;
      EXPECT_EQ(j.r0, 5u);
    } else {
      EXPECT_FALSE(j.ok) << idx;
      EXPECT_EQ(j.err, EFAULT) << idx;
    }
  }
}

// The address was formed with an index far outside; the index register is
// then rewritten (an ALU write, a load, a call) to something small. The
// access must still be checked against the real address and fault.
TEST(JitGlobalData, RewrittenIndexRegisterDropsTheQuickCheck) {
  MapPtr g = make_array(64, 1);
  for (int variant = 0; variant < 3; ++variant) {
    Asm a;
    a.st(kSizeDw, 10, -8, 0).mov64_imm(6, 1 << 20).ld_map_value(7, 0, 0);
    a.alu64_reg(kAluAdd, 7, 6).mov64_reg(8, 7);  // the copy in r8 is indexed by r6 too
    if (variant == 0) a.mov64_imm(6, 0);
    if (variant == 1) a.ldx(kSizeDw, 6, 10, -8);
    if (variant == 2) a.mov64_imm(2, 1 << 20).mov64_reg(6, 2).mov64_imm(2, 0).mov64_reg(6, 2);
    a.ldx(kSizeDw, 0, 8, 0).exit();
    EngineRun j = same_on_both(a, {g.get()});
    EXPECT_FALSE(j.ok) << variant;
    EXPECT_EQ(j.err, EFAULT) << variant;
  }
}

// Indexes bounded by what computed them need no check at all; those whose
// bound is past the value keep it: a mask just too wide, a 64-bit byte swap
// (class ALU, yet 64 bits), a loaded byte against a smaller value.
TEST(JitGlobalData, BoundedIndexesMatchTheInterpreter) {
  MapPtr g = make_array(64, 1);
  struct Case {
    int32_t start;
    std::function<void(Asm&)> bound;
    bool ok;
  };
  const Case cases[] = {
      {0x7fff, [](Asm& a) { a.alu64_imm(kAluAnd, 2, 0x38); }, true},   // <= 56
      {0x7ffc, [](Asm& a) { a.alu64_imm(kAluAnd, 2, 0x3c); }, false},  // 60: past 56
      {-1, [](Asm& a) { a.alu32_imm(kAluAnd, 2, 0x38); }, true},
      {0x70, [](Asm& a) { a.alu64_imm(kAluRsh, 2, 1); }, true},   // 56
      {0x7f, [](Asm& a) { a.alu64_imm(kAluRsh, 2, 1); }, false},  // 63
      {0x38, [](Asm& a) { a.alu32_reg(kAluMov, 2, 2); }, true},
      {0x38,  // be64: class ALU, yet 64 bits
       [](Asm& a) {
         a.emit(make_insn(kClassAlu | kSrcX | kAluEnd, 2, 0, 0, 64)).alu64_imm(kAluRsh, 2, 27);
       },
       false},
      {0, [](Asm& a) { a.st(kSizeB, 10, -1, 200).ldx(kSizeB, 2, 10, -1); }, false},
      {0, [](Asm& a) { a.st(kSizeB, 10, -1, 48).ldx(kSizeB, 2, 10, -1); }, true},
  };
  for (size_t c = 0; c < std::size(cases); ++c) {
    Asm a;
    a.mov64_imm(2, cases[c].start);
    cases[c].bound(a);
    a.ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).st(kSizeDw, 1, 0, 9);
    a.ldx(kSizeDw, 0, 1, 0).exit();
    EngineRun j = same_on_both(a, {g.get()});
    EXPECT_EQ(j.ok, cases[c].ok) << "case " << c << ": " << j.message;
    if (j.ok) EXPECT_EQ(j.r0, 9u) << "case " << c;
  }
}

// Counted loops (emit_facts.cc find_counted_loops): the counter is bounded
// at the loop head from its entry value, its one add and the loop's test,
// so accesses indexed by it need no check when the bound fits the value;
// any other shape keeps the check and faults exactly like the interpreter.
// g is 64 bytes (8 words); the loop sums words g[i / 8] while going round.
struct LoopShape {
  std::function<void(Asm&)> enter;  // sets r2 (and may jump to "head")
  std::function<void(Asm&)> step;   // the counter's update(s), after the access
  std::function<void(Asm&)> test;   // goes round to "head" or leaves to "out"
};

Asm counted_loop(const LoopShape& s) {
  Asm a;
  a.mov64_imm(6, 0);
  s.enter(a);
  a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
  a.alu64_reg(kAluAdd, 6, 3);
  s.step(a);
  s.test(a);
  a.label("out").mov64_reg(0, 6).exit();
  return a;
}

// Runs the shape on both engines (g's words hold 1..8); the JIT's run and
// the number of accesses it checks.
std::pair<EngineRun, uint32_t> run_loop(const LoopShape& s) {
  MapPtr g = make_array(64, 1);
  Asm a = counted_loop(s);
  TestProg t(a, {g.get()});
  EXPECT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  auto fill = [&] {
    uint32_t k = 0;
    auto* w = static_cast<uint64_t*>(g->ops->lookup_elem(g.get(), &k));
    for (int i = 0; i < 8; ++i) w[i] = static_cast<uint64_t>(i + 1);
  };
  fill();
  EngineRun i = run_engine(t.prog, false, {});
  fill();
  EngineRun j = run_engine(t.prog, true, {});
  EXPECT_EQ(i.ok, j.ok) << "interp: " << i.message << "\njit: " << j.message;
  EXPECT_EQ(i.r0, j.r0);
  EXPECT_EQ(i.err, j.err);
  EXPECT_EQ(i.message, j.message);
  EXPECT_EQ(i.fault.pc, j.fault.pc);
  if (i.ok) EXPECT_EQ(i.budget_left, j.budget_left);  // a fault leaves it as it was
  return {j, vm::jit_checked_accesses(t.prog)};
}

auto enter_at(int32_t init) {
  return [init](Asm& a) { a.mov64_imm(2, init); };
}
auto add64(int32_t step) {
  return [step](Asm& a) { a.alu64_imm(kAluAdd, 2, step); };
}
// `if r2 <exit_op> end goto out; goto head`
auto exit_test(uint8_t exit_op, int32_t end) {
  return [exit_op, end](Asm& a) { a.jmp_imm(exit_op, 2, end, "out").ja("head"); };
}
// `if r2 <op> end goto head`
auto back_test(uint8_t op, int32_t end, bool jmp32 = false) {
  return [op, end, jmp32](Asm& a) {
    jmp32 ? a.jmp32_imm(op, 2, end, "head") : a.jmp_imm(op, 2, end, "head");
  };
}

TEST(JitCountedLoop, BoundedCountersNeedNoCheck) {
  const LoopShape ok_shapes[] = {
      {enter_at(0), add64(8), exit_test(kJmpJeq, 64)},  // clang's `i != n` rotated loop
      {enter_at(0), add64(8), exit_test(kJmpJge, 64)},
      {enter_at(0), add64(8), exit_test(kJmpJgt, 56)},
      {enter_at(0), add64(8), back_test(kJmpJne, 64)},
      {enter_at(0), add64(8), back_test(kJmpJlt, 64)},
      {enter_at(0), add64(8), back_test(kJmpJle, 56)},
      {enter_at(16), add64(16), exit_test(kJmpJeq, 64)},
      {[](Asm& a) { a.mov32_imm(2, 0); }, [](Asm& a) { a.alu32_imm(kAluAdd, 2, 8); },
       back_test(kJmpJne, 64, /*jmp32=*/true)},
      // Entered by a jump over other code (the sieve's count loop).
      {[](Asm& a) { a.mov64_imm(2, 0).ja("head").mov64_imm(0, 0).exit(); }, add64(8),
       exit_test(kJmpJeq, 64)},
  };
  for (size_t c = 0; c < std::size(ok_shapes); ++c) {
    auto [j, checked] = run_loop(ok_shapes[c]);
    EXPECT_TRUE(j.ok) << "shape " << c << ": " << j.message;
    EXPECT_EQ(checked, 0u) << "shape " << c;
  }
  // The sums: words 0..7 hold 1..8; from 16 by 16, words 2, 4, 6.
  EXPECT_EQ(run_loop(ok_shapes[0]).first.r0, 36u);
  EXPECT_EQ(run_loop(ok_shapes[6]).first.r0, 3u + 5 + 7);
}

TEST(JitCountedLoop, OtherShapesKeepTheCheckAndFaultLikeTheInterpreter) {
  struct Case {
    LoopShape shape;
    bool ok;
  };
  const Case cases[] = {
      {{enter_at(0), add64(8), exit_test(kJmpJeq, 72)}, false},   // one word past
      {{enter_at(4), add64(8), exit_test(kJmpJeq, 64)}, false},   // never meets the end
      {{enter_at(4), add64(8), exit_test(kJmpJeq, 56)}, false},   // nor here (60 is 4 past)
      {{enter_at(72), add64(8), exit_test(kJmpJeq, 64)}, false},  // starts past it
      {{enter_at(0), add64(8), back_test(kJmpJle, 64)}, false},
      {{enter_at(0), add64(8), back_test(kJmpJsgt, 0)}, false},  // signed: not trusted
      // Two adds: 0, 16, .. 64, whose access faults; 0, 24, 48, 72 (never 56).
      {{enter_at(0), [](Asm& a) { a.alu64_imm(kAluAdd, 2, 8).alu64_imm(kAluAdd, 2, 8); },
        exit_test(kJmpJeq, 80)},
       false},
      {{enter_at(0), [](Asm& a) { a.alu64_imm(kAluAdd, 2, 16).alu64_imm(kAluAdd, 2, 8); },
        exit_test(kJmpJeq, 56)},
       false},
      // Another write of the counter inside the body.
      {{enter_at(0), [](Asm& a) { a.alu64_imm(kAluAdd, 2, 8).mov64_reg(7, 2).mov64_reg(2, 7); },
        exit_test(kJmpJeq, 72)},
       false},
      // The entry value unknown (loaded): the `!=` test proves nothing.
      {{[](Asm& a) { a.st(kSizeDw, 10, -8, 64).ldx(kSizeDw, 2, 10, -8); }, add64(8),
        exit_test(kJmpJeq, 64)},
       false},
      // A second way into the body, past the access, with a counter far out.
      {{[](Asm& a) {
          a.mov64_imm(2, 0).mov64_imm(8, 0).jmp_imm(kJmpJeq, 8, 1, "head");
          a.mov64_imm(2, 1 << 20).ja("mid");
        },
        [](Asm& a) { a.label("mid").alu64_imm(kAluAdd, 2, 8); }, exit_test(kJmpJeq, 64)},
       false},
  };
  for (size_t c = 0; c < std::size(cases); ++c) {
    auto [j, checked] = run_loop(cases[c].shape);
    EXPECT_EQ(j.ok, cases[c].ok) << "case " << c << ": " << j.message;
    if (!j.ok) EXPECT_EQ(j.err, EFAULT) << "case " << c << ": " << j.message;
    EXPECT_GE(checked, 1u) << "case " << c;
  }
}

// `r1 += r2` folded into the proven access after it ([r1 + r2 + off], no
// add) only where r1 as the add left it is not needed afterwards.
TEST(JitGlobalData, AddressAddsFoldOnlyWhereTheSumIsDead) {
  MapPtr g = make_array(64, 1);
  const std::function<void(Asm&)> bodies[] = {
      // r1 dead after the load: folded.
      [](Asm& a) { a.alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 0, 1, 0); },
      // The load writes r1 itself: folded.
      [](Asm& a) { a.alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 1, 1, 0).mov64_reg(0, 1); },
      // r1 read again after the load: not folded (the second load sees the sum).
      [](Asm& a) {
        a.alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 0, 1, 0).ldx(kSizeDw, 3, 1, 8);
        a.alu64_reg(kAluAdd, 0, 3);
      },
      // The sum is the stored value (and dead after): not folded.
      [](Asm& a) {
        a.alu64_reg(kAluAdd, 1, 2).stx(kSizeDw, 1, 1, 0);
        a.ld_map_value(4, 0, 0).alu64_reg(kAluAdd, 4, 2).ldx(kSizeDw, 0, 4, 0);
        a.ld_map_value(4, 0, 0).alu64_reg(kAluSub, 0, 4);
      },
      // A store through the sum, then the sum read: not folded.
      [](Asm& a) { a.alu64_reg(kAluAdd, 1, 2).st(kSizeDw, 1, 8, 77).ldx(kSizeDw, 0, 1, 8); },
  };
  for (size_t b = 0; b < std::size(bodies); ++b) {
    for (int32_t idx : {0, 16, 48}) {
      Asm a;
      // Words: g[i] = i + 1; r2 = idx & 0x30 (proven inside the value).
      a.mov64_imm(2, 0).ld_map_value(1, 0, 0);
      for (int i = 0; i < 8; ++i) a.st(kSizeDw, 1, static_cast<int16_t>(8 * i), i + 1);
      a.mov64_imm(2, idx).alu64_imm(kAluAnd, 2, 0x30).ld_map_value(1, 0, 0);
      bodies[b](a);
      a.exit();
      EngineRun j = same_on_both(a, {g.get()});
      EXPECT_TRUE(j.ok) << "body " << b << " idx " << idx << ": " << j.message;
    }
  }
  // The folded loads read the right words; the stored sum is the address.
  Asm a;
  a.ld_map_value(1, 0, 0).st(kSizeDw, 1, 16, 5).mov64_imm(2, 16).alu64_imm(kAluAnd, 2, 0x30);
  bodies[0](a);
  a.exit();
  EXPECT_EQ(same_on_both(a, {g.get()}).r0, 5u);
  Asm b;
  b.mov64_imm(2, 16).alu64_imm(kAluAnd, 2, 0x30).ld_map_value(1, 0, 0);
  bodies[3](b);
  b.exit();
  EXPECT_EQ(same_on_both(b, {g.get()}).r0, 16u);
}

// A load into its own index register: checked with the index it was
// addressed with, then the fact is gone.
TEST(JitGlobalData, LoadIntoTheIndexRegister) {
  MapPtr g = make_array(64, 1);
  for (int32_t idx : {8, 1 << 20}) {
    Asm a;
    a.mov64_imm(6, idx).ld_map_value(7, 0, 0).alu64_reg(kAluAdd, 7, 6);
    a.ldx(kSizeDw, 6, 7, 0).ldx(kSizeDw, 0, 7, 8).alu64_reg(kAluAdd, 0, 6).exit();
    EngineRun j = same_on_both(a, {g.get()});
    EXPECT_EQ(j.ok, idx == 8) << idx;
    if (j.ok) EXPECT_EQ(j.r0, 0u);
  }
}

// Stores through an indexed value of a map read-only to programs fault;
// a frozen map's value stays writable (the kernel's BPF_MAP_FREEZE).
TEST(JitGlobalData, ReadOnlyGlobalsRejectIndexedStores) {
  MapPtr ro = make_array(64, 1, maps::kBpfFRdonlyProg);
  Asm a;
  a.mov64_imm(2, 16).ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2);
  a.ldx(kSizeDw, 0, 1, 0).st(kSizeDw, 1, 0, 5).exit();
  EngineRun j = same_on_both(a, {ro.get()});
  EXPECT_FALSE(j.ok);
  EXPECT_NE(j.message.find("read-only"), std::string::npos) << j.message;
  MapPtr fr = make_array(64, 1);
  fr->frozen.store(true);
  Asm b;
  b.mov64_imm(2, 16).ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2);
  b.st(kSizeDw, 1, 0, 5).ldx(kSizeDw, 0, 1, 0).exit();
  j = same_on_both(b, {fr.get()});
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 5u);
}

}  // namespace
}  // namespace userbpf::test
