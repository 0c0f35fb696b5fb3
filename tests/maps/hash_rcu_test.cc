// Hash map elements and grace periods: a reader holding a slot keeps seeing
// the bytes it looked up while other threads delete the element and churn
// the map, and the memory is reused once the reader has left.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "map_test_util.h"
#include "maps/hash_map.h"
#include "maps/hash_map_internal.h"
#include "maps/special_fields.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

using test::make_attr;
using test::must_create;

constexpr uint32_t kWords = 8;
struct Value {
  uint64_t w[kWords];
  static Value of(uint64_t x) {
    Value v;
    for (uint32_t i = 0; i < kWords; i++) v.w[i] = x * 0x9e3779b97f4a7c15ull + i;
    return v;
  }
};

Value read_value(const void* p) {
  Value v;
  const auto* w = static_cast<const uint64_t*>(p);
  for (uint32_t i = 0; i < kWords; i++) v.w[i] = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
  return v;
}

bool same(const Value& a, const Value& b) {
  for (uint32_t i = 0; i < kWords; i++)
    if (a.w[i] != b.w[i]) return false;
  return true;
}

// Host churn: insert and delete keys [base, base + span) ops times.
void churn(Map* m, uint32_t base, uint32_t span, uint32_t ops) {
  for (uint32_t i = 0; i < ops; i++) {
    uint32_t k = base + i % span;
    Value v = Value::of(k + i);
    ASSERT_EQ(m->ops->update_elem(m, &k, &v, 0), 0) << "op " << i;
    ASSERT_EQ(m->ops->delete_elem(m, &k), 0) << "op " << i;
  }
}

// Elements the map's storage holds ready or waiting, after every grace
// period and background pass so far has completed.
void settle(HashMap* h) {
  mem::MemDomain& d = *h->dom;
  if (h->ma) {
    h->ma->flush();
    ASSERT_TRUE(d.rcu.synchronize_rcu(mem::RcuFlavor::kBoth).ok());
    h->ma->flush();
    h->ma->flush();
  } else {
    h->pool.reclaim_host();
  }
}

class HashRcu : public ::testing::TestWithParam<uint32_t> {};

TEST_P(HashRcu, ReaderKeepsDeletedElementUntilItLeaves) {
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, sizeof(Value), 64, GetParam()));
  ASSERT_TRUE(m);
  Map* map = m.get();
  HashMap* h = to_htab(map);
  mem::MemDomain& dom = mem::default_mem_domain();
  ASSERT_EQ(h->dom, &dom);
  uint32_t key = 1;
  Value orig = Value::of(42);
  ASSERT_EQ(map->ops->update_elem(map, &key, &orig, 0), 0);

  std::atomic<int> phase{0};  // 1: reader holds the pointer; 2: writer done
  Value seen{};
  uint32_t seq_before = 0, seq_after = 0;
  bool found = false;
  std::thread reader([&] {
    mem::SlotGuard g(dom.slots);  // a program run: a read-side section
    ASSERT_TRUE(g.ok());
    void* p = map->ops->lookup_elem(map, &key);
    found = p != nullptr;
    if (!p) {
      phase = 1;
      return;
    }
    seq_before = testing::elem_seq_of_value(map, p);
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
    seen = read_value(p);
    seq_after = testing::elem_seq_of_value(map, p);
  });
  while (phase.load() != 1) std::this_thread::yield();
  ASSERT_TRUE(found);
  // Delete the key and churn far more elements than the map holds: without
  // the grace period the reader's element would be reused many times over.
  ASSERT_EQ(map->ops->delete_elem(map, &key), 0);
  churn(map, 100, 50, 3000);
  // The same key comes back in another element.
  Value fresh = Value::of(7);
  ASSERT_EQ(map->ops->update_elem(map, &key, &fresh, 0), 0);
  phase = 2;
  reader.join();
  EXPECT_TRUE(same(seen, orig)) << "the reader's element was reused before it left";
  EXPECT_EQ(seq_before, seq_after);
  Value now{};
  ASSERT_EQ(map->ops->lookup_elem_copy(map, &key, &now, 0), 0);
  EXPECT_TRUE(same(now, fresh));
  EXPECT_EQ(h->count.load(), 1u);

  // After a grace period the memory is reused: a second churn, settled in
  // steps, needs (almost) no new memory.
  settle(h);
  uint64_t used1 = map->memory_used.load();
  uint64_t carved1 = h->ma ? h->ma->stats().carved : h->pool.carved();
  for (int round = 0; round < 30; round++) {
    churn(map, 100, 50, 100);
    settle(h);
  }
  uint64_t carved2 = h->ma ? h->ma->stats().carved : h->pool.carved();
  if (h->ma) {
    // A slab or two of slack for what the slot caches hold meanwhile.
    EXPECT_LE(map->memory_used.load(), used1 + 2 * h->ma->slab_bytes());
    mem::MemAllocStats st = h->ma->stats();
    EXPECT_EQ(st.rcu_waiting, 0u);
    EXPECT_EQ(st.in_use, h->count.load());  // allocation counts balance
  } else {
    EXPECT_EQ(carved2, carved1) << "freed elements were not reused";
    EXPECT_EQ(map->memory_used.load(), used1);
    EXPECT_EQ(h->pool.waiting(), 0u);
  }
}

TEST_P(HashRcu, ReplacedValueStaysForReaderInSameSection) {
  // One thread, one section: update replaces the element; the old pointer
  // still shows the old value, a fresh lookup the new one.
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, sizeof(Value), 4, GetParam()));
  ASSERT_TRUE(m);
  Map* map = m.get();
  mem::MemDomain& dom = mem::default_mem_domain();
  uint32_t key = 3;
  Value a = Value::of(1), b = Value::of(2);
  ASSERT_EQ(map->ops->update_elem(map, &key, &a, 0), 0);
  {
    mem::SlotGuard g(dom.slots);
    void* old_p = map->ops->lookup_elem(map, &key);
    ASSERT_NE(old_p, nullptr);
    // Program context never refills the no-prealloc caches inline: a few
    // replacements fit what a slot's cache starts with.
    const int reps = GetParam() ? 2 : 200;
    for (int i = 0; i < reps; i++) {
      Value v = Value::of(1000 + i);
      ASSERT_EQ(map->ops->update_elem(map, &key, i + 1 == reps ? &b : &v, kBpfExist), 0);
    }
    EXPECT_TRUE(same(read_value(old_p), a));
    void* new_p = map->ops->lookup_elem(map, &key);
    ASSERT_NE(new_p, nullptr);
    EXPECT_NE(new_p, old_p);
    EXPECT_TRUE(same(read_value(new_p), b));
  }
}

TEST_P(HashRcu, PreallocNeverE2bigWhileElementsWait) {
  // A full map whose deleted elements all wait for a grace period (a reader
  // holds one): delete + insert must still succeed, never E2BIG.
  const uint32_t n = 32;
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 8, n, GetParam()));
  ASSERT_TRUE(m);
  Map* map = m.get();
  for (uint32_t k = 0; k < n; k++) ASSERT_EQ(test::update(map, k, uint64_t{k}), 0);
  std::atomic<int> phase{0};
  std::thread reader([&] {
    mem::SlotGuard g(mem::default_mem_domain().slots);
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
  });
  while (phase.load() != 1) std::this_thread::yield();
  for (uint32_t i = 0; i < 2000; i++) {
    uint32_t k = i % n;
    ASSERT_EQ(test::erase(map, k), 0);
    ASSERT_EQ(test::update(map, k, uint64_t{i}), 0) << i;
  }
  uint32_t extra = 1000;
  EXPECT_EQ(test::update(map, extra, uint64_t{1}), -E2BIG);  // the map itself is full
  phase = 2;
  reader.join();
  EXPECT_EQ(to_htab(map)->count.load(), n);
}

TEST_P(HashRcu, HostOpsInsideAnOuterSectionUseIt) {
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 8, 16, GetParam()));
  ASSERT_TRUE(m);
  Map* map = m.get();
  mem::MemDomain& dom = mem::default_mem_domain();
  for (uint32_t k = 0; k < 8; k++) ASSERT_EQ(test::update(map, k, uint64_t{k}), 0);
  mem::SlotGuard g(dom.slots);
  ASSERT_TRUE(g.ok());
  uint64_t misses = dom.slots.misses();
  // One element fits what a slot's cache starts with (no inline refill
  // inside a section, as in a program).
  ASSERT_EQ(test::update(map, 8u, uint64_t{8}), 0);
  uint64_t v = 0;
  ASSERT_EQ(test::lookup(map, 3u, &v), 0);
  EXPECT_EQ(v, 3u);
  uint32_t next = 0;
  EXPECT_EQ(map->ops->get_next_key(map, nullptr, &next), 0);
  EXPECT_EQ(test::erase(map, 3u), 0);
  EXPECT_EQ(dom.slots.misses(), misses);  // no nested claim was needed
  EXPECT_EQ(dom.slots.held_slot(), g.slot());
}

INSTANTIATE_TEST_SUITE_P(Modes, HashRcu, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

// Special fields (here a 4-byte field at offset 8): host copies never touch
// them, a new element starts with them zero, and deleting or replacing an
// element releases (clears) them even though readers may still see it.
TEST_P(HashRcu, SpecialFieldsZeroedAndReleased) {
  MapAttr a = make_attr(MapType::kHASH, 4, 24, 16, GetParam());
  auto ft = std::make_shared<FieldTable>();
  ft->fields.push_back(SpecialField{FieldKind::kSpinLock, 8, 4});
  a.fields = ft;
  MapPtr m = must_create(a);
  ASSERT_TRUE(m);
  Map* map = m.get();
  uint32_t key = 5;
  uint64_t in[3] = {0x1111, ~0ull, 0x3333};
  ASSERT_EQ(map->ops->update_elem(map, &key, in, 0), 0);
  mem::SlotGuard g(mem::default_mem_domain().slots);
  auto* p = static_cast<unsigned char*>(map->ops->lookup_elem(map, &key));
  ASSERT_NE(p, nullptr);
  uint32_t field;
  std::memcpy(&field, p + 8, 4);
  EXPECT_EQ(field, 0u);  // zeroed, not copied from the host
  EXPECT_EQ(std::memcmp(p + 12, reinterpret_cast<unsigned char*>(in) + 12, 4), 0);
  // A program sets the field; host copies show zeros there.
  __atomic_store_n(reinterpret_cast<uint32_t*>(p + 8), 0xabcdu, __ATOMIC_RELAXED);
  uint64_t out[3];
  ASSERT_EQ(map->ops->lookup_elem_copy(map, &key, out, 0), 0);
  EXPECT_EQ(out[0], 0x1111u);
  EXPECT_EQ(out[1], 0xffffffff00000000ull);
  EXPECT_EQ(out[2], 0x3333u);
  // Replacing releases the old element's fields; a spin lock holds nothing
  // and stays as it is (a program may still hold it: the kernel's
  // bpf_obj_free_fields), the element keeps its bytes for its readers.
  uint64_t in2[3] = {1, 2, 3};
  ASSERT_EQ(map->ops->update_elem(map, &key, in2, kBpfExist), 0);
  EXPECT_EQ(__atomic_load_n(reinterpret_cast<uint32_t*>(p + 8), __ATOMIC_RELAXED), 0xabcdu);
  EXPECT_EQ(__atomic_load_n(reinterpret_cast<uint64_t*>(p), __ATOMIC_RELAXED), 0x1111u);
  // The new element's lock starts zeroed; deleting leaves it too.
  auto* p2 = static_cast<unsigned char*>(map->ops->lookup_elem(map, &key));
  ASSERT_NE(p2, nullptr);
  EXPECT_EQ(__atomic_load_n(reinterpret_cast<uint32_t*>(p2 + 8), __ATOMIC_RELAXED), 0u);
  __atomic_store_n(reinterpret_cast<uint32_t*>(p2 + 8), 0x77u, __ATOMIC_RELAXED);
  ASSERT_EQ(map->ops->delete_elem(map, &key), 0);
  EXPECT_EQ(__atomic_load_n(reinterpret_cast<uint32_t*>(p2 + 8), __ATOMIC_RELAXED), 0x77u);
  EXPECT_EQ(__atomic_load_n(reinterpret_cast<uint64_t*>(p2), __ATOMIC_RELAXED), 1u);
}

TEST(HashRcuAccessOk, NoPreallocGridMatchesElements) {
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 20, 4096, kBpfFNoPrealloc));
  ASSERT_TRUE(m);
  Map* map = m.get();
  std::vector<uintptr_t> values;
  for (uint32_t k = 0; k < 3000; k++) {
    uint64_t v[3] = {k, k, k};
    ASSERT_EQ(map->ops->update_elem(map, &k, v, 0), 0);
  }
  mem::SlotGuard g(mem::default_mem_domain().slots);
  for (uint32_t k = 0; k < 3000; k++) {
    auto p = reinterpret_cast<uintptr_t>(map->ops->lookup_elem(map, &k));
    ASSERT_NE(p, 0u);
    ASSERT_TRUE(map->ops->access_ok(map, p, 20, true)) << k;
    ASSERT_TRUE(map->ops->access_ok(map, p + 19, 1, true)) << k;
    ASSERT_FALSE(map->ops->access_ok(map, p, 21, false)) << k;     // past the value
    ASSERT_FALSE(map->ops->access_ok(map, p - 1, 1, false)) << k;  // key padding
    ASSERT_TRUE(map->ops->access_ok(map, p - 8, 4, false)) << k;   // the key, read-only
    ASSERT_FALSE(map->ops->access_ok(map, p - 8, 4, true)) << k;
    ASSERT_FALSE(map->ops->access_ok(map, p - 8 - 24, 8, false)) << k;      // element header
    ASSERT_FALSE(map->ops->access_ok(map, p - 8 - 24 - 8, 8, false)) << k;  // allocator header
  }
  EXPECT_FALSE(map->ops->access_ok(map, 4096, 8, false));
  uint64_t local = 0;
  EXPECT_FALSE(map->ops->access_ok(map, reinterpret_cast<uintptr_t>(&local), 8, false));
}

// value_at (the interpreter caches a value found by address as a whole):
// every byte of a value (per-CPU: of each copy) maps to its start, keys,
// padding and headers to 0.
TEST(HashValueAt, FindsTheValueOrCopyHoldingAnAddress) {
  struct Case {
    MapType type;
    uint32_t flags;
  };
  for (const Case& c : {Case{MapType::kHASH, 0}, Case{MapType::kHASH, kBpfFNoPrealloc},
                        Case{MapType::kPERCPU_HASH, 0}}) {
    MapPtr m = must_create(make_attr(c.type, 4, 20, 64, c.flags));
    ASSERT_TRUE(m);
    Map* map = m.get();
    ASSERT_NE(map->ops->value_at, nullptr);
    for (uint32_t k = 0; k < 64; k++) {
      uint64_t v[3] = {k, k, k};
      ASSERT_EQ(map->ops->update_elem(map, &k, v, 0), 0) << k;
    }
    mem::SlotGuard g(mem::default_mem_domain().slots);
    const uint32_t copies = map->ops->lookup_percpu_elem ? 2 : 1;
    for (uint32_t k = 0; k < 64; k++) {
      for (uint32_t cpu = 0; cpu < copies; cpu++) {
        auto p = reinterpret_cast<uintptr_t>(map->ops->lookup_percpu_elem
                                                 ? map->ops->lookup_percpu_elem(map, &k, cpu)
                                                 : map->ops->lookup_elem(map, &k));
        if (p == 0) continue;  // fewer CPUs than copies asked for
        for (uint32_t i = 0; i < 20; i++) ASSERT_EQ(map->ops->value_at(map, p + i), p) << k;
        ASSERT_EQ(map->ops->value_at(map, p + 20), 0u) << k;  // padding
        ASSERT_EQ(map->ops->value_at(map, p - 1), 0u) << k;   // key or copy padding
        if (cpu == 0) {
          ASSERT_EQ(map->ops->value_at(map, p - 8), 0u) << k;  // the key
        } else {
          ASSERT_EQ(map->ops->value_at(map, p - 8), p - 24) << k;  // the copy before
        }
      }
    }
    uint64_t local = 0;
    EXPECT_EQ(map->ops->value_at(map, reinterpret_cast<uintptr_t>(&local)), 0u);
  }
}

}  // namespace
}  // namespace userbpf::maps
