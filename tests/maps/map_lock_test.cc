// map_lock.h beyond the tracked locks' (owner, group) record (tested in
// elem_pool_test.cc): untracked locks make the thread busy without a record
// entry; a MapLockSeq keeps one entry whose group follows the lock it takes,
// so a re-entry into the group it holds is -EBUSY and other groups are not;
// ranks: a thread holding a lock of the same or a higher rank never waits.
#include "maps/map_lock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace userbpf::maps {
namespace {

TEST(MapLockUntracked, MakesTheThreadBusyWithoutARecord) {
  std::atomic<uint32_t> a{0}, b{0};
  int owner = 0;
  EXPECT_FALSE(map_lock_thread_busy());
  map_lock_acquire_untracked(a);
  EXPECT_TRUE(map_lock_thread_busy());
  EXPECT_EQ(a.load(), 1u);
  // Taken, by this thread: a try fails and leaves the count as it was.
  EXPECT_EQ(map_lock_try_acquire_untracked(a), -EBUSY);
  EXPECT_EQ(t_held_map_locks.untracked.load(), 1u);
  // No record: a tracked lock of any (owner, group) is still free.
  EXPECT_EQ(t_held_map_locks.depth.load(), 0u);
  ASSERT_EQ(map_lock_acquire(b, &owner, 0), 0);
  map_lock_release(b);
  ASSERT_EQ(map_lock_try_acquire_untracked(b), 0);
  EXPECT_EQ(t_held_map_locks.untracked.load(), 2u);
  map_lock_release_untracked(b);
  map_lock_release_untracked(a);
  EXPECT_EQ(a.load(), 0u);
  EXPECT_FALSE(map_lock_thread_busy());
  // A tracked lock makes the thread busy too.
  ASSERT_EQ(map_lock_acquire(a, &owner, 1), 0);
  EXPECT_TRUE(map_lock_thread_busy());
  map_lock_release(a);
  EXPECT_FALSE(map_lock_thread_busy());
}

TEST(MapLockUntracked, OtherThreadsWait) {
  std::atomic<uint32_t> word{0};
  std::atomic<int> counter{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&] {
      for (int i = 0; i < 20000; i++) {
        map_lock_acquire_untracked(word);
        counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        map_lock_release_untracked(word);
      }
      EXPECT_FALSE(map_lock_thread_busy());
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter.load(), 80000);
}

TEST(MapLockSeq, OneEntryFollowsTheGroupTaken) {
  std::atomic<uint32_t> a{0}, b{0}, c{0}, other{0};
  int owner = 0, owner2 = 0;
  // An outer tracked lock of another owner stays recorded below the entry
  // (of a lower rank: the sequence spins).
  ASSERT_EQ(map_lock_acquire(other, &owner2, 3, MapLockRank::kLruList), 0);
  {
    MapLockSeq seq;
    ASSERT_TRUE(seq.begin(&owner, 3));
    EXPECT_EQ(t_held_map_locks.depth.load(), 2u);
    seq.acquire(a, 3);
    EXPECT_EQ(a.load(), 1u);
    EXPECT_EQ(map_lock_acquire(c, &owner, 3), -EBUSY);  // same group, other word
    EXPECT_EQ(map_lock_try_acquire(c, &owner, 3), -EBUSY);
    ASSERT_EQ(map_lock_acquire(c, &owner, 4), 0);  // another group is free
    map_lock_release(c);
    MapLockSeq::release(a);
    EXPECT_EQ(a.load(), 0u);
    seq.acquire(b, 5);
    EXPECT_EQ(map_lock_acquire(c, &owner, 5), -EBUSY);
    ASSERT_EQ(map_lock_acquire(c, &owner, 3), 0);  // the entry moved on
    map_lock_release(c);
    EXPECT_EQ(map_lock_acquire(c, &owner2, 3, MapLockRank::kLruList), -EBUSY);  // the outer lock
    MapLockSeq::release(b);
    seq.end();
  }
  EXPECT_EQ(t_held_map_locks.depth.load(), 1u);
  ASSERT_EQ(map_lock_acquire(c, &owner, 5), 0);
  map_lock_release(c);
  map_lock_release(other);
  EXPECT_EQ(t_held_map_locks.depth.load(), 0u);
  EXPECT_FALSE(map_lock_thread_busy());
}

TEST(MapLockSeq, FullRecordRefusesToBegin) {
  std::vector<std::atomic<uint32_t>> words(kMaxHeldMapLocks);
  int owner = 0, seq_owner = 0;
  for (uint32_t i = 0; i < kMaxHeldMapLocks; i++)
    ASSERT_EQ(map_lock_acquire(words[i], &owner, i), 0);
  MapLockSeq seq;
  EXPECT_FALSE(seq.begin(&seq_owner, 0));
  EXPECT_EQ(t_held_map_locks.depth.load(), kMaxHeldMapLocks);
  for (uint32_t i = kMaxHeldMapLocks; i-- > 0;) map_lock_release(words[i]);
  ASSERT_TRUE(seq.begin(&seq_owner, 0));
  seq.end();
  EXPECT_EQ(t_held_map_locks.depth.load(), 0u);
}

// Each word guards its own counter (threads hold different words at once).
TEST(MapLockSeq, OtherThreadsWaitForItsLocks) {
  std::atomic<uint32_t> words[4] = {};
  std::atomic<int> counters[4] = {};
  int owner = 0;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&] {
      for (int i = 0; i < 5000; i++) {
        MapLockSeq seq;
        ASSERT_TRUE(seq.begin(&owner, 0));
        for (uint32_t w = 0; w < 4; w++) {
          seq.acquire(words[w], w);
          counters[w].store(counters[w].load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
          MapLockSeq::release(words[w]);
        }
        seq.end();
      }
      EXPECT_FALSE(map_lock_thread_busy());
    });
  for (auto& t : ts) t.join();
  for (auto& c : counters) EXPECT_EQ(c.load(), 4 * 5000);
}

// Another thread holds word for hold, then releases it. Its ready flag is
// set once the word is taken.
class Holder {
 public:
  Holder(std::atomic<uint32_t>& word, std::chrono::milliseconds hold)
      : t_([this, &word, hold] {
          map_lock_acquire_untracked(word);
          ready_.store(true);
          std::this_thread::sleep_for(hold);
          map_lock_release_untracked(word);
        }) {
    while (!ready_.load()) std::this_thread::yield();
  }
  ~Holder() { t_.join(); }

 private:
  std::atomic<bool> ready_{false};
  std::thread t_;
};

// The ABBA of two handlers: this thread holds a bucket lock (its handler
// runs now) and wants another map's bucket, which another thread holds (and
// whose handler might want ours). It must not wait: -EBUSY while the word
// is taken, with the record as it was.
TEST(MapLockRank, SameRankHeldOnlyTries) {
  std::atomic<uint32_t> mine{0}, theirs{0};
  int map1 = 0, map2 = 0;
  ASSERT_EQ(map_lock_acquire(mine, &map1, 3), 0);
  {
    Holder other(theirs, std::chrono::milliseconds(300));
    const auto t0 = std::chrono::steady_clock::now();
    // ASSERT: taken, the word would be this thread's and the next acquire
    // of it would spin forever.
    ASSERT_EQ(map_lock_acquire(theirs, &map2, 4), -EBUSY);
    ASSERT_EQ(map_lock_acquire(theirs, &map1, 4), -EBUSY);  // same map, other group
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
    EXPECT_EQ(t_held_map_locks.depth.load(), 1u);
    EXPECT_EQ(theirs.load(), 1u);  // still the other thread's
  }
  // Free, it is taken as usual (a try that succeeds).
  ASSERT_EQ(map_lock_acquire(theirs, &map2, 4), 0);
  EXPECT_EQ(t_held_map_locks.depth.load(), 2u);
  map_lock_release(theirs);
  map_lock_release(mine);
  EXPECT_FALSE(map_lock_thread_busy());
}

// Holding pool growth (rank 2), a bucket (rank 1) is only tried; holding a
// bucket, pool growth is waited for (the normal order: an insert allocates
// under its bucket lock).
TEST(MapLockRank, WaitsOnlyUpTheOrder) {
  std::atomic<uint32_t> grow{0}, bucket{0}, word{0};
  int pool = 0, map = 0;
  ASSERT_EQ(map_lock_acquire(grow, &pool, 0, MapLockRank::kPoolGrowth), 0);
  {
    Holder other(word, std::chrono::milliseconds(300));
    ASSERT_EQ(map_lock_acquire(word, &map, 1), -EBUSY);
    EXPECT_EQ(map_lock_try_acquire(word, &map, 1), -EBUSY);
  }
  map_lock_release(grow);

  ASSERT_EQ(map_lock_acquire(bucket, &map, 1), 0);
  {
    Holder other(word, std::chrono::milliseconds(50));
    EXPECT_EQ(map_lock_acquire(word, &pool, 0, MapLockRank::kPoolGrowth), 0);
    EXPECT_EQ(t_held_map_locks.depth.load(), 2u);
    map_lock_release(word);
  }
  map_lock_release(bucket);
  EXPECT_FALSE(map_lock_thread_busy());
}

// A sequence always waits, so it does not begin on a thread that holds a
// lock of its rank (the caller takes its locks one at a time instead).
TEST(MapLockRank, SeqRefusesUnderItsRank) {
  std::atomic<uint32_t> bucket{0};
  int map = 0, map2 = 0;
  ASSERT_EQ(map_lock_acquire(bucket, &map, 0), 0);
  MapLockSeq seq;
  EXPECT_FALSE(seq.begin(&map2, 0));
  EXPECT_EQ(t_held_map_locks.depth.load(), 1u);
  EXPECT_TRUE(seq.begin(&map2, 0, MapLockRank::kPoolGrowth));
  seq.end();
  map_lock_release(bucket);
  EXPECT_FALSE(map_lock_thread_busy());
}

}  // namespace
}  // namespace userbpf::maps
