// Tests of the hash map's element pool (shared paths and slot caches) and
// of the re-entrancy-aware map spin lock it and the buckets use.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "maps/elem_pool.h"
#include "maps/map_lock.h"
#include "mem/domain.h"
#include "signal_kicker.h"

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

// ---- slot caches ----------------------------------------------------------

// A domain of its own: slots 0, 1 normal, 2, 3 sleepable.
std::unique_ptr<mem::MemDomain> small_domain() {
  mem::MemDomainOptions o;
  o.num_slots = 2;
  return std::make_unique<mem::MemDomain>(o);
}

void hold(mem::MemDomain& d, uint32_t slot) {
  while (!d.slots.try_enter_slot(slot)) sched_yield();
}

// An element's first word says who holds it (0: nobody); the pool only uses
// the word at kLink while an element is not live.
bool claim(void* e, uint32_t who) {
  uint32_t expected = 0;
  return __atomic_compare_exchange_n(static_cast<uint32_t*>(e), &expected, who, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}
void unclaim(void* e) {
  __atomic_store_n(static_cast<uint32_t*>(e), 0u, __ATOMIC_RELEASE);
}

TEST(ElemPoolSlots, ReuseOnlyAfterGracePeriod) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, 4096, 0).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  ASSERT_EQ(pool.num_slot_caches(), 4u);
  // A reader on sleepable slot 2 (kBoth waits for it), then slot 0's holder.
  hold(*dom, 2);
  hold(*dom, 0);
  std::set<void*> freed;
  std::vector<void*> got;
  for (int i = 0; i < 100; i++) got.push_back(pool.alloc(0));
  for (int i = 0; i < 40; i++) got.push_back(pool.alloc(2));
  ASSERT_EQ(std::count(got.begin(), got.end(), nullptr), 0);
  for (size_t i = 0; i < got.size(); i++) {
    pool.free_rcu(i < 100 ? 0 : 2, got[i]);  // by another slot's holder and the reader's own
    freed.insert(got[i]);
  }
  EXPECT_EQ(pool.waiting(), 140u);
  EXPECT_EQ(pool.cached(), 140u);
  for (int i = 0; i < 300; i++) {
    void* a = pool.alloc(0);
    void* b = pool.alloc(2);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(freed.count(a), 0u) << "reused while the reader holds its slot";
    EXPECT_EQ(freed.count(b), 0u) << "reused by the reader's own slot";
  }
  dom->slots.leave(0);
  // Slot 0's holder left, the reader stays: a new holder of either normal
  // slot still gets nothing freed.
  for (uint32_t s : {0u, 1u}) {
    hold(*dom, s);
    for (int i = 0; i < 200; i++) {
      void* e = pool.alloc(static_cast<int>(s));
      ASSERT_NE(e, nullptr);
      EXPECT_EQ(freed.count(e), 0u) << "slot " << s;
    }
    dom->slots.leave(static_cast<int>(s));
  }
  dom->slots.leave(2);
  // Everyone left: slot 0's own batches come back to its next holder.
  hold(*dom, 0);
  uint32_t back = 0;
  for (int i = 0; i < 96; i++) back += freed.count(pool.alloc(0)) ? 1 : 0;
  dom->slots.leave(0);
  EXPECT_EQ(back, 96u);
}

// free_rcu_chain is free_rcu of each element, in one pass over the slot's
// cache: nothing comes back while a reader holds its slot, every element
// comes back once after, and next(e) is read before e's link word is taken
// (the chain here is linked through that very word).
TEST(ElemPoolSlots, ChainFreeIsFreeRcuOfEach) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, 4096, 0).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  constexpr int kN = 150;  // four sealed batches and some pending
  auto link_word = [](void* e) {
    return reinterpret_cast<std::atomic<uintptr_t>*>(static_cast<char*>(e) + kLink);
  };
  auto next = [&](void* e) {
    return reinterpret_cast<void*>(link_word(e)->load(std::memory_order_relaxed));
  };
  hold(*dom, 2);  // a reader
  hold(*dom, 0);
  std::vector<void*> got;
  for (int i = 0; i < kN; i++) got.push_back(pool.alloc(0));
  ASSERT_EQ(std::count(got.begin(), got.end(), nullptr), 0);
  std::set<void*> freed(got.begin(), got.end());
  for (int i = 0; i < kN; i++)
    link_word(got[i])->store(reinterpret_cast<uintptr_t>(i + 1 < kN ? got[i + 1] : nullptr));
  pool.free_rcu_chain(0, got[0], next);
  EXPECT_EQ(pool.waiting(), uint64_t{kN});
  EXPECT_EQ(pool.cached(), uint64_t{kN});
  // A chain from a slot the caller does not pass (shared paths).
  void* a = pool.alloc(0);
  void* b = pool.alloc(0);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(freed.count(a) + freed.count(b), 0u);
  link_word(a)->store(reinterpret_cast<uintptr_t>(b));
  link_word(b)->store(0);
  freed.insert(a);
  freed.insert(b);
  pool.free_rcu_chain(-1, a, next);
  EXPECT_EQ(pool.waiting(), uint64_t{kN} + 2);
  for (int i = 0; i < 300; i++) {
    void* e = pool.alloc(0);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(freed.count(e), 0u) << "reused while the reader holds its slot";
  }
  dom->slots.leave(0);
  dom->slots.leave(2);
  pool.reclaim_host();
  EXPECT_EQ(pool.waiting(), 0u);
  // Every element is back exactly once: live (the 300) + free == carved.
  EXPECT_EQ(pool.free_elems() + 300, pool.carved());
}

TEST(ElemPoolSlots, OtherSlotTakesAHeldSlotsCache) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  constexpr int kCap = 128;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, kCap, kCap).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;
  void* mine = nullptr;
  // The holder of slot 0: every element passes through its cache; then it
  // keeps one live, 31 on its free list and three sealed batches, and keeps
  // holding its slot (a long program run) while slot 1 needs them all.
  std::thread holder([&] {
    hold(*dom, 0);
    std::vector<void*> all;
    for (int i = 0; i < kCap; i++) all.push_back(pool.alloc(0));
    EXPECT_EQ(std::count(all.begin(), all.end(), nullptr), 0);
    EXPECT_EQ(pool.alloc(0), nullptr);  // capacity reached, nothing to take
    for (void* e : all) pool.free_rcu(0, e);
    dom->slots.leave(0);
    hold(*dom, 0);
    mine = pool.alloc(0);
    EXPECT_NE(mine, nullptr);
    EXPECT_EQ(pool.cached(), kCap - 1u);
    {
      std::unique_lock lk(mu);
      phase = 1;
      cv.notify_all();
      cv.wait(lk, [&] { return phase == 2; });
    }
    dom->slots.leave(0);
  });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return phase == 1; });
  }
  hold(*dom, 1);
  std::set<void*> got;
  for (int i = 0; i < kCap - 1; i++) {
    void* e = pool.alloc(1);
    ASSERT_NE(e, nullptr) << "alloc " << i << " failed while slot 0 holds free elements";
    EXPECT_NE(e, mine);
    EXPECT_TRUE(got.insert(e).second);
  }
  EXPECT_EQ(pool.alloc(1), nullptr);
  dom->slots.leave(1);
  {
    std::lock_guard lk(mu);
    phase = 2;
    cv.notify_all();
  }
  holder.join();
  EXPECT_EQ(pool.cached(), 0u);
}

TEST(ElemPoolSlots, ReclaimHostTakesEveryCache) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  constexpr int kCap = 70;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, kCap, kCap).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  // Slot 0 seals one batch and keeps 8 pending; slot 3 keeps 30 pending.
  std::thread t([&] {
    for (auto [slot, n] : {std::pair{0, 40}, std::pair{3, 30}}) {
      hold(*dom, static_cast<uint32_t>(slot));
      std::vector<void*> v;
      for (int i = 0; i < n; i++) v.push_back(pool.alloc(slot));
      for (void* e : v) {
        ASSERT_NE(e, nullptr);
        pool.free_rcu(slot, e);
      }
      dom->slots.leave(slot);
    }
  });
  t.join();
  EXPECT_EQ(pool.waiting(), 70u);
  EXPECT_EQ(pool.carved(), 70u);
  pool.reclaim_host();
  EXPECT_EQ(pool.waiting(), 0u);
  EXPECT_EQ(pool.cached(), 0u);
  EXPECT_EQ(pool.free_elems(), 70u);
  // All of them on the shared list: the slot-less path finds each.
  std::set<void*> got;
  for (int i = 0; i < kCap; i++) {
    void* e = pool.alloc();
    ASSERT_NE(e, nullptr) << i;
    EXPECT_TRUE(got.insert(e).second);
  }
}

// A signal handler on the holder's thread allocates and frees on the same
// slot, interrupting the holder anywhere in its own alloc and free_rcu: no
// element is ever handed out twice, and the counts balance at the end.
struct ReentryPool {
  ElemPool* pool = nullptr;
  mem::MemDomain* dom = nullptr;
  std::atomic<uint64_t> runs{0}, same_slot{0}, dry{0}, errors{0};
};
ReentryPool g_rp;

void pool_signal_handler(int) {
  ReentryPool& r = g_rp;
  r.runs.fetch_add(1, std::memory_order_relaxed);
  const int slot = r.dom->slots.held_slot();  // the interrupted holder's, or -1
  if (slot >= 0) r.same_slot.fetch_add(1, std::memory_order_relaxed);
  void* e[3];
  for (void*& x : e) {
    x = r.pool->alloc(slot);
    if (!x) {
      r.dry.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!claim(x, 2)) r.errors.fetch_add(1, std::memory_order_relaxed);
  }
  for (void* x : e) {
    if (!x) continue;
    unclaim(x);
    r.pool->free_rcu(slot, x);
  }
}

TEST(ElemPoolSlots, SignalHandlerReusesTheHoldersSlot) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, 8192, 1024).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  g_rp.pool = &pool;
  g_rp.dom = dom.get();
  g_rp.runs = g_rp.same_slot = g_rp.dry = g_rp.errors = 0;
  userbpf::test::ScopedSignal scope(SIGUSR2, pool_signal_handler);
  ASSERT_TRUE(scope.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> errors{0}, ops{0};
  std::thread worker([&] {
    std::mt19937 rng(11);
    std::vector<void*> live;
    while (!stop.load(std::memory_order_relaxed)) {
      // A "run" holds a slot for a while; its frees come back only after it.
      mem::SlotGuard g(dom->slots);
      if (!g.ok()) continue;
      for (int i = 0; i < 256; i++, ops++) {
        if (live.size() < 16 && (rng() & 1)) {
          void* e = pool.alloc(g.slot());
          if (!e) continue;
          if (!claim(e, 1)) errors++;
          live.push_back(e);
        } else if (!live.empty()) {
          void* e = live.back();
          live.pop_back();
          unclaim(e);
          pool.free_rcu(g.slot(), e);
        }
      }
      for (void* e : live) {
        unclaim(e);
        pool.free_rcu(g.slot(), e);
      }
      live.clear();
    }
  });
  std::vector<pthread_t> ids{worker.native_handle()};
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, std::chrono::microseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  kicker.stop();
  worker.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_EQ(g_rp.errors.load(), 0u);
  EXPECT_GT(g_rp.same_slot.load(), 0u);
  std::printf("[ signals ] ops %llu handler runs %llu on the holder's slot %llu dry %llu\n",
              static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(g_rp.runs.load()),
              static_cast<unsigned long long>(g_rp.same_slot.load()),
              static_cast<unsigned long long>(g_rp.dry.load()));
  pool.reclaim_host();
  EXPECT_EQ(pool.waiting(), 0u);
  EXPECT_EQ(pool.carved(), pool.free_elems());  // nothing live
}

// Threads holding slots churn a pool so small that caches run dry and steal
// from each other; slot-less callers and reclaim_host run meanwhile. No
// element is held twice; at rest carved == free + waiting.
TEST(ElemPoolSlots, ConcurrentSlotsAndThievesNeverShareAnElement) {
  auto dom = small_domain();
  Map owner;
  ElemPool pool;
  constexpr uint64_t kCap = 160;
  ASSERT_TRUE(pool.init(&owner, kElem, kLink, kCap, kCap).ok());
  pool.set_rcu(&dom->rcu, mem::RcuFlavor::kBoth);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> errors{0}, allocs{0}, dry{0};
  auto churn = [&](uint32_t id, bool sleepable) {
    std::mt19937 rng(id);
    std::vector<void*> live;
    while (!stop.load(std::memory_order_relaxed)) {
      const int slot = sleepable ? dom->slots.enter_sleepable() : dom->slots.enter();
      if (slot < 0) continue;
      const int n = 1 + static_cast<int>(rng() % 64);
      for (int i = 0; i < n; i++) {
        if (live.size() < 24 && (rng() % 3)) {
          void* e = pool.alloc(slot);
          if (!e) {
            dry++;
            continue;
          }
          allocs++;
          if (!claim(e, id)) errors++;
          live.push_back(e);
        } else if (!live.empty()) {
          void* e = live.back();
          live.pop_back();
          unclaim(e);
          pool.free_rcu(slot, e);
        }
      }
      dom->slots.leave(slot);
    }
    for (void* e : live) {
      unclaim(e);
      pool.free_rcu(e);  // slot-less
    }
  };
  auto host = [&] {
    std::mt19937 rng(99);
    while (!stop.load(std::memory_order_relaxed)) {
      if (rng() % 4 == 0) {
        pool.reclaim_host();
        continue;
      }
      void* e = pool.alloc();
      if (!e) continue;
      if (!claim(e, 77)) errors++;
      unclaim(e);
      if (rng() & 1)
        pool.free(e);
      else
        pool.free_rcu(e);
    }
  };
  std::vector<std::thread> ts;
  ts.emplace_back(churn, 1, false);
  ts.emplace_back(churn, 2, false);
  ts.emplace_back(churn, 3, true);
  ts.emplace_back(host);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_GT(allocs.load(), 1000u);
  std::printf("[ stress  ] allocs %llu dry %llu\n", static_cast<unsigned long long>(allocs.load()),
              static_cast<unsigned long long>(dry.load()));
  EXPECT_EQ(pool.carved(), pool.free_elems() + pool.waiting());
  pool.reclaim_host();
  EXPECT_EQ(pool.waiting(), 0u);
  EXPECT_EQ(pool.carved(), pool.free_elems());
  int n = 0;
  while (pool.alloc()) n++;
  EXPECT_EQ(static_cast<uint64_t>(n), pool.carved());  // every element is back
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
