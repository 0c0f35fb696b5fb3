// Page pool: trylock-only allocation (NULL on contention), deferred frees
// drained by the next ordinary free, limits, huge-page chunks.
#include "mem/page_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <thread>
#include <vector>

namespace userbpf::mem {

struct PagePoolTestPeer {
  static bool lock(PagePool& p) { return p.try_lock(); }
  static void unlock(PagePool& p) { p.unlock(); }
  static bool deferred_empty(PagePool& p) { return p.deferred_.load() == nullptr; }
};

namespace {

TEST(PagePool, OrderFor) {
  EXPECT_EQ(PagePool::order_for(1), 0u);
  EXPECT_EQ(PagePool::order_for(4096), 0u);
  EXPECT_EQ(PagePool::order_for(4097), 1u);
  EXPECT_EQ(PagePool::order_for(64 * 1024), 4u);
  EXPECT_EQ(PagePool::order_for(2 << 20), 9u);
}

TEST(PagePool, AllocatesAlignedDistinctWritablePages) {
  PagePool pool;
  std::set<uintptr_t> seen;
  std::vector<std::pair<void*, unsigned>> blocks;
  for (unsigned order = 0; order <= 4; order++) {
    for (int i = 0; i < 20; i++) {
      void* p = pool.alloc_pages_nolock(order);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % PagePool::kPageSize, 0u);
      std::memset(p, 0xab, PagePool::kPageSize << order);
      for (size_t off = 0; off < (PagePool::kPageSize << order); off += PagePool::kPageSize)
        EXPECT_TRUE(seen.insert(reinterpret_cast<uintptr_t>(p) + off).second);
      blocks.push_back({p, order});
    }
  }
  uint64_t used = 0;
  for (auto& b : blocks) used += PagePool::kPageSize << b.second;
  EXPECT_EQ(pool.used_bytes(), used);
  for (auto& b : blocks) pool.free_pages(b.first, b.second);
  EXPECT_EQ(pool.used_bytes(), 0u);
  EXPECT_EQ(pool.alloc_pages_nolock(PagePool::kMaxOrder + 1), nullptr);
}

TEST(PagePool, FreedBlockIsReused) {
  PagePool pool;
  void* p = pool.alloc_pages_nolock(2);
  pool.free_pages_nolock(p, 2);
  EXPECT_EQ(pool.alloc_pages_nolock(2), p);
}

TEST(PagePool, ContentionMeansNullAndDeferredFree) {
  PagePool pool;
  void* a = pool.alloc_pages_nolock(0);
  void* b = pool.alloc_pages_nolock(0);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PagePoolTestPeer::lock(pool));  // someone holds the lock
  EXPECT_EQ(pool.alloc_pages_nolock(0), nullptr);
  pool.free_pages_nolock(a, 0);  // cannot lock: goes on the lock-free list
  EXPECT_EQ(pool.deferred_frees(), 1u);
  EXPECT_FALSE(PagePoolTestPeer::deferred_empty(pool));
  PagePoolTestPeer::unlock(pool);
  pool.free_pages(b, 0);  // the next ordinary free drains it
  EXPECT_TRUE(PagePoolTestPeer::deferred_empty(pool));
  std::set<void*> again{pool.alloc_pages_nolock(0), pool.alloc_pages_nolock(0)};
  EXPECT_EQ(again, (std::set<void*>{a, b}));
}

TEST(PagePool, LimitMakesAllocationFail) {
  PagePoolOptions o;
  o.max_bytes = 2u << 20;  // one chunk
  PagePool pool(o);
  void* big = pool.alloc_pages_nolock(PagePool::kMaxOrder);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(pool.alloc_pages_nolock(0), nullptr);
  EXPECT_EQ(pool.mapped_bytes(), 2u << 20);
  pool.free_pages(big, PagePool::kMaxOrder);
  EXPECT_NE(pool.alloc_pages_nolock(0), nullptr);
}

TEST(PagePool, HugePageChunksWorkWithOrWithoutHugetlb) {
  PagePoolOptions o;
  o.huge_pages = true;
  PagePool pool(o);
  void* p = pool.alloc_pages_nolock(3);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, PagePool::kPageSize << 3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % pool.chunk_bytes(), 0u);  // first block of a chunk
  pool.free_pages(p, 3);
}

TEST(PagePool, ConcurrentNolockTrafficBalances) {
  PagePool pool;
  std::atomic<uint64_t> fails{0};
  std::vector<std::thread> ths;
  for (int t = 0; t < 4; t++) {
    ths.emplace_back([&, t] {
      std::vector<void*> mine;
      for (int i = 0; i < 5000; i++) {
        void* p = pool.alloc_pages_nolock(0);
        if (!p) {
          fails++;
        } else {
          *static_cast<int*>(p) = t;
          mine.push_back(p);
        }
        if (mine.size() > 8) {
          EXPECT_EQ(*static_cast<int*>(mine.back()), t);
          pool.free_pages_nolock(mine.back(), 0);
          mine.pop_back();
        }
      }
      for (void* p : mine) pool.free_pages_nolock(p, 0);
    });
  }
  for (auto& th : ths) th.join();
  EXPECT_EQ(pool.used_bytes(), 0u);
  // Only contention makes nolock allocation fail here: far from all of them.
  EXPECT_LT(fails.load(), 20000u);
}

}  // namespace
}  // namespace userbpf::mem
