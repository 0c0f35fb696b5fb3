// Tests of the hash map's batch operations against the kernel's semantics
// (hashtab.c __htab_map_lookup_and_delete_batch, syscall.c generic
// update/delete batch).
#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <vector>

#include "map_test_util.h"
#include "maps/hash_map.h"

namespace userbpf::maps {
namespace {

using test::make_attr;
using test::must_create;

class HashBatch : public ::testing::TestWithParam<uint32_t> {
 protected:
  MapPtr create(uint32_t max_entries) {
    return must_create(make_attr(MapType::kHASH, 4, 8, max_entries, GetParam()));
  }
  // Keys grouped by bucket, searching k = 0, 1, 2, ...
  static std::map<uint32_t, std::vector<uint32_t>> keys_by_bucket(Map* m, uint32_t how_many) {
    std::map<uint32_t, std::vector<uint32_t>> out;
    for (uint32_t k = 0; k < how_many; k++) out[testing::bucket_of_key(m, &k)].push_back(k);
    return out;
  }
};

TEST_P(HashBatch, ArgumentErrno) {
  MapPtr m = create(16);
  ASSERT_TRUE(m);
  ASSERT_EQ(test::update(m.get(), 1u, uint64_t{1}), 0);
  uint32_t keys[4], out = 77;
  uint64_t values[4];
  for (auto op : {m->ops->lookup_batch, m->ops->lookup_and_delete_batch}) {
    BatchArgs a{nullptr, &out, keys, values, 4, 1, 0};
    EXPECT_EQ(op(m.get(), a), -EINVAL);
    a.elem_flags = kBpfFLock;  // no spin lock in the value
    EXPECT_EQ(op(m.get(), a), -EINVAL);
    a.elem_flags = 0;
    a.flags = 1;
    EXPECT_EQ(op(m.get(), a), -EINVAL);
    a.flags = 0;
    a.count = 0;
    EXPECT_EQ(op(m.get(), a), 0);
    EXPECT_EQ(a.count, 0u);
    EXPECT_EQ(out, 77u);
    // A cursor past the last bucket: ENOENT, nothing written.
    uint32_t past = testing::n_buckets(m.get());
    BatchArgs b{&past, &out, keys, values, 4, 0, 0};
    EXPECT_EQ(op(m.get(), b), -ENOENT);
    EXPECT_EQ(b.count, 0u);
    EXPECT_EQ(out, 77u);
  }
  for (auto op : {m->ops->update_batch, m->ops->delete_batch}) {
    BatchArgs a{nullptr, nullptr, keys, values, 1, 2, 0};
    EXPECT_EQ(op(m.get(), a), -EINVAL);
    a.elem_flags = kBpfFLock;
    EXPECT_EQ(op(m.get(), a), -EINVAL);
    a.elem_flags = 0;
    a.count = 0;
    EXPECT_EQ(op(m.get(), a), 0);
  }
}

TEST_P(HashBatch, EmptyMapIsEnoentWithCursorAtEnd) {
  MapPtr m = create(16);
  ASSERT_TRUE(m);
  uint32_t keys[4], out = 77;
  uint64_t values[4];
  BatchArgs a{nullptr, &out, keys, values, 4, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m.get(), a), -ENOENT);
  EXPECT_EQ(a.count, 0u);
  EXPECT_EQ(out, testing::n_buckets(m.get()));
}

TEST_P(HashBatch, BucketLargerThanRoomIsEnospc) {
  MapPtr m = create(64);
  ASSERT_TRUE(m);
  auto groups = keys_by_bucket(m.get(), 1000);
  // A bucket with two keys; insert only those.
  uint32_t bucket = UINT32_MAX;
  std::vector<uint32_t> pair;
  for (auto& [b, ks] : groups)
    if (ks.size() >= 2) {
      bucket = b;
      pair = {ks[0], ks[1]};
      break;
    }
  ASSERT_NE(bucket, UINT32_MAX);
  for (uint32_t k : pair) ASSERT_EQ(test::update(m.get(), k, uint64_t{k}), 0);
  uint32_t keys[2], out = 77;
  uint64_t values[2];
  BatchArgs a{nullptr, &out, keys, values, 1, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m.get(), a), -ENOSPC);
  EXPECT_EQ(a.count, 0u);
  EXPECT_EQ(out, bucket);
  a.count = 1;
  EXPECT_EQ(m->ops->lookup_and_delete_batch(m.get(), a), -ENOSPC);
  EXPECT_EQ(a.count, 0u);
  uint64_t v;
  for (uint32_t k : pair) EXPECT_EQ(test::lookup(m.get(), k, &v), 0);
  // With room for the bucket: both, then the end.
  BatchArgs b{nullptr, &out, keys, values, 2, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m.get(), b), -ENOENT);
  EXPECT_EQ(b.count, 2u);
  EXPECT_EQ(out, testing::n_buckets(m.get()));
}

TEST_P(HashBatch, StopsBeforeABucketThatDoesNotFit) {
  MapPtr m = create(64);
  ASSERT_TRUE(m);
  auto groups = keys_by_bucket(m.get(), 2000);
  // A single key in a lower bucket, and a pair in a higher one.
  uint32_t single = UINT32_MAX, pair_bucket = UINT32_MAX;
  std::vector<uint32_t> pair;
  for (auto& [b, ks] : groups) {
    if (single == UINT32_MAX) {
      single = ks[0];
      continue;
    }
    if (ks.size() >= 2) {
      pair_bucket = b;
      pair = {ks[0], ks[1]};
      break;
    }
  }
  ASSERT_NE(pair_bucket, UINT32_MAX);
  ASSERT_EQ(test::update(m.get(), single, uint64_t{1}), 0);
  for (uint32_t k : pair) ASSERT_EQ(test::update(m.get(), k, uint64_t{2}), 0);

  uint32_t keys[2], cursor = 0;
  uint64_t values[2];
  BatchArgs a{nullptr, &cursor, keys, values, 2, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m.get(), a), 0);
  EXPECT_EQ(a.count, 1u);
  EXPECT_EQ(keys[0], single);
  EXPECT_EQ(cursor, pair_bucket);  // the next call starts with that bucket
  BatchArgs b{&cursor, &cursor, keys, values, 2, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m.get(), b), -ENOENT);
  EXPECT_EQ(b.count, 2u);
  EXPECT_EQ(values[0], 2u);
  EXPECT_EQ(values[1], 2u);
  EXPECT_TRUE((keys[0] == pair[0] && keys[1] == pair[1]) ||
              (keys[0] == pair[1] && keys[1] == pair[0]));
}

TEST_P(HashBatch, CursorWalkCoversEveryElementOnce) {
  constexpr uint32_t kN = 1000;
  MapPtr m = create(kN);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < kN; k++) ASSERT_EQ(test::update(m.get(), k * 7919, uint64_t{k}), 0);
  std::map<uint32_t, int> seen;
  uint32_t cursor = 0;
  bool first = true;
  int rc, calls = 0;
  do {
    uint32_t keys[64];
    uint64_t values[64];
    BatchArgs a{first ? nullptr : &cursor, &cursor, keys, values, 64, 0, 0};
    rc = m->ops->lookup_batch(m.get(), a);
    ASSERT_TRUE(rc == 0 || rc == -ENOENT) << rc;
    ASSERT_LE(a.count, 64u);
    for (uint32_t i = 0; i < a.count; i++) {
      seen[keys[i]]++;
      EXPECT_EQ(values[i] * 7919, keys[i]);
    }
    first = false;
    ASSERT_LT(++calls, 100);
  } while (rc == 0);
  ASSERT_EQ(seen.size(), kN);
  for (auto& [k, n] : seen) EXPECT_EQ(n, 1) << k;
  EXPECT_EQ(cursor, testing::n_buckets(m.get()));
}

TEST_P(HashBatch, ExactFitStillReachesTheEnd) {
  MapPtr m = create(32);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < 10; k++) ASSERT_EQ(test::update(m.get(), k, uint64_t{k}), 0);
  uint32_t keys[10], cursor = 0;
  uint64_t values[10];
  BatchArgs a{nullptr, &cursor, keys, values, 10, 0, 0};
  // Kernel: after a full buffer it keeps walking empty buckets to the end.
  EXPECT_EQ(m->ops->lookup_batch(m.get(), a), -ENOENT);
  EXPECT_EQ(a.count, 10u);
}

TEST_P(HashBatch, LookupAndDeleteDrainsTheMap) {
  constexpr uint32_t kN = 500;
  MapPtr m = create(kN);
  ASSERT_TRUE(m);
  for (int round = 0; round < 2; round++) {
    for (uint32_t k = 0; k < kN; k++) ASSERT_EQ(test::update(m.get(), k, uint64_t{k + 1}), 0);
    std::vector<bool> seen(kN);
    uint32_t cursor = 0, total = 0;
    bool first = true;
    int rc;
    do {
      uint32_t keys[50];
      uint64_t values[50];
      BatchArgs a{first ? nullptr : &cursor, &cursor, keys, values, 50, 0, 0};
      rc = m->ops->lookup_and_delete_batch(m.get(), a);
      ASSERT_TRUE(rc == 0 || rc == -ENOENT) << rc;
      for (uint32_t i = 0; i < a.count; i++) {
        ASSERT_LT(keys[i], kN);
        EXPECT_FALSE(seen[keys[i]]);
        seen[keys[i]] = true;
        EXPECT_EQ(values[i], keys[i] + 1u);
      }
      total += a.count;
      first = false;
    } while (rc == 0);
    EXPECT_EQ(total, kN);
    uint32_t next;
    EXPECT_EQ(m->ops->get_next_key(m.get(), nullptr, &next), -ENOENT);
  }
}

TEST_P(HashBatch, UpdateBatchStopsAtFirstError) {
  MapPtr m = create(3);
  ASSERT_TRUE(m);
  uint32_t keys[5] = {1, 2, 3, 4, 5};
  uint64_t values[5] = {10, 20, 30, 40, 50};
  BatchArgs a{nullptr, nullptr, keys, values, 5, 0, 0};
  EXPECT_EQ(m->ops->update_batch(m.get(), a), -E2BIG);
  EXPECT_EQ(a.count, 3u);
  uint64_t v;
  EXPECT_EQ(test::lookup(m.get(), 3u, &v), 0);
  EXPECT_EQ(v, 30u);
  EXPECT_EQ(test::lookup(m.get(), 4u, &v), -ENOENT);
}

TEST_P(HashBatch, DeleteBatchStopsAtFirstError) {
  MapPtr m = create(8);
  ASSERT_TRUE(m);
  for (uint32_t k = 1; k <= 4; k++) ASSERT_EQ(test::update(m.get(), k, uint64_t{k}), 0);
  uint32_t keys[4] = {1, 2, 99, 3};
  BatchArgs a{nullptr, nullptr, keys, nullptr, 4, 0, 0};
  EXPECT_EQ(m->ops->delete_batch(m.get(), a), -ENOENT);
  EXPECT_EQ(a.count, 2u);
  uint64_t v;
  EXPECT_EQ(test::lookup(m.get(), 1u, &v), -ENOENT);
  EXPECT_EQ(test::lookup(m.get(), 3u, &v), 0);
  EXPECT_EQ(test::lookup(m.get(), 4u, &v), 0);
}

INSTANTIATE_TEST_SUITE_P(Prealloc, HashBatch, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

}  // namespace
}  // namespace userbpf::maps
