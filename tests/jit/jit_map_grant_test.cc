// Region grants after map helper calls whose map the JIT knows at compile
// time (a constant r1, here on HASH maps, which are not inlined): the value
// region, its write permission and the grant list must match the
// interpreter's grant_return exactly.
#include <cstring>
#include <memory>

#include "isa/opcodes.h"
#include "jit_test_util.h"
#include "maps/registry.h"

namespace userbpf::test {
namespace {

using namespace isa;

// A hash map with u32 keys 0..n-1, every value zero.
MapPtr make_hash(uint32_t value_size, uint32_t n, uint32_t flags = 0) {
  maps::MapAttr attr;
  attr.type = static_cast<uint32_t>(maps::MapType::kHASH);
  attr.key_size = 4;
  attr.value_size = value_size;
  attr.max_entries = 64;
  attr.map_flags = flags;
  attr.name = "h";
  Result<maps::Map*> m = maps::create_map(attr);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  if (!m.ok()) return nullptr;
  std::vector<uint8_t> zero(value_size, 0);
  for (uint32_t k = 0; k < n; ++k) {
    EXPECT_EQ(m.value()->ops->update_elem(m.value(), &k, zero.data(), 0), 0);
  }
  return MapPtr(m.value());
}

// Runs a on both engines; results and errors must be identical.
EngineRun same_on_both(const Asm& a, maps::Map* m) {
  TestProg t(a, {m});
  EXPECT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  EngineRun i = run_engine(t.prog, false, {});
  EngineRun j = run_engine(t.prog, true, {});
  EXPECT_NE(t.prog.jit.load(), nullptr);
  EXPECT_EQ(i.ok, j.ok) << "interp: " << i.message << "\njit: " << j.message;
  EXPECT_EQ(i.r0, j.r0);
  EXPECT_EQ(i.err, j.err);
  EXPECT_EQ(i.message, j.message);
  EXPECT_EQ(i.fault.pc, j.fault.pc);
  return j;
}

// v = lookup(map, &key); if (!v) return 1000; *(u64*)(v + off) = 7 (if
// store); return *(u64*)(v + off).
Asm lookup_then_access(int32_t key, int16_t off, bool store) {
  Asm a;
  a.st(kSizeW, 10, -4, key).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  a.call_helper(kHelperLookup).jmp_imm(kJmpJeq, 0, 0, "null");
  if (store) a.st(kSizeDw, 0, off, 7);
  a.ldx(kSizeDw, 0, 0, off).exit();
  a.label("null").mov64_imm(0, 1000).exit();
  return a;
}

TEST(JitMapGrant, HashValuesAreWritableUpToValueSize) {
  MapPtr m = make_hash(12, 4);  // values of 12 bytes in 16-byte slots
  EngineRun j = same_on_both(lookup_then_access(2, 4, true), m.get());
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 7u);
  EXPECT_EQ(same_on_both(lookup_then_access(9, 0, true), m.get()).r0, 1000u);  // missing key
  j = same_on_both(lookup_then_access(2, 8, false), m.get());                  // into the padding
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);
}

TEST(JitMapGrant, ReadOnlyHashValuesRejectWritesFrozenOnesDoNot) {
  MapPtr ro = make_hash(8, 4, maps::kBpfFRdonlyProg);
  EngineRun j = same_on_both(lookup_then_access(1, 0, false), ro.get());
  EXPECT_TRUE(j.ok) << j.message;
  j = same_on_both(lookup_then_access(1, 0, true), ro.get());
  EXPECT_FALSE(j.ok);
  EXPECT_NE(j.message.find("read-only"), std::string::npos) << j.message;
  MapPtr fr = make_hash(8, 4);
  fr->frozen.store(true);  // freezing only blocks the host (BPF_MAP_FREEZE)
  EXPECT_TRUE(same_on_both(lookup_then_access(1, 0, false), fr.get()).ok);
  j = same_on_both(lookup_then_access(1, 0, true), fr.get());
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 7u);  // the stored value read back
}

// kHelperScratch's memory is a grant; hash values take no grant slot (the
// region logic finds them by address, MapOps::value_at), so no number of
// lookups pushes it out of the 16-entry grant list. Returns the run of a
// store to the scratch memory after `lookups` lookups of key.
EngineRun scratch_after_lookups(maps::Map* m, int32_t key, int32_t lookups) {
  Asm a;
  a.call_helper(kHelperScratch).mov64_reg(7, 0).mov64_imm(6, 0);
  a.label("loop").st(kSizeW, 10, -4, key).ld_map(1, 0).mov64_reg(2, 10);
  a.alu64_imm(kAluAdd, 2, -4).call_helper(kHelperLookup);
  a.alu64_imm(kAluAdd, 6, 1).jmp_imm(kJmpJlt, 6, lookups, "loop");
  a.st(kSizeDw, 7, 0, 1).mov64_imm(0, 1).exit();
  return same_on_both(a, m);
}

TEST(JitMapGrant, HashValuesTakeNoGrantSlot) {
  MapPtr m = make_hash(8, 4);
  for (int32_t lookups : {1, 16, 40}) {
    EngineRun j = scratch_after_lookups(m.get(), 3, lookups);
    EXPECT_TRUE(j.ok) << lookups << ": " << j.message;
    j = scratch_after_lookups(m.get(), 40, lookups);  // missing key: NULL
    EXPECT_TRUE(j.ok) << lookups << ": " << j.message;
  }
}

// A hash value kept across a loop of other lookups and helper memory (the
// hit region moves on): still found by address, read and written, and its
// neighbour's value is reachable only as that element's value.
TEST(JitMapGrant, KeptHashValuesAreFoundByAddress) {
  MapPtr m = make_hash(8, 4);
  Asm a;
  a.st(kSizeW, 10, -4, 1).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  a.call_helper(kHelperLookup).jmp_imm(kJmpJeq, 0, 0, "null").mov64_reg(8, 0);
  a.mov64_imm(6, 0).label("loop").st(kSizeW, 10, -4, 2).ld_map(1, 0).mov64_reg(2, 10);
  a.alu64_imm(kAluAdd, 2, -4).call_helper(kHelperLookup).call_helper(kHelperScratch);
  a.st(kSizeDw, 0, 0, 5).alu64_imm(kAluAdd, 6, 1).jmp_imm(kJmpJlt, 6, 20, "loop");
  a.st(kSizeDw, 8, 0, 9).ldx(kSizeDw, 0, 8, 0).exit();
  a.label("null").mov64_imm(0, 1000).exit();
  EngineRun j = same_on_both(a, m.get());
  EXPECT_TRUE(j.ok) << j.message;
  EXPECT_EQ(j.r0, 9u);
  // Past the value (8 bytes) into the slot's padding or the next slot's
  // header: not a value, the run faults on both engines.
  Asm b;
  b.st(kSizeW, 10, -4, 1).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  b.call_helper(kHelperLookup).jmp_imm(kJmpJeq, 0, 0, "null").mov64_reg(8, 0);
  b.call_helper(kHelperScratch).st(kSizeDw, 0, 0, 5).mov64_imm(6, 8);
  b.label("again").alu64_reg(kAluAdd, 8, 6).ldx(kSizeDw, 0, 8, 0).exit();
  b.label("null").mov64_imm(0, 1000).exit();
  j = same_on_both(b, m.get());
  EXPECT_FALSE(j.ok);
  EXPECT_EQ(j.err, EFAULT);
}

}  // namespace
}  // namespace userbpf::test
