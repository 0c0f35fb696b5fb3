// Hash maps under MapAttr::memory_limit: every byte is charged, updates past
// the limit fail with ENOMEM from programs and from the host, and nothing
// already stored is lost or changed.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "map_test_util.h"
#include "maps/hash_map.h"
#include "maps/hash_map_internal.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

using test::make_attr;

struct Value {
  uint64_t w[8];
};
Value value_of(uint32_t k) {
  Value v;
  for (uint64_t i = 0; i < 8; i++) v.w[i] = k * 1000 + i;
  return v;
}

void expect_all_stored(Map* m, uint32_t first, uint32_t end) {
  for (uint32_t k = first; k < end; k++) {
    Value v{};
    ASSERT_EQ(m->ops->lookup_elem_copy(m, &k, &v, 0), 0) << "key " << k << " was lost";
    for (uint64_t i = 0; i < 8; i++) ASSERT_EQ(v.w[i], k * 1000 + i) << "key " << k;
  }
}

TEST(HashMemLimit, NoPreallocHostAndProgramGetEnomem) {
  MapAttr a = make_attr(MapType::kHASH, 4, sizeof(Value), 16384, kBpfFNoPrealloc);
  a.memory_limit = 1024 * 1024;
  auto r = create_map(a);
  ASSERT_TRUE(r.ok()) << r.error().message;
  MapPtr m(r.value());
  Map* map = m.get();
  uint32_t stored = 0;
  long rc = 0;
  for (uint32_t k = 0; k < 16384; k++) {
    Value v = value_of(k);
    rc = map->ops->update_elem(map, &k, &v, kBpfNoexist);
    if (rc) break;
    stored++;
  }
  EXPECT_EQ(rc, -ENOMEM);
  EXPECT_GT(stored, 2000u);
  EXPECT_LE(map->memory_used.load(), a.memory_limit);
  EXPECT_EQ(to_htab(map)->count.load(), stored);
  expect_all_stored(map, 0, stored);

  // Program context (a run holds a slot): no inline refill, no waiting. The
  // slot's cache may still hold a few elements; then ENOMEM.
  uint32_t prog_stored = 0;
  bool k0_replaced = false;
  {
    mem::SlotGuard g(mem::default_mem_domain().slots);
    ASSERT_TRUE(g.ok());
    rc = 0;
    for (uint32_t k = 500000; k < 501000 && rc == 0; k++) {
      Value v = value_of(k);
      rc = map->ops->update_elem(map, &k, &v, 0);
      if (rc == 0) prog_stored++;
    }
    EXPECT_EQ(rc, -ENOMEM);
    // A failed replacement keeps the old value.
    uint32_t k0 = 0;
    Value nv = value_of(77);
    long rr = map->ops->update_elem(map, &k0, &nv, kBpfExist);
    EXPECT_TRUE(rr == 0 || rr == -ENOMEM) << rr;
    k0_replaced = rr == 0;
    uint32_t k1 = 1;
    EXPECT_EQ(map->ops->delete_elem(map, &k1), 0);
  }
  expect_all_stored(map, 2, stored);
  if (!k0_replaced) expect_all_stored(map, 0, 1);
  expect_all_stored(map, 500000, 500000 + prog_stored);
  // Outside the section the host waits for the grace period and reuses it.
  uint32_t k = 600000;
  Value v = value_of(k);
  EXPECT_EQ(map->ops->update_elem(map, &k, &v, 0), 0);
  expect_all_stored(map, k, k + 1);
  EXPECT_LE(map->memory_used.load(), a.memory_limit);
}

TEST(HashMemLimit, PreallocCreationNeedsItsBlock) {
  MapAttr a = make_attr(MapType::kHASH, 4, sizeof(Value), 4096);
  a.memory_limit = 64 * 1024;
  std::string msg;
  EXPECT_EQ(test::create_errno(a, &msg), ENOMEM);
  EXPECT_NE(msg.find("memory_limit 65536"), std::string::npos) << msg;
}

// The map a describes, with a memory limit of exactly what its creation
// charges (null if it cannot be created).
MapPtr create_at_exact_limit(MapAttr a) {
  uint64_t need = 0;
  {
    MapPtr probe = test::must_create(a);
    if (!probe) return nullptr;
    need = probe->memory_used.load();
  }
  a.memory_limit = need;
  return test::must_create(a);
}

// Preallocated map with a limit that fits exactly what creation commits:
// churn inside one read-side section (a long program run) needs elements
// beyond the preallocated ones; past the limit, ENOMEM; after the section,
// the waiting elements are reused and nothing was lost.
TEST(HashMemLimit, PreallocChurnInsideSectionHitsLimit) {
  const uint32_t n = 256;
  MapAttr a = make_attr(MapType::kHASH, 4, sizeof(Value), n);
  MapPtr m = create_at_exact_limit(a);
  ASSERT_TRUE(m);
  Map* map = m.get();
  for (uint32_t k = 0; k < n; k++) {
    Value v = value_of(k);
    ASSERT_EQ(map->ops->update_elem(map, &k, &v, 0), 0);
  }
  long rc = 0;
  uint32_t done = 0;
  {
    mem::SlotGuard g(mem::default_mem_domain().slots);
    for (uint32_t i = 0; i < 100000 && rc == 0; i++) {
      uint32_t k = i % n;
      Value v = value_of(k);
      rc = map->ops->update_elem(map, &k, &v, kBpfExist);
      if (rc == 0) done++;
    }
  }
  EXPECT_EQ(rc, -ENOMEM);
  EXPECT_GT(done, 0u);
  EXPECT_EQ(map->memory_used.load(), map->attr.memory_limit);
  expect_all_stored(map, 0, n);
  // Outside the section: grace period over, updates succeed again.
  for (uint32_t k = 0; k < n; k++) {
    Value v = value_of(k);
    ASSERT_EQ(map->ops->update_elem(map, &k, &v, kBpfExist), 0) << k;
  }
  expect_all_stored(map, 0, n);
}

// A preallocated map at its memory limit, where every element is needed: a
// program run on slot 0 deleted every key (its slot cache took them) and, in
// its next run, keeps one batch on its cache's free list and more sealed
// while it holds the slot. Inserts from slot 1 (a program: no host retry)
// take what that cache holds; none fails and nothing grows.
TEST(HashMemLimit, InsertsFromOneSlotTakeAnotherSlotsCache) {
  mem::MemDomainOptions o;
  o.num_slots = 2;
  mem::MemDomain dom(o);
  const uint32_t n = 512;
  MapAttr a = make_attr(MapType::kHASH, 4, 8, n);
  a.domain = &dom;
  MapPtr m = create_at_exact_limit(a);
  ASSERT_TRUE(m);
  Map* map = m.get();
  HashMap* h = to_htab(map);
  ASSERT_EQ(h->pool.num_slot_caches(), 4u);
  for (uint32_t k = 0; k < n; k++) ASSERT_EQ(test::update(map, k, uint64_t{k}), 0) << k;
  auto hold = [&](uint32_t slot) {
    while (!dom.slots.try_enter_slot(slot)) sched_yield();
  };
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;
  std::thread run([&] {
    hold(0);
    for (uint32_t k = 0; k < n; k++) EXPECT_EQ(test::erase(map, k), 0) << k;
    dom.slots.leave(0);
    hold(0);
    EXPECT_EQ(test::update(map, n + 1, uint64_t{1}), 0);
    EXPECT_GT(h->pool.cached(), 200u);  // 31 ready, 7 batches sealed
    {
      std::unique_lock lk(mu);
      phase = 1;
      cv.notify_all();
      cv.wait(lk, [&] { return phase == 2; });
    }
    dom.slots.leave(0);
  });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return phase == 1; });
  }
  hold(1);
  for (uint32_t k = 0; k + 1 < n; k++)
    ASSERT_EQ(test::update(map, k, uint64_t{k}), 0) << "insert " << k << " of " << n - 1;
  EXPECT_EQ(test::update(map, n + 2, uint64_t{2}), -E2BIG);
  dom.slots.leave(1);
  {
    std::lock_guard lk(mu);
    phase = 2;
    cv.notify_all();
  }
  run.join();
  EXPECT_EQ(h->count.load(), n);
  EXPECT_EQ(map->memory_used.load(), map->attr.memory_limit);
  h->pool.reclaim_host();
  EXPECT_EQ(h->pool.carved(), n + h->pool.free_elems());  // counts balance
}

TEST(HashMemLimit, EveryByteIsCharged) {
  for (uint32_t flags : {0u, kBpfFNoPrealloc}) {
    MapAttr a = make_attr(MapType::kHASH, 4, sizeof(Value), 1024, flags);
    MapPtr m = test::must_create(a);
    ASSERT_TRUE(m);
    HashMap* h = to_htab(m.get());
    uint64_t parts = sizeof(HashMap) + h->buckets_bytes;
    if (h->ma) {
      for (uint32_t k = 0; k < 1000; k++) {
        Value v = value_of(k);
        ASSERT_EQ(m->ops->update_elem(m.get(), &k, &v, 0), 0);
      }
      parts += h->ma->stats().bytes;
    } else {
      parts += h->pool.committed_bytes();
    }
    EXPECT_GE(m->memory_used.load(), parts) << "flags " << flags;
  }
}

}  // namespace
}  // namespace userbpf::maps
