// Hash maps under MapAttr::memory_limit: every byte is charged, updates past
// the limit fail with ENOMEM from programs and from the host, and nothing
// already stored is lost or changed.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
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

// Preallocated map with a limit that fits exactly what creation commits:
// churn inside one read-side section (a long program run) needs elements
// beyond the preallocated ones; past the limit, ENOMEM; after the section,
// the waiting elements are reused and nothing was lost.
TEST(HashMemLimit, PreallocChurnInsideSectionHitsLimit) {
  const uint32_t n = 256;
  MapAttr a = make_attr(MapType::kHASH, 4, sizeof(Value), n);
  uint64_t need = 0;
  {
    MapPtr probe = test::must_create(a);
    ASSERT_TRUE(probe);
    need = probe->memory_used.load();
  }
  a.memory_limit = need;
  MapPtr m = test::must_create(a);
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
  EXPECT_EQ(map->memory_used.load(), need);
  expect_all_stored(map, 0, n);
  // Outside the section: grace period over, updates succeed again.
  for (uint32_t k = 0; k < n; k++) {
    Value v = value_of(k);
    ASSERT_EQ(map->ops->update_elem(map, &k, &v, kBpfExist), 0) << k;
  }
  expect_all_stored(map, 0, n);
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
