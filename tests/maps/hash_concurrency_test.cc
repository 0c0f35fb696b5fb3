// Concurrency tests of the hash map: many threads updating, deleting and
// looking up the same small key set (values must never be seen half
// written), and programs re-entering the map from a signal handler that
// interrupted a thread holding a bucket lock (-EBUSY, never a hang).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "map_test_util.h"
#include "maps/hash_map.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

using test::make_attr;
using test::must_create;

// Aborts the test binary if a test deadlocks instead of hanging CI.
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit)
      : t_([this, limit] {
          std::unique_lock<std::mutex> l(mu_);
          if (!cv_.wait_for(l, limit, [this] { return done_; })) {
            std::fprintf(stderr, "watchdog: test did not finish in time (deadlock?)\n");
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread t_;
};

// A value whose words are tied together: a reader seeing parts of two
// different writes notices.
struct Value {
  uint64_t x, not_x, x_times_3, x_rot;
  static Value of(uint64_t x) { return {x, ~x, x * 3, (x << 17) | (x >> 47)}; }
  bool consistent() const {
    return not_x == ~x && x_times_3 == x * 3 && x_rot == ((x << 17) | (x >> 47));
  }
};

Value load_words(const void* p) {
  const auto* w = static_cast<const uint64_t*>(p);
  return {__atomic_load_n(&w[0], __ATOMIC_RELAXED), __atomic_load_n(&w[1], __ATOMIC_RELAXED),
          __atomic_load_n(&w[2], __ATOMIC_RELAXED), __atomic_load_n(&w[3], __ATOMIC_RELAXED)};
}

struct StressConfig {
  uint32_t flags;
  uint32_t max_entries;
  uint32_t keys;
};

class HashStress : public ::testing::TestWithParam<StressConfig> {};

TEST_P(HashStress, ValuesNeverTornAndCountsConsistent) {
  Watchdog dog(std::chrono::seconds(120));
  const StressConfig cfg = GetParam();
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, sizeof(Value), cfg.max_entries, cfg.flags));
  ASSERT_TRUE(m);
  Map* map = m.get();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad_rc{0}, torn_copy{0}, torn_ptr{0}, copies{0}, ptr_reads{0},
      recycled_reads{0}, updates{0}, deletes{0}, batch_torn{0};
  // The first unexpected return code and its operation, for the report.
  std::atomic<uint64_t> nomem{0};
  std::atomic<long> first_bad{0};
  std::atomic<const char*> first_bad_op{""};
  auto bad = [&](const char* op, long rc) {
    long none = 0;
    if (first_bad.compare_exchange_strong(none, rc)) first_bad_op = op;
    bad_rc++;
  };

  auto updater = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % cfg.keys;
      Value v = Value::of((uint64_t{rng()} << 32) | rng());
      long rc = map->ops->update_elem(map, &k, &v, 0);
      // NO_PREALLOC: free objects can sit in the caches of CPU slots other
      // threads hold (preempted, on an oversubscribed machine) while this
      // map's memory is all in use; the kernel's bpf_mem_alloc may fail the
      // same way. Counted, not an error.
      if (rc == -ENOMEM && (cfg.flags & kBpfFNoPrealloc)) {
        nomem++;
      } else if (rc != 0 && rc != -E2BIG) {
        bad("update", rc);
      }
      updates++;
    }
  };
  auto deleter = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % cfg.keys;
      long rc = (rng() & 1) ? map->ops->delete_elem(map, &k) : [&] {
        Value v;
        long r = map->ops->lookup_and_delete_elem(map, &k, &v, 0);
        if (r == 0 && !v.consistent()) torn_copy++;
        return r;
      }();
      if (rc != 0 && rc != -ENOENT) bad("delete", rc);
      deletes++;
    }
  };
  auto copy_reader = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % cfg.keys;
      Value v;
      int rc = map->ops->lookup_elem_copy(map, &k, &v, 0);
      if (rc == 0 && !v.consistent()) torn_copy++;
      if (rc != 0 && rc != -ENOENT) bad("copy", rc);
      copies++;
    }
  };
  // The program path: a pointer into the map, used inside a read-side
  // section (a program run holds a slot), so the element is never recycled
  // while read: its reuse counter must not change.
  auto ptr_reader = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % cfg.keys;
      mem::SlotGuard section(mem::default_mem_domain().slots);
      void* p = map->ops->lookup_elem(map, &k);
      if (!p) continue;
      uint32_t s1 = testing::elem_seq_of_value(map, p);
      Value v = load_words(p);
      std::atomic_thread_fence(std::memory_order_acquire);
      uint32_t s2 = testing::elem_seq_of_value(map, p);
      if (s1 == s2 && !(s1 & 1)) {
        if (!v.consistent()) torn_ptr++;
        ptr_reads++;
      } else {
        recycled_reads++;
      }
    }
  };
  auto walker = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t keys[64], cursor = 0;
      Value values[64];
      bool first = true;
      int rc;
      do {
        BatchArgs a{first ? nullptr : &cursor, &cursor, keys, values, 64, 0, 0};
        rc = map->ops->lookup_batch(map, a);
        for (uint32_t i = 0; i < a.count; i++)
          if (!values[i].consistent()) batch_torn++;
        first = false;
      } while (rc == 0);
      if (rc != -ENOENT) bad("lookup_batch", rc);
      uint32_t next, cur;
      const void* prev = nullptr;
      for (int i = 0; i < 1000 && map->ops->get_next_key(map, prev, &next) == 0; i++) {
        cur = next;
        prev = &cur;
      }
    }
  };

  std::vector<std::thread> threads;
  threads.emplace_back(updater, 1);
  threads.emplace_back(updater, 2);
  threads.emplace_back(deleter, 3);
  threads.emplace_back(copy_reader, 4);
  threads.emplace_back(ptr_reader, 5);
  threads.emplace_back(ptr_reader, 6);
  threads.emplace_back(walker);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  stop = true;
  for (auto& t : threads) t.join();

  EXPECT_EQ(bad_rc.load(), 0u) << "first: " << first_bad_op.load() << " " << first_bad.load();
  EXPECT_EQ(torn_copy.load(), 0u);
  EXPECT_EQ(torn_ptr.load(), 0u);
  EXPECT_EQ(batch_torn.load(), 0u);
  EXPECT_EQ(recycled_reads.load(), 0u);  // no reuse before a grace period
  EXPECT_GT(updates.load(), 1000u);
  EXPECT_GT(deletes.load(), 1000u);
  EXPECT_GT(copies.load(), 1000u);
  EXPECT_GT(ptr_reads.load(), 1000u);
  // Most updates succeed even so.
  EXPECT_LT(nomem.load(), updates.load() / 2);
  std::printf(
      "[ stress  ] updates %llu (ENOMEM %llu) deletes %llu copies %llu ptr reads %llu (recycled "
      "%llu)\n",
      static_cast<unsigned long long>(updates.load()),
      static_cast<unsigned long long>(nomem.load()),
      static_cast<unsigned long long>(deletes.load()),
      static_cast<unsigned long long>(copies.load()),
      static_cast<unsigned long long>(ptr_reads.load()),
      static_cast<unsigned long long>(recycled_reads.load()));

  // Quiescent: every key at most once, values whole, count within limits.
  std::vector<int> seen(cfg.keys);
  uint32_t next, cur, n = 0;
  const void* prev = nullptr;
  while (map->ops->get_next_key(map, prev, &next) == 0) {
    ASSERT_LT(next, cfg.keys);
    EXPECT_EQ(seen[next]++, 0) << next;
    Value v;
    ASSERT_EQ(map->ops->lookup_elem_copy(map, &next, &v, 0), 0);
    EXPECT_TRUE(v.consistent());
    cur = next;
    prev = &cur;
    n++;
  }
  EXPECT_LE(n, cfg.max_entries);
  // The element count is exact: drain, then exactly max_entries inserts fit.
  for (uint32_t k = 0; k < cfg.keys; k++) map->ops->delete_elem(map, &k);
  Value v = Value::of(1);
  for (uint32_t k = 0; k < cfg.max_entries; k++)
    ASSERT_EQ(map->ops->update_elem(map, &k, &v, kBpfNoexist), 0) << k;
  uint32_t extra = cfg.max_entries;
  EXPECT_EQ(map->ops->update_elem(map, &extra, &v, kBpfNoexist), -E2BIG);
}

INSTANTIATE_TEST_SUITE_P(Configs, HashStress,
                         ::testing::Values(StressConfig{0, 16, 16},
                                           StressConfig{kBpfFNoPrealloc, 16, 16},
                                           StressConfig{0, 8, 16},
                                           StressConfig{kBpfFNoPrealloc, 8, 16},
                                           StressConfig{0, 1, 3}),
                         [](const ::testing::TestParamInfo<StressConfig>& info) {
                           return std::string(info.param.flags ? "NoPrealloc" : "Prealloc") +
                                  "_max" + std::to_string(info.param.max_entries) + "_keys" +
                                  std::to_string(info.param.keys);
                         });

// ---- re-entry from a signal handler -----------------------------------------

struct ReentryState {
  Map* map = nullptr;
  Map* other = nullptr;
  uint32_t held_key = 0;
  uint32_t same_group_key = 0;   // another bucket of the held lock group
  uint32_t other_group_key = 0;  // a bucket of another lock group
  bool have_same_group = false, have_other_group = false;
  std::atomic<bool> armed{false};
  std::atomic<int> handler_runs{0};
  long rc_same_key = 1, rc_same_group = 1, rc_other_group = 1, rc_delete = 1, rc_other_map = 1;
  uint64_t looked_up = 0;
  bool lookup_found = false;
};
ReentryState g_reentry;

void reentry_handler(int) {
  ReentryState& s = g_reentry;
  s.handler_runs++;
  uint64_t v = 99;
  s.rc_same_key = s.map->ops->update_elem(s.map, &s.held_key, &v, 0);
  s.rc_delete = s.map->ops->delete_elem(s.map, &s.held_key);
  if (s.have_same_group) s.rc_same_group = s.map->ops->update_elem(s.map, &s.same_group_key, &v, 0);
  if (s.have_other_group)
    s.rc_other_group = s.map->ops->update_elem(s.map, &s.other_group_key, &v, 0);
  s.rc_other_map = s.other->ops->update_elem(s.other, &s.held_key, &v, 0);
  // Lookups take no lock: they see the value before the interrupted update.
  void* p = s.map->ops->lookup_elem(s.map, &s.held_key);
  s.lookup_found = p != nullptr;
  if (p) s.looked_up = __atomic_load_n(static_cast<uint64_t*>(p), __ATOMIC_RELAXED);
}

void raise_in_locked_window(Map*) {
  if (!g_reentry.armed.exchange(false)) return;
  pthread_kill(pthread_self(), SIGUSR1);  // delivered before pthread_kill returns
}

class HashReentry : public ::testing::TestWithParam<uint32_t> {};

TEST_P(HashReentry, SignalHandlerInLockedWindowGetsEbusy) {
  Watchdog dog(std::chrono::seconds(30));
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 8, 64, GetParam()));
  MapPtr other = must_create(make_attr(MapType::kHASH, 4, 8, 64, GetParam()));
  ASSERT_TRUE(m && other);
  ReentryState& s = g_reentry;
  s.handler_runs = 0;
  s.rc_same_key = s.rc_same_group = s.rc_other_group = s.rc_delete = s.rc_other_map = 1;
  s.lookup_found = false;
  s.map = m.get();
  s.other = other.get();
  s.held_key = 5;
  uint32_t held_bucket = testing::bucket_of_key(s.map, &s.held_key);
  uint32_t held_group = testing::lock_group_of_key(s.map, &s.held_key);
  s.have_same_group = s.have_other_group = false;
  for (uint32_t k = 100; k < 10000 && !(s.have_same_group && s.have_other_group); k++) {
    uint32_t b = testing::bucket_of_key(s.map, &k), g = testing::lock_group_of_key(s.map, &k);
    if (g == held_group && b != held_bucket && !s.have_same_group) {
      s.same_group_key = k;
      s.have_same_group = true;
    } else if (g != held_group && !s.have_other_group) {
      s.other_group_key = k;
      s.have_other_group = true;
    }
  }
  ASSERT_TRUE(s.have_same_group && s.have_other_group);
  ASSERT_EQ(test::update(s.map, s.held_key, uint64_t{7}), 0);

  struct sigaction sa{}, old{};
  sa.sa_handler = reentry_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  testing::set_bucket_locked_hook(raise_in_locked_window);
  s.armed = true;
  long rc = test::update(s.map, s.held_key, uint64_t{8});
  testing::set_bucket_locked_hook(nullptr);
  sigaction(SIGUSR1, &old, nullptr);

  EXPECT_EQ(rc, 0);
  EXPECT_EQ(s.handler_runs.load(), 1);
  // Kernel map_locked semantics: the same lock group of the same map is busy
  // (even another bucket of it); other groups and other maps work.
  EXPECT_EQ(s.rc_same_key, -EBUSY);
  EXPECT_EQ(s.rc_delete, -EBUSY);
  EXPECT_EQ(s.rc_same_group, -EBUSY);
  EXPECT_EQ(s.rc_other_group, 0);
  EXPECT_EQ(s.rc_other_map, 0);
  EXPECT_TRUE(s.lookup_found);
  EXPECT_EQ(s.looked_up, 7u);
  uint64_t v;
  ASSERT_EQ(test::lookup(s.map, s.held_key, &v), 0);
  EXPECT_EQ(v, 8u);
  ASSERT_EQ(test::lookup(s.map, s.other_group_key, &v), 0);
  EXPECT_EQ(v, 99u);
  EXPECT_EQ(test::lookup(s.map, s.same_group_key, &v), -ENOENT);
  // Nothing stays locked: the same thread can use every bucket again.
  EXPECT_EQ(test::update(s.map, s.same_group_key, uint64_t{1}), 0);
  EXPECT_EQ(test::erase(s.map, s.held_key), 0);
}

// Two threads each inside an update (holding a bucket lock of their own
// lock group) are interrupted by handlers that delete the key of the other
// thread's bucket: an ABBA between handlers. Each handler waits until both
// run before its delete and until both deletes returned after it, so both
// buckets are held while they try. The kernel's rqspinlock
// reports this as a deadlock; here each handler gets -EBUSY instead of
// waiting for a lock whose holder waits for it (before map locks had ranks
// this hung; the watchdog aborts then).
struct CrossState {
  Map* map = nullptr;
  uint32_t keys[2] = {};
  std::atomic<int> in_window{0}, in_handler{0}, deleted{0};
  long rc[2] = {1, 1};
  bool handlers_met[2] = {}, deletes_met[2] = {};
};
CrossState g_cross;
thread_local int t_cross_role = -1;  // 0 or 1 on the two threads

// Waits (bounded: a failure must not hang) until counter reaches 2.
bool meet(std::atomic<int>& counter) {
  counter.fetch_add(1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (counter.load() < 2)
    if (std::chrono::steady_clock::now() > deadline) return false;
  return true;
}

void cross_handler(int) {
  CrossState& s = g_cross;
  const int me = t_cross_role;
  s.handlers_met[me] = meet(s.in_handler);
  s.rc[me] = s.map->ops->delete_elem(s.map, &s.keys[1 - me]);
  s.deletes_met[me] = meet(s.deleted);
}

void cross_in_window(Map*) {
  if (t_cross_role < 0) return;
  meet(g_cross.in_window);
  pthread_kill(pthread_self(), SIGUSR1);
}

TEST_P(HashReentry, CrossedHandlersGetEbusyInsteadOfDeadlock) {
  Watchdog dog(std::chrono::seconds(30));
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 8, 64, GetParam()));
  ASSERT_TRUE(m);
  CrossState& s = g_cross;
  s.map = m.get();
  s.in_window = s.in_handler = s.deleted = 0;
  s.keys[0] = 5;
  const uint32_t group0 = testing::lock_group_of_key(s.map, &s.keys[0]);
  bool found = false;
  for (uint32_t k = 100; k < 10000 && !found; k++)
    if (testing::lock_group_of_key(s.map, &k) != group0) {
      s.keys[1] = k;
      found = true;
    }
  ASSERT_TRUE(found);
  for (uint32_t k : s.keys) ASSERT_EQ(test::update(s.map, k, uint64_t{1}), 0);

  struct sigaction sa{}, old{};
  sa.sa_handler = cross_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  testing::set_bucket_locked_hook(cross_in_window);
  long update_rc[2] = {1, 1};
  std::thread threads[2];
  for (int i = 0; i < 2; i++)
    threads[i] = std::thread([&, i] {
      t_cross_role = i;
      update_rc[i] = test::update(s.map, s.keys[i], uint64_t{2});
      t_cross_role = -1;
    });
  for (auto& t : threads) t.join();
  testing::set_bucket_locked_hook(nullptr);
  sigaction(SIGUSR1, &old, nullptr);

  for (int i = 0; i < 2; i++) {
    EXPECT_TRUE(s.handlers_met[i] && s.deletes_met[i]) << i;
    EXPECT_EQ(s.rc[i], -EBUSY) << i;
    EXPECT_EQ(update_rc[i], 0) << i;
    uint64_t v = 0;
    ASSERT_EQ(test::lookup(s.map, s.keys[i], &v), 0) << i;  // not deleted
    EXPECT_EQ(v, 2u);
  }
  // Nothing stays locked.
  for (uint32_t k : s.keys) EXPECT_EQ(test::erase(s.map, k), 0);
}

INSTANTIATE_TEST_SUITE_P(Prealloc, HashReentry, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

// Signals at random moments while a thread hammers the map; the handler uses
// the same map (including growth of a no-prealloc pool). Every result must
// be a valid errno and the test must finish.
struct StormState {
  Map* map = nullptr;
  std::atomic<uint64_t> runs{0}, ok{0}, busy{0}, nomem{0}, other{0}, bad{0};
  std::atomic<uint32_t> next_key{1000};
};
StormState g_storm;

void storm_handler(int) {
  StormState& s = g_storm;
  s.runs++;
  uint32_t k = s.next_key.fetch_add(1) % 4096;
  uint64_t v = k;
  long rcs[3] = {s.map->ops->update_elem(s.map, &k, &v, 0), s.map->ops->delete_elem(s.map, &k),
                 s.map->ops->update_elem(s.map, &k, &v, 0)};
  for (long rc : rcs) {
    if (rc == 0)
      s.ok++;
    else if (rc == -EBUSY)
      s.busy++;
    else if (rc == -ENOMEM)
      s.nomem++;
    else if (rc == -ENOENT || rc == -E2BIG)
      s.other++;
    else
      s.bad++;
  }
  void* p = s.map->ops->lookup_elem(s.map, &k);
  if (p && __atomic_load_n(static_cast<uint64_t*>(p), __ATOMIC_RELAXED) != k) s.bad++;
}

class HashSignalStorm : public ::testing::TestWithParam<uint32_t> {};

TEST_P(HashSignalStorm, NoHangAndValidResults) {
  Watchdog dog(std::chrono::seconds(60));
  MapPtr m = must_create(make_attr(MapType::kHASH, 4, 8, 4096, GetParam()));
  ASSERT_TRUE(m);
  StormState& s = g_storm;
  s.map = m.get();
  s.runs = s.ok = s.busy = s.nomem = s.other = s.bad = 0;
  struct sigaction sa{}, old{};
  sa.sa_handler = storm_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> worker_bad{0}, worker_ops{0};
  std::thread worker([&] {
    std::mt19937 rng(7);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % 64;
      uint64_t v = k;
      long rc = (rng() & 1) ? s.map->ops->update_elem(s.map, &k, &v, 0)
                            : s.map->ops->delete_elem(s.map, &k);
      if (rc != 0 && rc != -ENOENT && rc != -E2BIG) worker_bad++;
      worker_ops++;
    }
  });
  pthread_t target = worker.native_handle();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
  uint64_t sent = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pthread_kill(target, SIGUSR2);
    sent++;
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  stop = true;
  worker.join();
  sigaction(SIGUSR2, &old, nullptr);

  std::printf("[ storm   ] signals %llu handled %llu ok %llu ebusy %llu enomem %llu\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(s.runs.load()),
              static_cast<unsigned long long>(s.ok.load()),
              static_cast<unsigned long long>(s.busy.load()),
              static_cast<unsigned long long>(s.nomem.load()));
  EXPECT_GT(s.runs.load(), 100u);
  EXPECT_EQ(s.bad.load(), 0u);
  EXPECT_EQ(worker_bad.load(), 0u);
  EXPECT_GT(s.ok.load(), 0u);
  EXPECT_GT(worker_ops.load(), 1000u);
}

INSTANTIATE_TEST_SUITE_P(Prealloc, HashSignalStorm, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

}  // namespace
}  // namespace userbpf::maps
