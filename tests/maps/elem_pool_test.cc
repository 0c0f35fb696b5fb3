// Tests of the hash map's element pool and of the re-entrancy-aware map
// spin lock it and the buckets use.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "maps/elem_pool.h"
#include "maps/map_lock.h"

namespace userbpf::maps {
namespace {

constexpr uint32_t kElem = 40;
constexpr uint32_t kLink = 8;

TEST(ElemPool, CarvesThenReusesAndStopsAtCapacity) {
  Map owner;
  ElemPool pool;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, 100, 0).ok());
  EXPECT_EQ(owner.memory_used.load(), 0u);
  std::set<void*> got;
  for (int i = 0; i < 100; i++) {
    void* e = pool.alloc();
    ASSERT_NE(e, nullptr) << i;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(e) % 8, 0u);
    EXPECT_TRUE(got.insert(e).second);
  }
  EXPECT_EQ(pool.alloc(), nullptr);  // capacity reached
  EXPECT_GE(owner.memory_used.load(), 100u * kElem);
  void* e = *got.begin();
  pool.free(e);
  EXPECT_EQ(pool.alloc(), e);  // the freed element comes back
  EXPECT_EQ(pool.alloc(), nullptr);
}

TEST(ElemPool, InitialCommitIsCharged) {
  Map owner;
  owner.attr.memory_limit = 4096;
  ElemPool too_big;
  Status st = too_big.init(&owner, kElem, kLink, 1000, 1000);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ENOMEM);
  EXPECT_EQ(owner.memory_used.load(), 0u);
  ElemPool fits;
  ASSERT_TRUE(fits.init(&owner, kElem, kLink, 1000, 100).ok());
  EXPECT_EQ(owner.memory_used.load(), 4096u);
  int n = 0;
  while (fits.alloc()) n++;
  EXPECT_EQ(n, 4096 / kElem);  // the limit stops growth past the first page
}

TEST(ElemPool, ConcurrentAllocFreeNeverSharesAnElement) {
  Map owner;
  ElemPool pool;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, 64, 0).ok());
  std::atomic<int> errors{0};
  auto worker = [&](int id) {
    std::vector<void*> mine;
    for (int i = 0; i < 200000; i++) {
      if (mine.size() < 8) {
        void* e = pool.alloc();
        if (!e) continue;
        // Claim: the first word must be free (0) and becomes ours.
        auto* owner_word = static_cast<uint32_t*>(e);
        uint32_t expected = 0;
        if (!__atomic_compare_exchange_n(owner_word, &expected, static_cast<uint32_t>(id + 1),
                                         false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
          errors++;
        mine.push_back(e);
      } else {
        void* e = mine.back();
        mine.pop_back();
        __atomic_store_n(static_cast<uint32_t*>(e), 0u, __ATOMIC_RELEASE);
        pool.free(e);
      }
    }
    for (void* e : mine) {
      __atomic_store_n(static_cast<uint32_t*>(e), 0u, __ATOMIC_RELEASE);
      pool.free(e);
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) ts.emplace_back(worker, i);
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_LE(pool.carved(), 64u);
  int n = 0;
  while (pool.alloc()) n++;
  EXPECT_EQ(n, 64);  // every element is back
}

TEST(MapLock, ReentryOnSameOwnerAndGroupIsBusy) {
  std::atomic<uint32_t> a{0}, b{0}, c{0};
  int owner1 = 0, owner2 = 0;
  ASSERT_EQ(map_lock_acquire(a, &owner1, 3), 0);
  EXPECT_EQ(map_lock_acquire(b, &owner1, 3), -EBUSY);  // same group, other word
  EXPECT_EQ(b.load(), 0u);
  ASSERT_EQ(map_lock_acquire(b, &owner1, 4), 0);
  ASSERT_EQ(map_lock_acquire(c, &owner2, 3), 0);
  map_lock_release(c);
  map_lock_release(b);
  map_lock_release(a);
  EXPECT_EQ(a.load(), 0u);
  ASSERT_EQ(map_lock_acquire(b, &owner1, 3), 0);
  map_lock_release(b);
}

TEST(MapLock, DepthIsBounded) {
  std::vector<std::atomic<uint32_t>> words(kMaxHeldMapLocks + 1);
  int owner = 0;
  for (uint32_t i = 0; i < kMaxHeldMapLocks; i++)
    ASSERT_EQ(map_lock_acquire(words[i], &owner, i), 0);
  EXPECT_EQ(map_lock_acquire(words[kMaxHeldMapLocks], &owner, kMaxHeldMapLocks), -EBUSY);
  for (uint32_t i = kMaxHeldMapLocks; i-- > 0;) map_lock_release(words[i]);
  EXPECT_EQ(map_lock_acquire(words[kMaxHeldMapLocks], &owner, 0), 0);
  map_lock_release(words[kMaxHeldMapLocks]);
}

TEST(MapLock, OtherThreadsWaitInsteadOfFailing) {
  std::atomic<uint32_t> word{0};
  int owner = 0;
  std::atomic<int> counter{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&] {
      for (int i = 0; i < 20000; i++) {
        ASSERT_EQ(map_lock_acquire(word, &owner, 0), 0);
        counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        map_lock_release(word);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter.load(), 80000);
}

}  // namespace
}  // namespace userbpf::maps
