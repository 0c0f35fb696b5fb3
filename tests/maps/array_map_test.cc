// Tests of BPF_MAP_TYPE_ARRAY against the kernel's errno and semantics
// (SPEC.md section 2, kernel/bpf/arraymap.c, syscall.c generic batch ops).
#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "map_test_util.h"
#include "maps/map_internal.h"

namespace userbpf::maps {
namespace {

using test::create_errno;
using test::make_attr;
using test::must_create;

MapAttr array_attr(uint32_t value_size, uint32_t max_entries, uint32_t flags = 0) {
  return make_attr(MapType::kARRAY, 4, value_size, max_entries, flags);
}

TEST(ArrayMap, AllocCheckErrno) {
  EXPECT_EQ(create_errno(array_attr(4, 1)), 0);
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 8, 4, 1)), EINVAL);  // key_size != 4
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 0, 4, 1)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(0, 1)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 0)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 1, kBpfFNoPrealloc)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 1, kBpfFZeroSeed)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 1, kBpfFNoCommonLru)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 1, 1u << 11)), EINVAL);  // PRESERVE_ELEMS
  EXPECT_EQ(create_errno(array_attr(4, 1, 1u << 20)), EINVAL);
  EXPECT_EQ(create_errno(array_attr(4, 1, kBpfFRdonlyProg | kBpfFWronlyProg)), EINVAL);
  for (uint32_t ok : {kBpfFMmapable, kBpfFRdonly, kBpfFWronly, kBpfFRdonlyProg, kBpfFWronlyProg,
                      kBpfFNumaNode, kBpfFInnerMap})
    EXPECT_EQ(create_errno(array_attr(4, 1, ok)), 0) << "flag " << ok;
  EXPECT_EQ(create_errno(array_attr(static_cast<uint32_t>(INT_MAX) + 1u, 1)), E2BIG);
}

TEST(ArrayMap, ValuesAreZeroedAndEightByteAligned) {
  MapPtr m = must_create(array_attr(12, 5));
  ASSERT_TRUE(m);
  for (uint32_t i = 0; i < 5; i++) {
    auto* v = static_cast<unsigned char*>(m->ops->lookup_elem(m.get(), &i));
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v) % 8, 0u);
    for (int b = 0; b < 12; b++) EXPECT_EQ(v[b], 0);
  }
  uint32_t k0 = 0, k1 = 1;
  auto* v0 = static_cast<char*>(m->ops->lookup_elem(m.get(), &k0));
  auto* v1 = static_cast<char*>(m->ops->lookup_elem(m.get(), &k1));
  EXPECT_EQ(v1 - v0, 16);  // elem size round_up(12, 8)
}

TEST(ArrayMap, UpdateFlagsErrno) {
  MapPtr m = must_create(array_attr(8, 4));
  ASSERT_TRUE(m);
  uint64_t v = 42;
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfAny), 0);
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfExist), 0);
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfNoexist), -EEXIST);
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfNoexist | kBpfExist), -EINVAL);
  EXPECT_EQ(test::update(m.get(), 1u, v, 8), -EINVAL);
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfFLock), -EINVAL);  // no spin lock in the value
  EXPECT_EQ(test::update(m.get(), 4u, v, kBpfAny), -E2BIG);
  EXPECT_EQ(test::update(m.get(), UINT32_MAX, v, kBpfAny), -E2BIG);
  // Kernel order: index before NOEXIST before BPF_F_LOCK.
  EXPECT_EQ(test::update(m.get(), 4u, v, kBpfNoexist), -E2BIG);
  EXPECT_EQ(test::update(m.get(), 4u, v, kBpfFLock), -E2BIG);
  EXPECT_EQ(test::update(m.get(), 1u, v, kBpfFLock | kBpfNoexist), -EEXIST);
  EXPECT_EQ(test::update(m.get(), 4u, v, 8), -EINVAL);
}

TEST(ArrayMap, LookupDeleteAndCopy) {
  MapPtr m = must_create(array_attr(8, 4));
  ASSERT_TRUE(m);
  uint64_t v = 0x1122334455667788ull, out = 0;
  ASSERT_EQ(test::update(m.get(), 3u, v), 0);
  EXPECT_EQ(test::lookup(m.get(), 3u, &out), 0);
  EXPECT_EQ(out, v);
  uint32_t k = 3;
  EXPECT_EQ(*static_cast<uint64_t*>(m->ops->lookup_elem(m.get(), &k)), v);
  k = 4;
  EXPECT_EQ(m->ops->lookup_elem(m.get(), &k), nullptr);
  EXPECT_EQ(test::lookup(m.get(), 4u, &out), -ENOENT);
  EXPECT_EQ(test::lookup(m.get(), 3u, &out, kBpfFLock), -EINVAL);
  EXPECT_EQ(test::lookup(m.get(), 3u, &out, 1), -EINVAL);
  EXPECT_EQ(test::erase(m.get(), 3u), -EINVAL);
  EXPECT_EQ(test::erase(m.get(), 9u), -EINVAL);
  // Kernel: flags checked first, then no lookup_and_delete for arrays.
  k = 3;
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &out, 0), -kEnotsupp);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &out, kBpfFLock), -EINVAL);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m.get(), &k, &out, 1), -EINVAL);
  EXPECT_EQ(m->ops->host_value_size(m.get()), 8u);
}

TEST(ArrayMap, UpdateCopiesOnlyValueSize) {
  MapPtr m = must_create(array_attr(5, 2));
  ASSERT_TRUE(m);
  unsigned char src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint32_t k = 0;
  ASSERT_EQ(m->ops->update_elem(m.get(), &k, src, 0), 0);
  auto* v = static_cast<unsigned char*>(m->ops->lookup_elem(m.get(), &k));
  EXPECT_EQ(std::memcmp(v, src, 5), 0);
  EXPECT_EQ(v[5], 0);
  EXPECT_EQ(v[7], 0);
}

TEST(ArrayMap, GetNextKey) {
  MapPtr m = must_create(array_attr(4, 3));
  ASSERT_TRUE(m);
  uint32_t next = 99;
  EXPECT_EQ(m->ops->get_next_key(m.get(), nullptr, &next), 0);
  EXPECT_EQ(next, 0u);
  uint32_t k = 0;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &k, &next), 0);
  EXPECT_EQ(next, 1u);
  k = 1;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &k, &next), 0);
  EXPECT_EQ(next, 2u);
  k = 2;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &k, &next), -ENOENT);
  k = 3;  // out of range: back to 0
  next = 99;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &k, &next), 0);
  EXPECT_EQ(next, 0u);
  k = UINT32_MAX;
  EXPECT_EQ(m->ops->get_next_key(m.get(), &k, &next), 0);
  EXPECT_EQ(next, 0u);
}

TEST(ArrayMap, AccessOk) {
  MapPtr m = must_create(array_attr(12, 3));
  ASSERT_TRUE(m);
  uint32_t k = 1;
  auto v = reinterpret_cast<uintptr_t>(m->ops->lookup_elem(m.get(), &k));
  const Map* cm = m.get();
  EXPECT_TRUE(m->ops->access_ok(cm, v, 12, true));
  EXPECT_TRUE(m->ops->access_ok(cm, v + 4, 8, false));
  EXPECT_FALSE(m->ops->access_ok(cm, v + 8, 8, false));   // into the padding
  EXPECT_FALSE(m->ops->access_ok(cm, v + 12, 1, false));  // padding
  EXPECT_FALSE(m->ops->access_ok(cm, v - 16 - 1, 1, false));
  EXPECT_FALSE(m->ops->access_ok(cm, v + 32, 1, false));  // past the block (3 * 16)
  EXPECT_TRUE(m->ops->access_ok(cm, v + 16, 12, false));  // element 2
  EXPECT_FALSE(m->ops->access_ok(cm, v, SIZE_MAX, false));

  MapPtr ro = must_create(array_attr(8, 1, kBpfFRdonlyProg));
  ASSERT_TRUE(ro);
  k = 0;
  auto rv = reinterpret_cast<uintptr_t>(ro->ops->lookup_elem(ro.get(), &k));
  EXPECT_TRUE(ro->ops->access_ok(ro.get(), rv, 8, false));
  EXPECT_FALSE(ro->ops->access_ok(ro.get(), rv, 8, true));
}

TEST(ArrayMap, DirectValueAddrOnlyForSingleEntry) {
  MapPtr g = must_create(array_attr(64, 1));
  ASSERT_TRUE(g);
  uint32_t k = 0;
  EXPECT_EQ(g->ops->direct_value_addr(g.get()), g->ops->lookup_elem(g.get(), &k));
  MapPtr m = must_create(array_attr(64, 2));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops->direct_value_addr(m.get()), nullptr);
}

struct Visit {
  std::vector<uint32_t> keys;
  uint32_t stop_at = UINT32_MAX;
};

uint64_t record_key(void* ctx, Map* map, const void* key, void* value) {
  auto* v = static_cast<Visit*>(ctx);
  uint32_t k;
  std::memcpy(&k, key, 4);
  v->keys.push_back(k);
  EXPECT_EQ(value, map->ops->lookup_elem(map, key));
  return k == v->stop_at ? 1 : 0;
}

TEST(ArrayMap, ForEachElem) {
  MapPtr m = must_create(array_attr(4, 5));
  ASSERT_TRUE(m);
  Visit all;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), record_key, &all, 0), 5);
  EXPECT_EQ(all.keys, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  Visit some;
  some.stop_at = 2;
  EXPECT_EQ(m->ops->for_each_elem(m.get(), record_key, &some, 0), 3);
  EXPECT_EQ(some.keys, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(m->ops->for_each_elem(m.get(), record_key, &all, 1), -EINVAL);
}

TEST(ArrayMap, MemoryChargedAndLimited) {
  MapPtr m = must_create(array_attr(100, 1000));
  ASSERT_TRUE(m);
  EXPECT_GE(m->memory_used.load(), 104u * 1000);
  MapAttr a = array_attr(100, 1000);
  a.memory_limit = 50000;
  EXPECT_EQ(create_errno(a), ENOMEM);
  a.memory_limit = 1 << 20;
  EXPECT_EQ(create_errno(a), 0);
}

// ---- batch operations (kernel generic_map_*_batch) --------------------------

class ArrayBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = must_create(array_attr(8, kEntries));
    ASSERT_TRUE(m_);
    for (uint32_t i = 0; i < kEntries; i++)
      ASSERT_EQ(test::update(m_.get(), i, uint64_t{i * 10}), 0);
  }
  static constexpr uint32_t kEntries = 7;
  MapPtr m_;
};

TEST_F(ArrayBatch, LookupArgumentErrno) {
  uint32_t keys[8], out = 0;
  uint64_t values[8];
  BatchArgs a{nullptr, &out, keys, values, 8, 0, 0};
  a.elem_flags = 1;
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), a), -EINVAL);
  a.elem_flags = kBpfFLock;
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), a), -EINVAL);
  a.elem_flags = 0;
  a.count = 0;
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), a), 0);
  EXPECT_EQ(a.count, 0u);
  // The generic batch does not look at batch.flags (kernel behaviour).
  a.count = 8;
  a.flags = 1;
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), a), -ENOENT);
  EXPECT_EQ(a.count, kEntries);
}

TEST_F(ArrayBatch, LookupWalkWithCursor) {
  std::vector<uint32_t> seen_keys;
  std::vector<uint64_t> seen_values;
  uint32_t cursor = 0;
  bool first = true;
  int rc;
  int calls = 0;
  do {
    uint32_t keys[3];
    uint64_t values[3];
    BatchArgs a{first ? nullptr : &cursor, &cursor, keys, values, 3, 0, 0};
    rc = m_->ops->lookup_batch(m_.get(), a);
    ASSERT_TRUE(rc == 0 || rc == -ENOENT) << rc;
    for (uint32_t i = 0; i < a.count; i++) {
      seen_keys.push_back(keys[i]);
      seen_values.push_back(values[i]);
    }
    if (rc == 0) EXPECT_EQ(a.count, 3u);
    first = false;
    calls++;
  } while (rc == 0);
  EXPECT_EQ(calls, 3);  // 3 + 3 + 1 (ENOENT)
  ASSERT_EQ(seen_keys.size(), kEntries);
  for (uint32_t i = 0; i < kEntries; i++) {
    EXPECT_EQ(seen_keys[i], i);
    EXPECT_EQ(seen_values[i], i * 10u);
  }
}

TEST_F(ArrayBatch, LookupExactFitThenEnoent) {
  uint32_t keys[7], cursor = 99;
  uint64_t values[7];
  BatchArgs a{nullptr, &cursor, keys, values, 7, 0, 0};
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), a), 0);
  EXPECT_EQ(a.count, 7u);
  EXPECT_EQ(cursor, 6u);  // the last key visited
  BatchArgs b{&cursor, &cursor, keys, values, 7, 0, 0};
  EXPECT_EQ(m_->ops->lookup_batch(m_.get(), b), -ENOENT);
  EXPECT_EQ(b.count, 0u);
  EXPECT_EQ(cursor, 6u);  // untouched when nothing was copied
}

TEST_F(ArrayBatch, UpdateStopsAtFirstError) {
  uint32_t keys[4] = {0, 1, 9, 2};
  uint64_t values[4] = {100, 101, 102, 103};
  BatchArgs a{nullptr, nullptr, keys, values, 4, 0, 0};
  EXPECT_EQ(m_->ops->update_batch(m_.get(), a), -E2BIG);
  EXPECT_EQ(a.count, 2u);
  uint64_t v;
  EXPECT_EQ(test::lookup(m_.get(), 1u, &v), 0);
  EXPECT_EQ(v, 101u);
  EXPECT_EQ(test::lookup(m_.get(), 2u, &v), 0);
  EXPECT_EQ(v, 20u);  // not reached
  a.count = 4;
  a.elem_flags = 2;
  EXPECT_EQ(m_->ops->update_batch(m_.get(), a), -EINVAL);
  a.elem_flags = 0;
  a.count = 0;
  EXPECT_EQ(m_->ops->update_batch(m_.get(), a), 0);
}

TEST_F(ArrayBatch, DeleteBatchesAreNotSupported) {
  uint32_t keys[1] = {0};
  uint64_t values[1];
  BatchArgs a{nullptr, nullptr, keys, values, 1, 0, 0};
  EXPECT_EQ(m_->ops->delete_batch(m_.get(), a), -kEnotsupp);
  EXPECT_EQ(m_->ops->lookup_and_delete_batch(m_.get(), a), -kEnotsupp);
}

}  // namespace
}  // namespace userbpf::maps
