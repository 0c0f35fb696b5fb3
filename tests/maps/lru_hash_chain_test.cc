// LRU_HASH's bucket chains run oldest first (maps/lru_hash.cc): an insert
// appends its element at the end of its chain, a replacement takes the old
// element's place with one store (the old element keeps its link, so a
// reader standing on it goes on down the chain), failed updates and
// deletes leave the others in order, and eviction unlinks the oldest
// elements, which lead their chains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"
#include "percpu_test_util.h"

namespace userbpf::maps {
namespace {

using test::on_slot;
using test::PercpuFixture;

constexpr uint32_t kCpus = 2;

class LruHashChain : public ::testing::Test {
 protected:
  LruHashChain() : f(kCpus) {}
  Map* create(uint32_t max_entries) {
    return f.create(f.attr(MapType::kLRU_HASH, 4, 8, max_entries));
  }
  long put(Map* m, uint32_t key, uint64_t v, uint64_t flags = 0) {
    long rc = 0;
    on_slot(f.dom(), 0, [&] { rc = m->ops->update_elem(m, &key, &v, flags); });
    return rc;
  }
  long del(Map* m, uint32_t key) {
    long rc = 0;
    on_slot(f.dom(), 0, [&] { rc = m->ops->delete_elem(m, &key); });
    return rc;
  }
  static uint32_t bucket_of(Map* m, uint32_t key) {
    HashMap* h = to_htab(m);
    return htab_bucket_index(h, htab_hash(h, &key));
  }
  // n keys above `from` that share one bucket.
  static std::vector<uint32_t> colliding(Map* m, uint32_t n, uint32_t from = 0) {
    std::vector<uint32_t> keys;
    const uint32_t b = bucket_of(m, from);
    for (uint32_t k = from; keys.size() < n; k++)
      if (bucket_of(m, k) == b) keys.push_back(k);
    return keys;
  }
  // The chain of key's bucket, head first: keys and elements.
  static std::vector<uint32_t> chain_keys(Map* m, uint32_t key, std::vector<HashElem*>* elems) {
    HashMap* h = to_htab(m);
    std::vector<uint32_t> out;
    const uint32_t b = bucket_of(m, key);
    for (uintptr_t p = htab_first(h, b); !is_nulls(p);) {
      auto* e = reinterpret_cast<HashElem*>(p);
      uint32_t k = 0;
      std::memcpy(&k, elem_key(e), 4);
      out.push_back(k);
      if (elems) elems->push_back(e);
      p = e->next.load();
      EXPECT_LT(out.size(), 1000u) << "chain loops";
      if (out.size() >= 1000) break;
    }
    return out;
  }
  static uint64_t value_of(Map* m, HashElem* e) {
    uint64_t v = 0;
    std::memcpy(&v, elem_value(to_htab(m), e), 8);
    return v;
  }
  PercpuFixture f;
};

TEST_F(LruHashChain, InsertsAppendOldestFirst) {
  Map* m = create(64);
  ASSERT_NE(m, nullptr);
  const std::vector<uint32_t> keys = colliding(m, 4, 1);
  for (uint32_t i = 0; i < keys.size(); i++) ASSERT_EQ(put(m, keys[i], i), 0);
  EXPECT_EQ(chain_keys(m, keys[0], nullptr), keys);
}

TEST_F(LruHashChain, ReplacementTakesTheOldElementsPlace) {
  Map* m = create(64);
  ASSERT_NE(m, nullptr);
  const std::vector<uint32_t> keys = colliding(m, 3, 7);
  for (uint32_t i = 0; i < keys.size(); i++) ASSERT_EQ(put(m, keys[i], i), 0);
  std::vector<HashElem*> before;
  ASSERT_EQ(chain_keys(m, keys[0], &before), keys);

  // BPF_ANY and BPF_EXIST replace the middle key in place.
  ASSERT_EQ(put(m, keys[1], 100), 0);
  std::vector<HashElem*> after;
  EXPECT_EQ(chain_keys(m, keys[0], &after), keys);
  ASSERT_EQ(after.size(), 3u);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_NE(after[1], before[1]) << "a replacement is a new element";
  EXPECT_EQ(after[2], before[2]);
  EXPECT_EQ(value_of(m, after[1]), 100u);
  // The replaced element still leads a reader standing on it down the chain.
  EXPECT_EQ(before[1]->next.load(), reinterpret_cast<uintptr_t>(before[2]));

  ASSERT_EQ(put(m, keys[0], 200, kBpfExist), 0);
  std::vector<HashElem*> head;
  EXPECT_EQ(chain_keys(m, keys[0], &head), keys);
  EXPECT_EQ(value_of(m, head[0]), 200u);
  ASSERT_EQ(put(m, keys[2], 300), 0);
  std::vector<HashElem*> tail;
  EXPECT_EQ(chain_keys(m, keys[0], &tail), keys);
  EXPECT_EQ(value_of(m, tail[2]), 300u);
  EXPECT_TRUE(is_nulls(tail[2]->next.load()));
}

TEST_F(LruHashChain, FailedUpdatesAndDeletesKeepTheOrder) {
  Map* m = create(64);
  ASSERT_NE(m, nullptr);
  const std::vector<uint32_t> keys = colliding(m, 4, 3);
  for (uint32_t i = 0; i < 3; i++) ASSERT_EQ(put(m, keys[i], i), 0);
  std::vector<HashElem*> before;
  chain_keys(m, keys[0], &before);
  EXPECT_EQ(put(m, keys[1], 9, kBpfNoexist), -EEXIST);
  EXPECT_EQ(put(m, keys[3], 9, kBpfExist), -ENOENT);
  std::vector<HashElem*> after;
  EXPECT_EQ(chain_keys(m, keys[0], &after), std::vector<uint32_t>(keys.begin(), keys.begin() + 3));
  EXPECT_EQ(after, before);

  ASSERT_EQ(del(m, keys[0]), 0);  // the head
  EXPECT_EQ(chain_keys(m, keys[1], nullptr), (std::vector<uint32_t>{keys[1], keys[2]}));
  ASSERT_EQ(put(m, keys[0], 5), 0);  // back, now the newest
  EXPECT_EQ(chain_keys(m, keys[1], nullptr), (std::vector<uint32_t>{keys[1], keys[2], keys[0]}));
  ASSERT_EQ(del(m, keys[2]), 0);  // the middle
  EXPECT_EQ(chain_keys(m, keys[1], nullptr), (std::vector<uint32_t>{keys[1], keys[0]}));
}

// A full map evicts its oldest elements, which lead their chains; what
// stays keeps its order, and every chain stays oldest first.
TEST_F(LruHashChain, ChainsStayOldestFirstUnderEviction) {
  constexpr uint32_t kEntries = 256;
  Map* m = create(kEntries);
  ASSERT_NE(m, nullptr);
  HashMap* h = to_htab(m);
  // Inserted in key order, so within a chain keys grow until eviction
  // starts; afterwards too, since keys keep growing.
  for (uint32_t k = 0; k < 4 * kEntries; k++) ASSERT_EQ(put(m, k, k), 0);
  uint32_t live = 0;
  for (uint32_t b = 0; b < h->n_buckets; b++) {
    uint32_t prev = 0;
    bool first = true;
    for (uintptr_t p = htab_first(h, b); !is_nulls(p);) {
      auto* e = reinterpret_cast<HashElem*>(p);
      uint32_t k = 0;
      std::memcpy(&k, elem_key(e), 4);
      if (!first) EXPECT_GT(k, prev) << "bucket " << b << " not oldest first";
      prev = k;
      first = false;
      live++;
      p = e->next.load();
    }
  }
  EXPECT_GT(live, 0u);
  EXPECT_LE(live, kEntries);
  // The survivors are the newest keys: nothing older than the oldest
  // survivor was kept while something newer went.
  uint32_t oldest = UINT32_MAX;
  for (uint32_t k = 0; k < 4 * kEntries; k++) {
    uint64_t v = 0;
    if (m->ops->lookup_elem_copy(m, &k, &v, 0) == 0) {
      oldest = std::min(oldest, k);
      EXPECT_EQ(v, k);
    }
  }
  for (uint32_t k = oldest; k < 4 * kEntries; k++) {
    uint64_t v = 0;
    EXPECT_EQ(m->ops->lookup_elem_copy(m, &k, &v, 0), 0) << "key " << k << " evicted out of order";
  }
}

}  // namespace
}  // namespace userbpf::maps
