// LRU_HASH and LRU_PERCPU_HASH (maps/lru_hash.cc on maps/lru_list.h), both
// with the common LRU list and with per-CPU lists (BPF_F_NO_COMMON_LRU):
// creation checks, the errno table (SPEC.md sections 2-3), eviction order on
// a known CPU slot (oldest untouched first; program lookups protect an
// element, host lookups and walks do not), the per-CPU round-up of
// max_entries, the per-CPU host view and program copies, batches,
// access_ok, special fields, and a stress of programs, host threads and
// signal handlers whose end state LruList::check and the table must agree on.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "maps/hash_map.h"
#include "signal_kicker.h"
#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "maps/special_fields.h"
#include "percpu_test_util.h"

namespace userbpf::maps {
namespace {

using test::cpu_flags;
using test::on_slot;
using test::PercpuFixture;

constexpr uint32_t kCpus = 4;

bool is_pcpu(MapType t) {
  return t == MapType::kLRU_PERCPU_HASH;
}

// Host update of a u64 value: every CPU's copy for the per-CPU type.
long host_put(Map* m, uint32_t key, uint64_t v, uint64_t flags = 0) {
  if (!m->ops->update_elem_copy) return m->ops->update_elem(m, &key, &v, flags);
  std::vector<uint64_t> all(map_num_cpus(m), v);
  return m->ops->update_elem_copy(m, &key, all.data(), flags);
}

// Host lookup (never marks the element): whether key is in the map.
bool has(Map* m, uint32_t key) {
  std::vector<uint8_t> buf(m->ops->host_value_size(m));
  return m->ops->lookup_elem_copy(m, &key, buf.data(), 0) == 0;
}

std::set<uint32_t> all_keys(Map* m) {
  std::set<uint32_t> out;
  uint32_t cur = 0, next = 0;
  const void* prev = nullptr;
  while (m->ops->get_next_key(m, prev, &next) == 0) {
    EXPECT_TRUE(out.insert(next).second) << "key " << next << " twice";
    cur = next;
    prev = &cur;
  }
  return out;
}

// Live elements (host, at rest). LRU maps keep no element count (their LRU
// entries bound the elements): the nodes on the LRU's lists, less those
// flagged by a push_free that could not lock.
uint64_t count_of(Map* m) {
  LruCounts c;
  std::string why;
  EXPECT_TRUE(to_htab(m)->lru->check(&c, nullptr, &why)) << why;
  return c.nodes() - c.flagged;
}

// The LRU's lists agree with the table (host, nothing in flight):
// LruList::check passes; every element in the table is on the lists; every
// node on the lists is in the table or was given back by a push_free that
// could not lock (flagged); the table holds at most max_entries.
void expect_consistent(Map* m, LruCounts* out = nullptr) {
  HashMap* h = to_htab(m);
  ASSERT_TRUE(h->lru);
  LruCounts c;
  std::string why;
  std::set<HashElem*> on_lists, flagged;
  ASSERT_TRUE(h->lru->check(
      &c,
      [&](LruNode* n) {
        on_lists.insert(htab_lru_elem(h, n));
        if (n->pending_free.load()) flagged.insert(htab_lru_elem(h, n));
      },
      &why))
      << why;
  std::set<HashElem*> in_table;
  for (uint32_t b = 0; b < h->n_buckets; b++)
    for (uintptr_t p = htab_first(h, b); !is_nulls(p);) {
      auto* e = reinterpret_cast<HashElem*>(p);
      EXPECT_TRUE(in_table.insert(e).second);
      EXPECT_EQ(htab_bucket_index(h, e->hash.load()), b);
      p = e->next.load();
    }
  for (HashElem* e : in_table) EXPECT_TRUE(on_lists.count(e)) << "element missing from the LRU";
  for (HashElem* e : on_lists)
    EXPECT_NE(in_table.count(e) != 0, flagged.count(e) != 0)
        << "a node must be in the table or flagged, not both or neither";
  EXPECT_EQ(c.flagged, flagged.size());
  EXPECT_EQ(c.nodes() - c.flagged, in_table.size());
  EXPECT_LE(in_table.size(), m->attr.max_entries);
  if (out) *out = c;
}

// Keys of order no longer in the map must be exactly the oldest untouched
// ones, and every touched key must still be there.
void expect_oldest_untouched_evicted(Map* m, const std::vector<uint32_t>& order,
                                     const std::set<uint32_t>& touched, size_t* evicted) {
  std::vector<uint32_t> missing, expected;
  for (uint32_t k : order)
    if (!has(m, k)) missing.push_back(k);
  for (uint32_t k : order)
    if (!touched.count(k) && expected.size() < missing.size()) expected.push_back(k);
  EXPECT_EQ(missing, expected);
  for (uint32_t k : touched) EXPECT_TRUE(has(m, k)) << "touched key " << k << " evicted";
  *evicted = missing.size();
}

// Parameters: map type, and whether the LRU lists are per CPU.
class LruHash : public ::testing::TestWithParam<std::tuple<MapType, bool>> {
 protected:
  LruHash() : f(kCpus) {}
  MapType type() const { return std::get<0>(GetParam()); }
  bool pcpu() const { return is_pcpu(type()); }
  bool percpu_lru() const { return std::get<1>(GetParam()); }
  uint32_t lru_flags() const { return percpu_lru() ? kBpfFNoCommonLru : 0; }
  Map* create(uint32_t max_entries, uint32_t value_size = 8, uint32_t key_size = 4) {
    return f.create(f.attr(type(), key_size, value_size, max_entries, lru_flags()));
  }
  // What a program on slot does.
  long prog_put(Map* m, uint32_t slot, uint32_t key, uint64_t v, uint64_t flags = 0) {
    long rc = 0;
    on_slot(f.dom(), slot, [&] { rc = m->ops->update_elem(m, &key, &v, flags); });
    return rc;
  }
  void touch(Map* m, uint32_t slot, uint32_t key) {
    on_slot(f.dom(), slot, [&] { EXPECT_NE(m->ops->lookup_elem(m, &key), nullptr) << key; });
  }
  // A host update made from slot (the LRU list it uses is the slot's).
  long put_on(Map* m, uint32_t slot, uint32_t key, uint64_t v, uint64_t flags = 0) {
    long rc = 0;
    on_slot(f.dom(), slot, [&] { rc = host_put(m, key, v, flags); });
    return rc;
  }
  PercpuFixture f;
};

// Tests whose exact answers depend on the mode (batch sizes, which list).
class LruHashCommonList : public LruHash {};
class LruHashPercpuLists : public LruHash {};

TEST(LruHashCreate, AllocChecks) {
  PercpuFixture f(kCpus);
  for (MapType t : {MapType::kLRU_HASH, MapType::kLRU_PERCPU_HASH}) {
    SCOPED_TRACE(map_type_name(static_cast<uint32_t>(t)));
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4)), 0);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoCommonLru)), 0);
    // The kernel's internal ENOTSUPP (524), as bpf(2) returns it.
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoPrealloc)), kEnotsupp);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoPrealloc | kBpfFNoCommonLru)), kEnotsupp);
    // Unknown flags come first.
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoPrealloc | kBpfFMmapable)), EINVAL);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNumaNode | kBpfFNoCommonLru)), EINVAL);
    EXPECT_EQ(f.create_errno(f.attr(t, 0, 8, 4)), EINVAL);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 0, 4)), EINVAL);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 0)), EINVAL);
    EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFRdonlyProg | kBpfFWronlyProg)), EINVAL);
  }
  EXPECT_EQ(f.create_errno(f.attr(MapType::kLRU_HASH, 4, 8, 4, kBpfFNumaNode)), 0);
  EXPECT_EQ(f.create_errno(f.attr(MapType::kLRU_PERCPU_HASH, 4, 8, 4, kBpfFNumaNode)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(MapType::kLRU_PERCPU_HASH, 4, kPcpuMinUnitSize, 1)), 0);
  EXPECT_EQ(f.create_errno(f.attr(MapType::kLRU_PERCPU_HASH, 4, kPcpuMinUnitSize + 1, 1)), E2BIG);
  EXPECT_EQ(f.create_errno(f.attr(MapType::kHASH, 4, 8, 4, kBpfFNoCommonLru)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(MapType::kPERCPU_HASH, 4, 8, 4, kBpfFNoCommonLru)), EINVAL);
}

// The kernel's map_check_btf: LRU_HASH values may hold timers, work queues
// and kptrs but no bpf_spin_lock; LRU_PERCPU_HASH values kptrs only.
TEST(LruHashCreate, SpecialFieldsAllowedPerType) {
  PercpuFixture f(kCpus);
  auto with = [&](MapType t, FieldKind k, uint32_t size) {
    MapAttr a = f.attr(t, 4, 32, 4);
    auto ft = std::make_shared<FieldTable>();
    ft->fields.push_back(SpecialField{k, 8, size});
    a.fields = ft;
    return f.create_errno(a);
  };
  EXPECT_EQ(with(MapType::kLRU_HASH, FieldKind::kSpinLock, 4), EOPNOTSUPP);
  EXPECT_EQ(with(MapType::kLRU_HASH, FieldKind::kTimer, 16), 0);
  EXPECT_EQ(with(MapType::kLRU_HASH, FieldKind::kWorkqueue, 16), 0);
  EXPECT_EQ(with(MapType::kLRU_HASH, FieldKind::kKptr, 8), 0);
  EXPECT_EQ(with(MapType::kLRU_PERCPU_HASH, FieldKind::kSpinLock, 4), EOPNOTSUPP);
  EXPECT_EQ(with(MapType::kLRU_PERCPU_HASH, FieldKind::kTimer, 16), EOPNOTSUPP);
  EXPECT_EQ(with(MapType::kLRU_PERCPU_HASH, FieldKind::kKptr, 8), 0);
  EXPECT_EQ(with(MapType::kPERCPU_HASH, FieldKind::kTimer, 16), EOPNOTSUPP);
  EXPECT_EQ(with(MapType::kHASH, FieldKind::kSpinLock, 4), 0);
}

// BPF_F_NO_COMMON_LRU: max_entries rounded up to a multiple of the CPUs
// (kernel htab_map_alloc), and each CPU's list holds its share only.
TEST(LruHashCreate, PercpuListsRoundMaxEntriesUp) {
  PercpuFixture f(3);
  for (MapType t : {MapType::kLRU_HASH, MapType::kLRU_PERCPU_HASH}) {
    SCOPED_TRACE(map_type_name(static_cast<uint32_t>(t)));
    Map* m = f.create(f.attr(t, 4, 8, 10, kBpfFNoCommonLru));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->attr.max_entries, 12u);
    Map* one = f.create(f.attr(t, 4, 8, 1, kBpfFNoCommonLru));
    ASSERT_TRUE(one);
    EXPECT_EQ(one->attr.max_entries, 3u);
    Map* common = f.create(f.attr(t, 4, 8, 10));
    ASSERT_TRUE(common);
    EXPECT_EQ(common->attr.max_entries, 10u);
    // Twelve inserts from one CPU: its list of 4 keeps the last 4.
    for (uint32_t k = 0; k < 12; k++) {
      long rc = 0;
      on_slot(f.dom(), 1, [&] { rc = host_put(m, k, k); });
      ASSERT_EQ(rc, 0) << k;
    }
    EXPECT_EQ(all_keys(m), (std::set<uint32_t>{8, 9, 10, 11}));
    expect_consistent(m);
  }
}

TEST_P(LruHash, ErrnoTable) {
  // Four entries per CPU list: with one, even a BPF_NOEXIST update of the
  // list's only key would evict it first (pop before lookup, as the kernel
  // does) and succeed.
  Map* m = create(4 * kCpus);
  ASSERT_TRUE(m);
  std::vector<uint8_t> out(m->ops->host_value_size(m));
  uint32_t k = 7;
  EXPECT_EQ(m->ops->lookup_elem_copy(m, &k, out.data(), 0), -ENOENT);
  EXPECT_EQ(host_put(m, k, 1, kBpfExist), -ENOENT);
  EXPECT_EQ(host_put(m, k, 1, kBpfNoexist), 0);
  EXPECT_EQ(host_put(m, k, 1, kBpfNoexist), -EEXIST);
  EXPECT_EQ(host_put(m, k, 2, kBpfExist), 0);
  EXPECT_EQ(host_put(m, k, 2, kBpfAny), 0);
  EXPECT_EQ(host_put(m, k, 2, kBpfNoexist | kBpfExist), -EINVAL);
  EXPECT_EQ(host_put(m, k, 2, kBpfFLock), -EINVAL);  // no spin lock in LRU values
  EXPECT_EQ(host_put(m, k, 2, 64), -EINVAL);
  EXPECT_EQ(m->ops->lookup_elem_copy(m, &k, out.data(), kBpfFLock), -EINVAL);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), kBpfFLock), -EINVAL);
  if (pcpu()) {
    EXPECT_EQ(host_put(m, k, 2, cpu_flags(kCpus)), -ERANGE);
    EXPECT_EQ(host_put(m, k, 2, kBpfFCpu | kBpfFAllCpus), -EINVAL);
  } else {
    EXPECT_EQ(host_put(m, k, 2, kBpfFCpu), -EINVAL);
  }
  // Programs: the same answers, and never E2BIG on a full map.
  on_slot(f.dom(), 2, [&] {
    uint64_t v = 3;
    uint32_t other = 8;
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfNoexist), -EEXIST);
    EXPECT_EQ(m->ops->update_elem(m, &other, &v, kBpfExist), -ENOENT);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFLock), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, 3), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFCpu), -EINVAL);
    EXPECT_EQ(m->ops->delete_elem(m, &other), -ENOENT);
    EXPECT_EQ(m->ops->lookup_elem(m, &other), nullptr);
    for (uint32_t i = 100; i < 140; i++) EXPECT_EQ(m->ops->update_elem(m, &i, &v, kBpfAny), 0);
  });
  EXPECT_LE(count_of(m), m->attr.max_entries);
  for (uint32_t i = 200; i < 240; i++) EXPECT_EQ(host_put(m, i, i), 0) << "full map: evicts";
  EXPECT_LE(count_of(m), m->attr.max_entries);
  const bool still_there = has(m, k);
  EXPECT_EQ(m->ops->delete_elem(m, &k), still_there ? 0 : -ENOENT);
  EXPECT_EQ(m->ops->delete_elem(m, &k), -ENOENT);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), 0), -ENOENT);
  uint32_t any = *all_keys(m).begin();
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &any, out.data(), 0), 0);
  EXPECT_FALSE(has(m, any));
  expect_consistent(m);
}

// One common list, every operation from slot 0: once the map is full each
// refill evicts a batch (target_free) of the oldest elements nobody looked
// up; elements a program looked up move to the active list and stay.
TEST_P(LruHashCommonList, EvictsOldestUntouchedFirst) {
  constexpr uint32_t kEntries = 256;
  Map* m = create(kEntries);
  ASSERT_TRUE(m);
  const uint32_t target = to_htab(m)->lru->target_free();
  EXPECT_EQ(target, kEntries / kCpus / 2);
  std::vector<uint32_t> order;
  for (uint32_t k = 0; k < kEntries; k++) {
    ASSERT_EQ(put_on(m, 0, k, k), 0);
    order.push_back(k);
  }
  EXPECT_EQ(all_keys(m).size(), kEntries);
  std::set<uint32_t> touched;
  for (uint32_t k = 0; k < 128; k += 4) {
    touched.insert(k);
    touch(m, 0, k);
  }
  size_t evicted = 0;
  for (uint32_t k = kEntries; k < kEntries + 100; k++) {
    ASSERT_EQ(prog_put(m, 0, k, k), 0);
    order.push_back(k);
    expect_oldest_untouched_evicted(m, order, touched, &evicted);
    ASSERT_FALSE(HasFailure()) << "after inserting " << k;
    EXPECT_LE(count_of(m), kEntries);
  }
  EXPECT_GE(evicted, 100u);
  EXPECT_LE(evicted, 100u + target);  // at most one batch ahead of need
  expect_consistent(m);
}

// Per-CPU lists: a slot evicts its own oldest untouched elements, four at a
// time (the kernel's PERCPU_FREE_TARGET), and never another slot's.
TEST_P(LruHashPercpuLists, EvictTheirOwnOldest) {
  constexpr uint32_t kEntries = 256;  // 64 per slot
  Map* m = create(kEntries);
  ASSERT_TRUE(m);
  std::vector<uint32_t> order;
  for (uint32_t k = 0; k < 64; k++) {
    ASSERT_EQ(put_on(m, 1, k, k), 0);
    order.push_back(k);
  }
  EXPECT_EQ(to_htab(m)->lru->local_free(1), 0u);
  // Never four touched in a row: a shrink looks at four nodes at a time.
  std::set<uint32_t> touched = {0, 2, 10, 20, 21, 30};
  for (uint32_t k : touched) touch(m, 3, k);  // the slot that looks does not matter
  size_t evicted = 0;
  for (uint32_t k = 64; k < 64 + 40; k++) {
    ASSERT_EQ(prog_put(m, 1, k, k), 0);
    order.push_back(k);
    expect_oldest_untouched_evicted(m, order, touched, &evicted);
    ASSERT_FALSE(HasFailure()) << "after inserting " << k;
  }
  EXPECT_GE(evicted, 40u);
  EXPECT_LE(evicted, 40u + LruList::kPercpuFreeTarget);
  // Slot 2 cycles through its own 64 entries; slot 1's keys stay.
  std::set<uint32_t> slot1 = all_keys(m);
  for (uint32_t k = 1000; k < 1200; k++) ASSERT_EQ(put_on(m, 2, k, k), 0);
  std::set<uint32_t> now = all_keys(m);
  for (uint32_t k : slot1) EXPECT_TRUE(now.count(k)) << k;
  uint32_t slot2 = 0;
  for (uint32_t k = 1000; k < 1200; k++) slot2 += has(m, k);
  EXPECT_EQ(slot2, 64u);
  EXPECT_EQ(to_htab(m)->lru->local_free(0), 64u);
  expect_consistent(m);
}

// The kernel marks elements only for programs: host lookups, get_next_key
// walks and batch lookups leave the eviction order alone. A program's
// bpf_map_lookup_percpu_elem marks too.
TEST_P(LruHashCommonList, ProgramLookupsMarkHostLookupsDoNot) {
  constexpr uint32_t kEntries = 256;
  Map* m = create(kEntries);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < kEntries; k++) ASSERT_EQ(put_on(m, 0, k, k), 0);
  for (uint32_t k = 0; k < 10; k++) EXPECT_TRUE(has(m, k));
  EXPECT_EQ(all_keys(m).size(), kEntries);
  std::vector<uint32_t> keys(kEntries);
  std::vector<uint8_t> vals(size_t{kEntries} * m->ops->host_value_size(m));
  BatchArgs lb{nullptr, nullptr, keys.data(), vals.data(), kEntries, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lb), -ENOENT);
  EXPECT_EQ(lb.count, kEntries);
  for (uint32_t k = 10; k < 20; k++) {
    if (pcpu() && k % 2)
      on_slot(f.dom(), 0, [&] { EXPECT_NE(m->ops->lookup_percpu_elem(m, &k, 3), nullptr); });
    else
      touch(m, 0, k);
  }
  // One more insert evicts one batch: the oldest 32 unmarked keys.
  ASSERT_EQ(put_on(m, 0, 1000, 1), 0);
  std::set<uint32_t> gone;
  for (uint32_t k = 0; k < kEntries; k++)
    if (!has(m, k)) gone.insert(k);
  std::set<uint32_t> expected;
  for (uint32_t k = 0; k < 10; k++) expected.insert(k);
  for (uint32_t k = 20; k < 42; k++) expected.insert(k);
  EXPECT_EQ(gone, expected);
  expect_consistent(m);
}

// Updating an existing key: LRU_HASH replaces the element (the new one is
// marked used), LRU_PERCPU_HASH writes in place and marks the element; both
// take an LRU entry before looking (the kernel's order), so on a full
// common list even an update of an existing key evicts a batch, except
// LRU_PERCPU_HASH with BPF_EXIST, which takes none.
TEST_P(LruHashCommonList, UpdatesOfExistingKeys) {
  constexpr uint32_t kEntries = 256;
  Map* m = create(kEntries);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < kEntries; k++) ASSERT_EQ(put_on(m, 0, k, k), 0);
  void* before = nullptr;
  uint32_t last = kEntries - 1;
  if (pcpu()) {
    on_slot(f.dom(), 0, [&] { before = m->ops->lookup_percpu_elem(m, &last, 0); });
    ASSERT_EQ(put_on(m, 0, last, 77, kBpfExist), 0);
    EXPECT_EQ(count_of(m), kEntries) << "BPF_EXIST takes no entry";
  }
  ASSERT_EQ(put_on(m, 0, last, 78, kBpfAny), 0);
  EXPECT_EQ(count_of(m), kEntries - kEntries / kCpus / 2);
  for (uint32_t k = 0; k < kEntries / kCpus / 2; k++) EXPECT_FALSE(has(m, k)) << k;
  std::vector<uint64_t> out(m->ops->host_value_size(m) / 8);
  ASSERT_EQ(m->ops->lookup_elem_copy(m, &last, out.data(), 0), 0);
  EXPECT_EQ(out[0], 78u);
  if (pcpu()) {
    void* after = nullptr;
    on_slot(f.dom(), 0, [&] { after = m->ops->lookup_percpu_elem(m, &last, 0); });
    EXPECT_EQ(after, before) << "per-CPU values are updated in place";
  }
  expect_consistent(m);
}

// A program's pointer stays valid and unchanged for its whole run even if
// its element is evicted meanwhile (elements are freed after a grace
// period); the evicted element's special fields are released at eviction.
TEST_P(LruHash, EvictedValueStaysIntactDuringARun) {
  MapAttr a = f.attr(type(), 4, 32, 64, lru_flags());
  if (!pcpu()) {
    auto ft = std::make_shared<FieldTable>();
    ft->fields.push_back(SpecialField{FieldKind::kTimer, 8, 16});
    a.fields = ft;
  }
  Map* m = f.create(a);
  ASSERT_TRUE(m);
  on_slot(f.dom(), 1, [&] {
    uint32_t k = 5;
    uint64_t v[4] = {0x1111, 0, 0, 0x4444};
    ASSERT_EQ(m->ops->update_elem(m, &k, v, 0), 0);
    auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &k));
    ASSERT_NE(p, nullptr);
    if (!pcpu()) __atomic_store_n(&p[1], 0xabcdull, __ATOMIC_RELAXED);  // "the timer"
    // The same run inserts and looks up other keys until key 5, marked
    // once like all of them, has aged out.
    for (uint32_t i = 100; i < 3000 && has(m, k); i++) {
      uint64_t w[4] = {i, 0, 0, i};
      ASSERT_EQ(m->ops->update_elem(m, &i, w, 0), 0);
      ASSERT_NE(m->ops->lookup_elem(m, &i), nullptr);
    }
    EXPECT_FALSE(has(m, k));
    EXPECT_EQ(__atomic_load_n(&p[0], __ATOMIC_RELAXED), 0x1111u);
    EXPECT_EQ(__atomic_load_n(&p[3], __ATOMIC_RELAXED), 0x4444u);
    if (!pcpu()) EXPECT_EQ(__atomic_load_n(&p[1], __ATOMIC_RELAXED), 0u) << "fields released";
  });
  expect_consistent(m);
}

// Elements evicted or deleted wait for a grace period before the pool hands
// them out again. A run that holds its slot for thousands of inserts stalls
// that grace period; once the pool's spare elements are all waiting, inserts
// take an element back from the LRU at once (the kernel's behaviour), so
// they keep succeeding. The stalled run's old pointers may then show other
// keys: only then.
TEST_P(LruHash, InsertsNeverFailWhileGracePeriodsStall) {
  Map* m = create(64);
  ASSERT_TRUE(m);
  HashMap* h = to_htab(m);
  const uint64_t capacity = h->pool.capacity();
  on_slot(f.dom(), 0, [&] {
    uint32_t k = 0;
    uint64_t v = 0;
    for (; k < 2 * capacity && testing::lru_reused_at_once(m) == 0; k++)
      ASSERT_EQ(m->ops->update_elem(m, &k, &(v = k), 0), 0) << k;
    EXPECT_GT(testing::lru_reused_at_once(m), 0u) << "after " << k << " inserts";
    EXPECT_EQ(h->pool.carved(), capacity);
    for (uint32_t i = 0; i < 1000; i++, k++)
      ASSERT_EQ(m->ops->update_elem(m, &k, &(v = k), 0), 0) << k;
  });
  expect_consistent(m);
  EXPECT_EQ(all_keys(m).size(), count_of(m));
}

// A program's pointer covers its value (its CPU's copy) and never the
// element's LRU node, which sits right after the value copies.
TEST_P(LruHash, AccessOkStopsBeforeTheNode) {
  Map* m = create(4, 12);
  ASSERT_TRUE(m);
  uint32_t k = 3;
  std::vector<uint8_t> v(m->ops->host_value_size(m), 1);
  ASSERT_EQ(pcpu() ? m->ops->update_elem_copy(m, &k, v.data(), 0)
                   : m->ops->update_elem(m, &k, v.data(), 0),
            0);
  auto ok = [&](const void* p, size_t n, bool w) {
    return m->ops->access_ok(m, reinterpret_cast<uintptr_t>(p), n, w);
  };
  on_slot(f.dom(), 0, [&] {
    auto* p = static_cast<char*>(m->ops->lookup_elem(m, &k));
    ASSERT_TRUE(p);
    EXPECT_TRUE(ok(p, 12, true));
    EXPECT_FALSE(ok(p, 13, false));
    const uint32_t copies = pcpu() ? kCpus : 1;
    char* node = p + 16 * copies;  // copy 0 is this slot's: the node follows the last copy
    EXPECT_EQ(static_cast<void*>(node),
              static_cast<void*>(htab_lru_node(
                  to_htab(m), reinterpret_cast<HashElem*>(p - to_htab(m)->value_offset))));
    for (uint32_t off = 0; off < sizeof(LruNode); off += 4) {
      EXPECT_FALSE(ok(node + off, 4, false)) << off;
      EXPECT_FALSE(ok(node + off, 4, true)) << off;
    }
    EXPECT_FALSE(ok(p - 4, 4, true));  // the key: read-only
    EXPECT_TRUE(ok(p - 8, 4, false));
  });
}

TEST_P(LruHash, BatchOps) {
  Map* m = create(64);
  ASSERT_TRUE(m);
  const uint32_t vbytes = m->ops->host_value_size(m);
  std::vector<uint32_t> keys;
  std::vector<uint8_t> vals;
  for (uint32_t i = 0; i < 10; i++) {
    keys.push_back(i);
    for (uint32_t b = 0; b < vbytes; b += 8) {
      uint64_t w = 100 * i + b / 8;
      vals.insert(vals.end(), reinterpret_cast<uint8_t*>(&w), reinterpret_cast<uint8_t*>(&w) + 8);
    }
  }
  BatchArgs up{nullptr, nullptr, keys.data(), vals.data(), 10, 0, 0};
  ASSERT_EQ(m->ops->update_batch(m, up), 0);
  EXPECT_EQ(up.count, 10u);
  std::vector<uint32_t> okeys(64);
  std::vector<uint8_t> ovals(size_t{64} * vbytes);
  BatchArgs lk{nullptr, nullptr, okeys.data(), ovals.data(), 64, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lk), -ENOENT);
  ASSERT_EQ(lk.count, 10u);
  for (uint32_t j = 0; j < 10; j++) {
    uint64_t w;
    std::memcpy(&w, ovals.data() + size_t{j} * vbytes + vbytes - 8, 8);
    EXPECT_EQ(w, 100u * okeys[j] + vbytes / 8 - 1) << okeys[j];
  }
  BatchArgs lockf{nullptr, nullptr, okeys.data(), ovals.data(), 64, kBpfFLock, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lockf), -EINVAL);
  BatchArgs ld{nullptr, nullptr, okeys.data(), ovals.data(), 64, 0, 0};
  EXPECT_EQ(m->ops->lookup_and_delete_batch(m, ld), -ENOENT);
  EXPECT_EQ(ld.count, 10u);
  EXPECT_TRUE(all_keys(m).empty());
  LruCounts c;
  expect_consistent(m, &c);
  EXPECT_EQ(c.nodes(), 0u) << "every entry back on the free lists";
  EXPECT_EQ(c.free, m->attr.max_entries);
  ASSERT_EQ(m->ops->update_batch(m, up), 0);
  BatchArgs del{nullptr, nullptr, keys.data(), nullptr, 10, 0, 0};
  EXPECT_EQ(m->ops->delete_batch(m, del), 0);
  EXPECT_EQ(del.count, 10u);
  EXPECT_TRUE(all_keys(m).empty());
  expect_consistent(m, &c);
  EXPECT_EQ(c.nodes(), 0u);
}

std::string lru_param_name(const ::testing::TestParamInfo<std::tuple<MapType, bool>>& i) {
  return std::string(is_pcpu(std::get<0>(i.param)) ? "LruPercpuHash" : "LruHash") +
         (std::get<1>(i.param) ? "_PercpuLists" : "_CommonList");
}
const auto kLruTypes = ::testing::Values(MapType::kLRU_HASH, MapType::kLRU_PERCPU_HASH);
INSTANTIATE_TEST_SUITE_P(Types, LruHash, ::testing::Combine(kLruTypes, ::testing::Bool()),
                         lru_param_name);
INSTANTIATE_TEST_SUITE_P(Types, LruHashCommonList,
                         ::testing::Combine(kLruTypes, ::testing::Values(false)), lru_param_name);
INSTANTIATE_TEST_SUITE_P(Types, LruHashPercpuLists,
                         ::testing::Combine(kLruTypes, ::testing::Values(true)), lru_param_name);

// ---- LRU_PERCPU_HASH's per-CPU values ---------------------------------------

class LruPercpuValues : public ::testing::TestWithParam<bool> {
 protected:
  LruPercpuValues() : f(3) {}
  Map* create(uint32_t key_size, uint32_t value_size, uint32_t max_entries) {
    return f.create(f.attr(MapType::kLRU_PERCPU_HASH, key_size, value_size, max_entries,
                           GetParam() ? kBpfFNoCommonLru : 0));
  }
  std::vector<uint64_t> all(Map* m, uint32_t key) {
    std::vector<uint64_t> out(3, ~0ull);
    EXPECT_EQ(test::host_lookup(m, &key, out.data()), 0) << "key " << key;
    return out;
  }
  PercpuFixture f;
};

TEST_P(LruPercpuValues, HostLayoutFlagsAndProgramCopies) {
  Map* m = create(4, 4, 30);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops->host_value_size(m), 8u * 3);  // round_up(4, 8) per CPU
  uint64_t v[3] = {10, 11, 12};
  uint32_t k = 1;
  ASSERT_EQ(test::host_update(m, &k, v), 0);
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{10, 11, 12}));
  uint32_t one = 77;
  ASSERT_EQ(test::host_update(m, &k, &one, cpu_flags(1)), 0);
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{10, 77, 12}));
  ASSERT_EQ(test::host_update(m, &(k = 2), &one, cpu_flags(2, kBpfNoexist)), 0);
  EXPECT_EQ(all(m, 2), (std::vector<uint64_t>{0, 0, 77}));
  uint32_t nine = 9;
  ASSERT_EQ(test::host_update(m, &(k = 3), &nine, kBpfFAllCpus), 0);
  EXPECT_EQ(all(m, 3), (std::vector<uint64_t>{9, 9, 9}));
  uint32_t got = 0;
  ASSERT_EQ(test::host_lookup(m, &k, &got, cpu_flags(2)), 0);
  EXPECT_EQ(got, 9u);
  // A program insert on slot 2 writes its copy and zeroes the others; an
  // update of an existing key writes in place, so its pointer stays the copy.
  uint32_t pk = 4;
  on_slot(f.dom(), 2, [&] {
    uint32_t pv = 5;
    ASSERT_EQ(m->ops->update_elem(m, &pk, &pv, kBpfNoexist), 0);
    auto* p = static_cast<uint32_t*>(m->ops->lookup_elem(m, &pk));
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, 5u);
    EXPECT_EQ(p, m->ops->lookup_percpu_elem(m, &pk, 2));
    EXPECT_EQ(m->ops->lookup_percpu_elem(m, &pk, 3), nullptr);
    pv = 6;
    ASSERT_EQ(m->ops->update_elem(m, &pk, &pv, kBpfExist), 0);
    EXPECT_EQ(*p, 6u);
  });
  EXPECT_EQ(all(m, pk), (std::vector<uint64_t>{0, 0, 6}));
  on_slot(f.dom(), 0, [&] {
    uint32_t pv = 1;
    ASSERT_EQ(m->ops->update_elem(m, &pk, &pv, kBpfAny), 0);
  });
  EXPECT_EQ(all(m, pk), (std::vector<uint64_t>{1, 0, 6}));
  // lookup_and_delete copies every CPU's copy out.
  std::vector<uint64_t> out(3);
  ASSERT_EQ(m->ops->lookup_and_delete_elem(m, &pk, out.data(), 0), 0);
  EXPECT_EQ(out, (std::vector<uint64_t>{1, 0, 6}));
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &pk, out.data(), cpu_flags(0)), -EINVAL);
  expect_consistent(m);
}

// Copies a program insert does not write read zero, whatever the element
// held before it was evicted or deleted (reused memory included).
TEST_P(LruPercpuValues, ReusedElementsStartZeroed) {
  Map* m = create(4, 8, 3);
  ASSERT_TRUE(m);
  uint64_t full[3] = {1000, 1001, 1002};
  for (uint32_t round = 0; round < 200; round++) {
    uint32_t k = round;
    ASSERT_EQ(test::host_update(m, &k, full), 0);
    uint32_t k2 = 100000 + round;
    on_slot(f.dom(), 1, [&] {
      uint64_t one = 1;
      ASSERT_EQ(m->ops->update_elem(m, &k2, &one, kBpfNoexist), 0);
    });
    ASSERT_EQ(all(m, k2), (std::vector<uint64_t>{0, 1, 0})) << "round " << round;
  }
  expect_consistent(m);
}

INSTANTIATE_TEST_SUITE_P(Modes, LruPercpuValues, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "PercpuLists" : "CommonList";
                         });

// ---- concurrency -------------------------------------------------------------

// Program runs, host threads and signal handlers (programs run inside them,
// on the interrupted thread) update, delete and look up keys of a map four
// times larger than max_entries, so inserts keep evicting, while a stalled
// run makes the pool run dry now and then. Nothing may
// crash or deadlock (the nested operations only try-lock), a program never
// sees a value of another key in an element that was not reused, every
// answer is one the errno table allows, and at the end the LRU's lists and
// the table agree (expect_consistent) and the pool's counts balance.
// USERBPF_STRESS_SECONDS=N runs longer.
constexpr uint32_t kStressEntries = 256;
constexpr uint32_t kStressKeys = 1024;

struct StressValue {
  uint64_t key, not_key, key3;
};
StressValue value_of(uint32_t k) {
  return {k, ~uint64_t{k}, uint64_t{k} * 3};
}
bool value_ok(const void* p, uint32_t k) {
  const auto* w = static_cast<const uint64_t*>(p);
  return __atomic_load_n(&w[0], __ATOMIC_RELAXED) == k &&
         __atomic_load_n(&w[1], __ATOMIC_RELAXED) == ~uint64_t{k} &&
         __atomic_load_n(&w[2], __ATOMIC_RELAXED) == uint64_t{k} * 3;
}
bool value_zero(const void* p) {
  const auto* w = static_cast<const uint64_t*>(p);
  return (__atomic_load_n(&w[0], __ATOMIC_RELAXED) | __atomic_load_n(&w[1], __ATOMIC_RELAXED) |
          __atomic_load_n(&w[2], __ATOMIC_RELAXED)) == 0;
}
// A copy of a per-CPU value may be read while its CPU's program (or the
// host) rewrites it in place, word by word: each 8-byte word must be k's or
// zero (copies an insert skipped), never torn and never another key's.
bool words_ok(const void* p, uint32_t k) {
  const auto* w = static_cast<const uint64_t*>(p);
  const uint64_t want[3] = {k, ~uint64_t{k}, uint64_t{k} * 3};
  for (int i = 0; i < 3; i++) {
    const uint64_t x = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
    if (x != 0 && x != want[i]) return false;
  }
  return true;
}
// What a reader of k's element may see in one copy: LRU_HASH values are
// written whole before the element is linked; per-CPU copies word by word.
bool copy_ok(const void* p, uint32_t k, bool percpu) {
  return percpu ? words_ok(p, k) : value_ok(p, k);
}
bool rc_ok(long rc) {
  return rc == 0 || rc == -ENOENT || rc == -EEXIST || rc == -ENOMEM || rc == -EBUSY;
}

struct StressShared {
  Map* map = nullptr;
  mem::MemDomain* dom = nullptr;
  std::atomic<uint64_t> handler_runs{0}, handler_misses{0}, bad{0}, ops{0}, nomem{0};
};
StressShared g_stress;

// Whether no insert reused an evicted element at once (the pool had no
// element ready: lru_list.h) since `before`, read before the lookup. Only
// then must a reader see its key's bytes; else it may legitimately see
// another key's (the kernel's LRU reuses elements at once always).
bool no_reuse_since(Map* m, uint64_t before) {
  std::atomic_thread_fence(std::memory_order_acquire);
  return testing::lru_reused_at_once(m) == before;
}

// A program's lookup of k, checked (copy_ok) in every copy.
void checked_lookup(Map* m, uint32_t k) {
  const uint64_t before = testing::lru_reused_at_once(m);
  void* p = m->ops->lookup_percpu_elem ? m->ops->lookup_percpu_elem(m, &k, 0)
                                       : m->ops->lookup_elem(m, &k);
  if (!p) return;
  bool ok = true;
  const uint32_t n = map_num_cpus(m);
  for (uint32_t c = 0; c < n; c++)
    ok = ok && copy_ok(static_cast<char*>(p) + size_t{c} * sizeof(StressValue), k, n > 1);
  if (!ok && no_reuse_since(m, before)) g_stress.bad.fetch_add(1, std::memory_order_relaxed);
}

long program_update(Map* m, uint32_t k, uint64_t flags) {
  StressValue v = value_of(k);
  return m->ops->update_elem(m, &k, &v, flags);
}

void on_stress_signal(int) {
  int saved_errno = errno;
  StressShared& s = g_stress;
  mem::SlotGuard g(s.dom->slots, mem::EnterMode::kNoWait);
  if (!g.ok()) {
    s.handler_misses.fetch_add(1, std::memory_order_relaxed);
    errno = saved_errno;
    return;
  }
  s.handler_runs.fetch_add(1, std::memory_order_relaxed);
  static thread_local uint64_t x = 0x9e3779b97f4a7c15ull;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  uint32_t k = static_cast<uint32_t>(x % kStressKeys);
  checked_lookup(s.map, k);
  long rc = program_update(s.map, k, 0);
  if (!rc_ok(rc)) s.bad.fetch_add(1, std::memory_order_relaxed);
  uint32_t k2 = static_cast<uint32_t>((x >> 20) % kStressKeys);
  rc = s.map->ops->delete_elem(s.map, &k2);
  if (!rc_ok(rc)) s.bad.fetch_add(1, std::memory_order_relaxed);
  errno = saved_errno;
}

double stress_seconds() {
  const char* e = std::getenv("USERBPF_STRESS_SECONDS");
  double s = e ? std::atof(e) : 0;
  return s > 0 ? s : 0.6;
}

class LruHashStress : public ::testing::TestWithParam<std::tuple<MapType, bool>> {};

TEST_P(LruHashStress, ProgramsHostAndSignalsKeepListsAndTableInStep) {
  const MapType type = std::get<0>(GetParam());
  PercpuFixture f(3);
  Map* m = f.create(f.attr(type, 4, sizeof(StressValue), kStressEntries,
                           std::get<1>(GetParam()) ? kBpfFNoCommonLru : 0));
  ASSERT_TRUE(m);
  HashMap* h = to_htab(m);
  g_stress.map = m;
  g_stress.dom = &f.dom();
  g_stress.handler_runs = g_stress.handler_misses = g_stress.bad = g_stress.ops = 0;
  g_stress.nomem = 0;
  const uint32_t ncpus = map_num_cpus(m);

  userbpf::test::ScopedSignal handler_scope(SIGUSR2, on_stress_signal);
  ASSERT_TRUE(handler_scope.ok());

  std::atomic<bool> stop{false};
  auto count_rc = [](long rc) {
    if (!rc_ok(rc)) g_stress.bad++;
    if (rc == -ENOMEM) g_stress.nomem++;
  };
  // Program runs: a slot held for a few operations.
  auto program = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      mem::SlotGuard g(f.dom().slots);
      for (int i = 0; i < 8; i++) {
        uint32_t k = rng() % kStressKeys;
        switch (rng() % 5) {
          case 0:
          case 1:
            count_rc(program_update(m, k, rng() % 3));
            break;
          case 2:
            count_rc(m->ops->delete_elem(m, &k));
            break;
          default:
            checked_lookup(m, k);
        }
        g_stress.ops.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };
  // The host: updates of every copy, lookups, lookup_and_delete, batches.
  auto host = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<StressValue> buf(ncpus);
    std::vector<uint32_t> bkeys(64);
    std::vector<StressValue> bvals(size_t{64} * ncpus);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % kStressKeys;
      switch (rng() % 6) {
        case 0:
        case 1:
          for (auto& v : buf) v = value_of(k);
          count_rc(m->ops->update_elem_copy ? m->ops->update_elem_copy(m, &k, buf.data(), 0)
                                            : m->ops->update_elem(m, &k, buf.data(), 0));
          break;
        case 2: {
          const uint64_t before = testing::lru_reused_at_once(m);
          if (m->ops->lookup_elem_copy(m, &k, buf.data(), 0) == 0)
            for (auto& v : buf)
              if (!copy_ok(&v, k, ncpus > 1) && no_reuse_since(m, before)) g_stress.bad++;
          break;
        }
        case 3:
          count_rc(m->ops->lookup_and_delete_elem(m, &k, buf.data(), 0));
          break;
        case 4: {
          uint32_t cursor = rng() % h->n_buckets, out = 0;
          BatchArgs b{&cursor, &out, bkeys.data(), bvals.data(), 64, 0, 0};
          int rc = m->ops->lookup_batch(m, b);
          if (rc && rc != -ENOENT && rc != -ENOSPC) g_stress.bad++;
          for (uint32_t j = 0; j < b.count; j++)
            for (uint32_t c = 0; c < ncpus; c++)
              if (!copy_ok(&bvals[size_t{j} * ncpus + c], bkeys[j], ncpus > 1)) g_stress.bad++;
          break;
        }
        default:
          count_rc(m->ops->delete_elem(m, &k));
      }
      g_stress.ops.fetch_add(1, std::memory_order_relaxed);
    }
  };
  // A run that sleeps while it holds its slot (a preempted program): grace
  // periods stall, the pool's spare elements run out, and inserts reuse
  // evicted elements at once while readers look on.
  // It holds on until an insert has reused an element (at most 300 ms, for
  // slow sanitizer builds), then lets a grace period pass.
  auto staller = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      {
        mem::SlotGuard g(f.dom().slots);
        const uint64_t before = testing::lru_reused_at_once(m);
        for (int ms = 0; ms < 300 && !stop.load(std::memory_order_relaxed) &&
                         testing::lru_reused_at_once(m) == before;
             ms++) {
          checked_lookup(m, ms % kStressKeys);
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < 3; i++) threads.emplace_back(program, 100 + i);
  threads.emplace_back(host, 200);
  threads.emplace_back(staller);
  std::vector<pthread_t> ids;
  for (auto& t : threads) ids.push_back(t.native_handle());
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, std::chrono::microseconds(50));
  std::this_thread::sleep_for(std::chrono::duration<double>(stress_seconds()));
  stop = true;
  kicker.stop();
  for (auto& t : threads) t.join();

  EXPECT_EQ(g_stress.bad.load(), 0u);
  EXPECT_GT(g_stress.handler_runs.load(), 0u);
  std::printf(
      "[ stress  ] ops %llu handler runs %llu misses %llu ENOMEM %llu reused at once %llu\n",
      static_cast<unsigned long long>(g_stress.ops.load()),
      static_cast<unsigned long long>(g_stress.handler_runs.load()),
      static_cast<unsigned long long>(g_stress.handler_misses.load()),
      static_cast<unsigned long long>(g_stress.nomem.load()),
      static_cast<unsigned long long>(testing::lru_reused_at_once(m)));
  expect_consistent(m);
  std::set<uint32_t> keys = all_keys(m);
  EXPECT_EQ(keys.size(), count_of(m));
  std::vector<StressValue> buf(ncpus);
  for (uint32_t k : keys) {
    ASSERT_EQ(m->ops->lookup_elem_copy(m, &k, buf.data(), 0), 0);
    for (auto& v : buf) EXPECT_TRUE(value_ok(&v, k) || (ncpus > 1 && value_zero(&v))) << k;
  }
  // Every element is live, on its way to the free list, or free.
  h->pool.reclaim_host();
  EXPECT_EQ(h->pool.waiting(), 0u);
  EXPECT_LE(h->pool.carved(), h->pool.capacity());
}

INSTANTIATE_TEST_SUITE_P(Types, LruHashStress, ::testing::Combine(kLruTypes, ::testing::Bool()),
                         lru_param_name);

}  // namespace
}  // namespace userbpf::maps
