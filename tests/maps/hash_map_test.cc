// Tests of BPF_MAP_TYPE_HASH (preallocated and BPF_F_NO_PREALLOC) against
// the kernel's errno and semantics (SPEC.md section 2, kernel/bpf/hashtab.c).
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "map_test_util.h"
#include "maps/hash_map.h"
#include "maps/map_internal.h"

namespace userbpf::maps {
namespace {

using test::create_errno;
using test::make_attr;
using test::must_create;

MapAttr hash_attr(uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                  uint32_t flags = 0) {
  return make_attr(MapType::kHASH, key_size, value_size, max_entries, flags);
}

TEST(HashMapCreate, AllocCheckErrno) {
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1)), 0);
  EXPECT_EQ(create_errno(hash_attr(0, 4, 1)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 0, 1)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 4, 0)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1, kBpfFMmapable)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1, kBpfFInnerMap)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1, kBpfFNoCommonLru)), EINVAL);  // not an LRU map
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1, 1u << 20)), EINVAL);
  EXPECT_EQ(create_errno(hash_attr(4, 4, 1, kBpfFRdonlyProg | kBpfFWronlyProg)), EINVAL);
  for (uint32_t ok : {kBpfFNoPrealloc, kBpfFNumaNode, kBpfFRdonly, kBpfFWronly, kBpfFRdonlyProg,
                      kBpfFWronlyProg, kBpfFZeroSeed})
    EXPECT_EQ(create_errno(hash_attr(4, 4, 1, ok)), 0) << "flag " << ok;
  // key_size + value_size >= KMALLOC_MAX_SIZE - sizeof(struct htab_elem)
  EXPECT_EQ(create_errno(hash_attr(4, (4u << 20) - 48 - 4, 1, kBpfFNoPrealloc)), E2BIG);
  EXPECT_EQ(create_errno(hash_attr(4, (4u << 20) - 48 - 5, 1, kBpfFNoPrealloc)), 0);
  EXPECT_EQ(create_errno(hash_attr(4, 4, (1u << 31) + 1, kBpfFNoPrealloc)), E2BIG);
  EXPECT_EQ(create_errno(hash_attr(4, 4, (1u << 28) + 1, kBpfFNoPrealloc)), E2BIG);
}

TEST(HashMapCreate, BucketsArePowerOfTwo) {
  for (uint32_t n : {1u, 2u, 3u, 100u, 1024u, 1025u}) {
    MapPtr m = must_create(hash_attr(4, 4, n));
    ASSERT_TRUE(m);
    uint32_t want = 1;
    while (want < n) want <<= 1;
    EXPECT_EQ(testing::n_buckets(m.get()), want) << n;
  }
}

TEST(HashMapCreate, ZeroSeedIsDeterministic) {
  MapPtr a = must_create(hash_attr(4, 4, 1024, kBpfFZeroSeed));
  MapPtr b = must_create(hash_attr(4, 4, 1024, kBpfFZeroSeed | kBpfFNoPrealloc));
  ASSERT_TRUE(a && b);
  for (uint32_t k = 0; k < 1000; k++)
    EXPECT_EQ(testing::bucket_of_key(a.get(), &k), testing::bucket_of_key(b.get(), &k));
}

TEST(HashMapCreate, RandomSeedsDiffer) {
  MapPtr a = must_create(hash_attr(4, 4, 1 << 16));
  MapPtr b = must_create(hash_attr(4, 4, 1 << 16));
  ASSERT_TRUE(a && b);
  int same = 0;
  for (uint32_t k = 0; k < 64; k++)
    same += testing::bucket_of_key(a.get(), &k) == testing::bucket_of_key(b.get(), &k);
  EXPECT_LT(same, 8);
}

TEST(HashMapCreate, SequentialKeysSpreadEvenly) {
  constexpr uint32_t kN = 1 << 14;
  for (uint32_t flags : {0u, kBpfFZeroSeed}) {
    MapPtr m = must_create(hash_attr(4, 4, kN, flags));
    ASSERT_TRUE(m);
    std::vector<uint32_t> load(kN);
    for (uint32_t k = 0; k < kN; k++) load[testing::bucket_of_key(m.get(), &k)]++;
    uint32_t max_chain = *std::max_element(load.begin(), load.end());
    uint32_t empty = static_cast<uint32_t>(std::count(load.begin(), load.end(), 0u));
    // Random placement of n keys in n buckets: ~n/e empty, longest chain ~7-8.
    EXPECT_LE(max_chain, 12u);
    EXPECT_GT(empty, kN / 4);
    EXPECT_LT(empty, kN / 2);
  }
}

class HashMapTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  MapPtr create(uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                uint32_t extra_flags = 0) {
    return must_create(hash_attr(key_size, value_size, max_entries, GetParam() | extra_flags));
  }
};

TEST_P(HashMapTest, UpdateLookupDeleteErrno) {
  MapPtr m = create(4, 8, 4);
  ASSERT_TRUE(m);
  uint64_t v = 0;
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), -ENOENT);
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{10}, kBpfExist), -ENOENT);
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{10}, kBpfNoexist), 0);
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{11}, kBpfNoexist), -EEXIST);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), 0);
  EXPECT_EQ(v, 10u);
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{12}, kBpfExist), 0);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), 0);
  EXPECT_EQ(v, 12u);
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{13}, kBpfAny), 0);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), 0);
  EXPECT_EQ(v, 13u);
  // Bad flags.
  EXPECT_EQ(test::update(m.get(), 2u, uint64_t{1}, kBpfNoexist | kBpfExist), -EINVAL);
  EXPECT_EQ(test::update(m.get(), 2u, uint64_t{1}, 8), -EINVAL);
  EXPECT_EQ(test::update(m.get(), 2u, uint64_t{1}, kBpfFLock), -EINVAL);  // no spin lock
  EXPECT_EQ(test::update(m.get(), 1u, uint64_t{1}, kBpfFLock | kBpfExist), -EINVAL);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v, kBpfFLock), -EINVAL);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v, 2), -EINVAL);
  // Delete.
  EXPECT_EQ(test::erase(m.get(), 2u), -ENOENT);
  EXPECT_EQ(test::erase(m.get(), 1u), 0);
  EXPECT_EQ(test::erase(m.get(), 1u), -ENOENT);
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), -ENOENT);
  uint32_t k = 1;
  EXPECT_EQ(m->ops->lookup_elem(m.get(), &k), nullptr);
  EXPECT_EQ(m->ops->host_value_size(m.get()), 8u);
}

TEST_P(HashMapTest, FullMapIsE2bigButReplaceWorks) {
  MapPtr m = create(4, 8, 3);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < 3; k++) ASSERT_EQ(test::update(m.get(), k, uint64_t{k}), 0);
  EXPECT_EQ(test::update(m.get(), 7u, uint64_t{7}), -E2BIG);
  EXPECT_EQ(test::update(m.get(), 7u, uint64_t{7}, kBpfNoexist), -E2BIG);
  EXPECT_EQ(test::update(m.get(), 7u, uint64_t{7}, kBpfExist), -ENOENT);
  // Replacing existing keys in a full map never fails, many times over.
  for (uint64_t i = 0; i < 1000; i++) ASSERT_EQ(test::update(m.get(), 1u, i), 0);
  uint64_t v;
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), 0);
  EXPECT_EQ(v, 999u);
  ASSERT_EQ(test::erase(m.get(), 0u), 0);
  EXPECT_EQ(test::update(m.get(), 7u, uint64_t{7}), 0);
  EXPECT_EQ(test::update(m.get(), 8u, uint64_t{8}), -E2BIG);
}

TEST_P(HashMapTest, KeysOfOddSizesAndZeroPadding) {
  for (uint32_t ks : {1u, 3u, 4u, 7u, 8u, 9u, 13u, 16u, 17u, 40u}) {
    MapPtr m = create(ks, 5, 64);
    ASSERT_TRUE(m);
    std::vector<unsigned char> key(ks), val(5);
    for (int i = 0; i < 40; i++) {
      for (uint32_t b = 0; b < ks; b++) key[b] = static_cast<unsigned char>(i * 7 + b);
      for (int b = 0; b < 5; b++) val[b] = static_cast<unsigned char>(i + b);
      ASSERT_EQ(m->ops->update_elem(m.get(), key.data(), val.data(), kBpfNoexist), 0) << ks;
    }
    for (int i = 0; i < 40; i++) {
      for (uint32_t b = 0; b < ks; b++) key[b] = static_cast<unsigned char>(i * 7 + b);
      std::vector<unsigned char> out(5);
      ASSERT_EQ(m->ops->lookup_elem_copy(m.get(), key.data(), out.data(), 0), 0) << ks;
      EXPECT_EQ(out[0], i);
      EXPECT_EQ(out[4], i + 4);
      auto* p = m->ops->lookup_elem(m.get(), key.data());
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u);  // values 8-byte aligned
    }
    // Key 0 with only its last byte changed is a different, missing key.
    for (uint32_t b = 0; b < ks; b++) key[b] = static_cast<unsigned char>(b);
    key[ks - 1] ^= 0x80;
    std::vector<unsigned char> out(5);
    EXPECT_EQ(m->ops->lookup_elem_copy(m.get(), key.data(), out.data(), 0), -ENOENT) << ks;
  }
}

TEST_P(HashMapTest, LookupAndDelete) {
  MapPtr m = create(4, 8, 4);
  ASSERT_TRUE(m);
  ASSERT_EQ(test::update(m.get(), 5u, uint64_t{55}), 0);
  uint32_t k = 5;
  uint64_t v = 0;
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &v, 1), -EINVAL);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &v, kBpfFLock), -EINVAL);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &v, 0), 0);
  EXPECT_EQ(v, 55u);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &v, 0), -ENOENT);
  EXPECT_EQ(test::lookup(m.get(), 5u, &v), -ENOENT);
  // The slot is free again.
  for (uint32_t i = 0; i < 4; i++) EXPECT_EQ(test::update(m.get(), i, uint64_t{i}), 0);
}

// Expected get_next_key order: buckets ascending; within a bucket, newest
// first (elements are linked at the head).
std::vector<uint32_t> expected_order(Map* m, const std::vector<uint32_t>& inserted) {
  std::map<uint32_t, std::vector<uint32_t>> by_bucket;
  for (uint32_t k : inserted)
    by_bucket[testing::bucket_of_key(m, &k)].insert(
        by_bucket[testing::bucket_of_key(m, &k)].begin(), k);
  std::vector<uint32_t> order;
  for (auto& [b, keys] : by_bucket) order.insert(order.end(), keys.begin(), keys.end());
  return order;
}

TEST_P(HashMapTest, GetNextKeyOrderAndWalk) {
  MapPtr m = create(4, 4, 64);
  ASSERT_TRUE(m);
  uint32_t next;
  EXPECT_EQ(m->ops->get_next_key(m.get(), nullptr, &next), -ENOENT);
  std::vector<uint32_t> inserted;
  for (uint32_t k = 100; k < 150; k++) {
    ASSERT_EQ(test::update(m.get(), k, k), 0);
    inserted.push_back(k);
  }
  std::vector<uint32_t> want = expected_order(m.get(), inserted);
  std::vector<uint32_t> got;
  const void* prev = nullptr;
  uint32_t cur;
  while (m->ops->get_next_key(m.get(), prev, &next) == 0) {
    got.push_back(next);
    cur = next;
    prev = &cur;
    ASSERT_LE(got.size(), 50u);
  }
  EXPECT_EQ(got, want);
  // After the last key: ENOENT. A missing key: the first key.
  uint32_t last = want.back();
  EXPECT_EQ(m->ops->get_next_key(m.get(), &last, &next), -ENOENT);
  uint32_t missing = 7;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &missing, &next), 0);
  EXPECT_EQ(next, want.front());
  EXPECT_EQ(m->ops->get_next_key(m.get(), nullptr, &next), 0);
  EXPECT_EQ(next, want.front());
}

TEST_P(HashMapTest, WalkWhileDeletingVisitsEveryKeyOnce) {
  MapPtr m = create(4, 4, 300);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < 300; k++) ASSERT_EQ(test::update(m.get(), k * 3, k), 0);
  // The usual user-space drain: get the first key, delete it, repeat.
  std::set<uint32_t> seen;
  uint32_t next;
  while (m->ops->get_next_key(m.get(), nullptr, &next) == 0) {
    EXPECT_TRUE(seen.insert(next).second);
    ASSERT_EQ(m->ops->delete_elem(m.get(), &next), 0);
  }
  EXPECT_EQ(seen.size(), 300u);
}

struct ForEachState {
  std::set<uint32_t> keys;
  uint64_t sum = 0;
  size_t stop_after = SIZE_MAX;
  bool delete_current = false;
};

uint64_t collect(void* ctx, Map* map, const void* key, void* value) {
  auto* s = static_cast<ForEachState*>(ctx);
  uint32_t k, v;
  std::memcpy(&k, key, 4);
  std::memcpy(&v, value, 4);
  EXPECT_EQ(k * 2, v);
  EXPECT_TRUE(s->keys.insert(k).second);
  s->sum += v;
  if (s->delete_current) EXPECT_EQ(map->ops->delete_elem(map, key), 0);
  return s->keys.size() >= s->stop_after ? 1 : 0;
}

TEST_P(HashMapTest, ForEachElem) {
  MapPtr m = create(4, 4, 100);
  ASSERT_TRUE(m);
  ForEachState empty;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), collect, &empty, 0), 0);
  for (uint32_t k = 0; k < 100; k++) ASSERT_EQ(test::update(m.get(), k, k * 2), 0);
  ForEachState all;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), collect, &all, 0), 100);
  EXPECT_EQ(all.keys.size(), 100u);
  EXPECT_EQ(all.sum, 9900u);
  ForEachState some;
  some.stop_after = 10;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), collect, &some, 0), 10);
  EXPECT_EQ(m->ops->for_each_elem(m.get(), collect, &some, 1), -EINVAL);
  // The callback may delete the element it is given.
  ForEachState del;
  del.delete_current = true;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), collect, &del, 0), 100);
  uint32_t next;
  EXPECT_EQ(m->ops->get_next_key(m.get(), nullptr, &next), -ENOENT);
}

TEST_P(HashMapTest, AccessOk) {
  MapPtr m = create(6, 12, 8);
  ASSERT_TRUE(m);
  unsigned char key[6] = {1, 2, 3, 4, 5, 6};
  unsigned char val[12] = {};
  ASSERT_EQ(m->ops->update_elem(m.get(), key, val, 0), 0);
  auto v = reinterpret_cast<uintptr_t>(m->ops->lookup_elem(m.get(), key));
  const Map* cm = m.get();
  EXPECT_TRUE(m->ops->access_ok(cm, v, 12, true));
  EXPECT_TRUE(m->ops->access_ok(cm, v + 8, 4, true));
  EXPECT_FALSE(m->ops->access_ok(cm, v + 8, 8, false));  // past value_size
  EXPECT_FALSE(m->ops->access_ok(cm, v - 1, 1, false));  // key padding
  EXPECT_FALSE(m->ops->access_ok(cm, 0x1000, 4, false));
  EXPECT_FALSE(m->ops->access_ok(cm, reinterpret_cast<uintptr_t>(val), 4, false));
  // The key (for_each callbacks get it) is readable, not writable.
  struct KeyProbe {
    uintptr_t key = 0;
  } probe;
  m->ops->for_each_elem(
      m.get(),
      [](void* ctx, Map*, const void* k, void*) -> uint64_t {
        static_cast<KeyProbe*>(ctx)->key = reinterpret_cast<uintptr_t>(k);
        return 1;
      },
      &probe, 0);
  ASSERT_NE(probe.key, 0u);
  EXPECT_EQ(std::memcmp(reinterpret_cast<void*>(probe.key), key, 6), 0);
  EXPECT_TRUE(m->ops->access_ok(cm, probe.key, 6, false));
  EXPECT_FALSE(m->ops->access_ok(cm, probe.key, 6, true));
  EXPECT_FALSE(m->ops->access_ok(cm, probe.key, 7, false));
  // A deleted element's value stays mapped memory of the map.
  ASSERT_EQ(m->ops->delete_elem(m.get(), key), 0);
  EXPECT_TRUE(m->ops->access_ok(cm, v, 12, false));
  EXPECT_EQ(m->ops->direct_value_addr, nullptr);

  MapPtr ro = create(4, 8, 2, kBpfFRdonlyProg);
  ASSERT_TRUE(ro);
  ASSERT_EQ(test::update(ro.get(), 1u, uint64_t{1}), 0);
  uint32_t k = 1;
  auto rv = reinterpret_cast<uintptr_t>(ro->ops->lookup_elem(ro.get(), &k));
  EXPECT_TRUE(ro->ops->access_ok(ro.get(), rv, 8, false));
  EXPECT_FALSE(ro->ops->access_ok(ro.get(), rv, 8, true));
}

TEST_P(HashMapTest, MemoryLimitKeepsStoredElements) {
  // Buckets take 64 KiB, all elements would take ~400 KiB.
  MapAttr a = hash_attr(4, 64, 4096, GetParam());
  a.memory_limit = 256 * 1024;
  auto r = create_map(a);
  if (GetParam() == 0) {
    // Preallocating every element does not fit: creation fails.
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ENOMEM);
    return;
  }
  ASSERT_TRUE(r.ok()) << r.error().message;
  MapPtr m(r.value());
  uint32_t stored = 0;
  std::vector<uint64_t> val(8);
  long rc = 0;
  for (uint32_t k = 0; k < 4096; k++) {
    val[0] = k;
    rc = m->ops->update_elem(m.get(), &k, val.data(), 0);
    if (rc) break;
    stored++;
  }
  EXPECT_EQ(rc, -ENOMEM);
  EXPECT_GT(stored, 1000u);
  EXPECT_LT(stored, 4096u);
  EXPECT_LE(m->memory_used.load(), a.memory_limit);
  // Nothing stored was lost, and a failed replacement keeps the old value.
  for (uint32_t k = 0; k < stored; k++) {
    ASSERT_EQ(m->ops->lookup_elem_copy(m.get(), &k, val.data(), 0), 0) << k;
    ASSERT_EQ(val[0], k);
  }
  uint32_t k0 = 0;
  val[0] = 12345;
  long replace = m->ops->update_elem(m.get(), &k0, val.data(), kBpfExist);
  EXPECT_TRUE(replace == 0 || replace == -ENOMEM) << replace;
  ASSERT_EQ(m->ops->lookup_elem_copy(m.get(), &k0, val.data(), 0), 0);
  EXPECT_EQ(val[0], replace == 0 ? 12345u : 0u);
  // Deleting makes room again.
  uint32_t k1 = 1;
  ASSERT_EQ(m->ops->delete_elem(m.get(), &k1), 0);
  uint32_t fresh = 500000;
  EXPECT_EQ(m->ops->update_elem(m.get(), &fresh, val.data(), 0), 0);
}

TEST_P(HashMapTest, MemoryChargedForElements) {
  MapPtr m = create(8, 56, 10000);
  ASSERT_TRUE(m);
  uint64_t before = m->memory_used.load();
  if (GetParam() == 0) {
    EXPECT_GE(before, 10000u * (24 + 8 + 56));  // the whole block at creation
  } else {
    EXPECT_LT(before, 10000u * (24 + 8 + 56));
    std::vector<unsigned char> v(56);
    for (uint64_t k = 0; k < 10000; k++)
      ASSERT_EQ(m->ops->update_elem(m.get(), &k, v.data(), 0), 0);
    EXPECT_GE(m->memory_used.load(), before + 10000u * (24 + 8 + 56));
  }
}

INSTANTIATE_TEST_SUITE_P(Prealloc, HashMapTest, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

}  // namespace
}  // namespace userbpf::maps
