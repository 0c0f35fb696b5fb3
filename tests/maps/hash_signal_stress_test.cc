// Stress: threads update, delete and look up random keys of one hash map
// while signals interrupt them and run "programs" (a slot entered without
// waiting, lookups and updates) inside the handlers on the same threads. No
// crash, no torn or recycled value seen inside a section, and at the end the
// element count matches a get_next_key walk (allocation counts balance).
// USERBPF_STRESS_SECONDS=N runs longer (default well under a second per mode).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <optional>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "map_test_util.h"
#include "signal_kicker.h"
#include "maps/hash_map.h"
#include "maps/hash_map_internal.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

constexpr uint32_t kKeys = 1024;
constexpr uint32_t kMaxEntries = 512;

struct Value {
  uint64_t key, not_key, key3, gen;
};
Value value_of(uint32_t k, uint64_t gen) {
  return {k, ~uint64_t{k}, uint64_t{k} * 3, gen};
}
// Whether the bytes at p are a whole value written for key k.
bool value_ok(const void* p, uint32_t k) {
  const auto* w = static_cast<const uint64_t*>(p);
  return __atomic_load_n(&w[0], __ATOMIC_RELAXED) == k &&
         __atomic_load_n(&w[1], __ATOMIC_RELAXED) == ~uint64_t{k} &&
         __atomic_load_n(&w[2], __ATOMIC_RELAXED) == uint64_t{k} * 3;
}

struct Shared {
  Map* map = nullptr;
  mem::MemDomain* dom = nullptr;
  std::atomic<uint64_t> handler_runs{0}, handler_misses{0}, bad{0}, ops{0};
};
Shared g_s;

bool rc_ok(long rc) {
  return rc == 0 || rc == -ENOENT || rc == -E2BIG || rc == -ENOMEM || rc == -EBUSY || rc == -EEXIST;
}

void on_signal(int) {
  int saved_errno = errno;
  Shared& s = g_s;
  mem::SlotGuard g(s.dom->slots, mem::EnterMode::kNoWait);
  if (!g.ok()) {
    s.handler_misses.fetch_add(1, std::memory_order_relaxed);
    errno = saved_errno;
    return;
  }
  s.handler_runs.fetch_add(1, std::memory_order_relaxed);
  // A cheap per-thread generator: the handler may not call into libc's rand.
  static thread_local uint64_t x = 0x9e3779b97f4a7c15ull;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  uint32_t k = static_cast<uint32_t>(x % kKeys);
  void* p = s.map->ops->lookup_elem(s.map, &k);
  if (p && !value_ok(p, k)) s.bad.fetch_add(1, std::memory_order_relaxed);
  Value v = value_of(k, x);
  long rc = s.map->ops->update_elem(s.map, &k, &v, 0);
  if (!rc_ok(rc)) s.bad.fetch_add(1, std::memory_order_relaxed);
  // The old pointer still shows its key's whole value inside the section.
  if (p && !value_ok(p, k)) s.bad.fetch_add(1, std::memory_order_relaxed);
  uint32_t k2 = static_cast<uint32_t>((x >> 20) % kKeys);
  rc = s.map->ops->delete_elem(s.map, &k2);
  if (!rc_ok(rc)) s.bad.fetch_add(1, std::memory_order_relaxed);
  errno = saved_errno;
}

double stress_seconds() {
  const char* e = std::getenv("USERBPF_STRESS_SECONDS");
  double s = e ? std::atof(e) : 0;
  return s > 0 ? s : 0.6;
}

// Runs worker(seed + i) on n threads for stress_seconds() while SIGUSR2
// interrupts them every interval (their handlers run map operations too),
// then sets stop and joins them.
template <class Worker>
void run_kicked(int n, uint32_t seed, std::chrono::microseconds interval, std::atomic<bool>& stop,
                Worker& worker) {
  std::vector<std::thread> threads;
  for (int i = 0; i < n; i++) threads.emplace_back(worker, seed + static_cast<uint32_t>(i));
  std::vector<pthread_t> ids;
  for (auto& t : threads) ids.push_back(t.native_handle());
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, interval);
  std::this_thread::sleep_for(std::chrono::duration<double>(stress_seconds()));
  stop = true;
  kicker.stop();
  for (auto& t : threads) t.join();
}

// Each test: a HASH map of the parameter's flags in g_s, counters cleared,
// SIGUSR2 handled by handler while the test runs.
class HashSignalRcuStress : public ::testing::TestWithParam<uint32_t> {
 protected:
  HashMap* start(void (*handler)(int)) {
    m_ = test::must_create(
        test::make_attr(MapType::kHASH, 4, sizeof(Value), kMaxEntries, GetParam()));
    if (!m_) return nullptr;
    HashMap* h = to_htab(m_.get());
    g_s.map = m_.get();
    g_s.dom = h->dom;
    g_s.handler_runs = g_s.handler_misses = g_s.bad = g_s.ops = 0;
    handler_.emplace(SIGUSR2, handler);
    return handler_->ok() ? h : nullptr;
  }
  MapPtr m_;
  std::optional<userbpf::test::ScopedSignal> handler_;
};

TEST_P(HashSignalRcuStress, CountMatchesWalk) {
  HashMap* h = start(on_signal);
  ASSERT_NE(h, nullptr);
  Map* map = h;

  std::atomic<bool> stop{false};
  auto worker = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = rng() % kKeys;
      uint32_t what = rng() % 4;
      long rc = 0;
      if (what == 0) {
        Value v = value_of(k, rng());
        rc = map->ops->update_elem(map, &k, &v, 0);
      } else if (what == 1) {
        rc = map->ops->delete_elem(map, &k);
      } else if (what == 2) {
        Value v{};
        rc = map->ops->lookup_elem_copy(map, &k, &v, 0);
        if (rc == 0 && !value_ok(&v, k)) g_s.bad++;
      } else {
        // A program run: pointer lookups inside a section.
        mem::SlotGuard g(h->dom->slots);
        void* p = map->ops->lookup_elem(map, &k);
        if (p && !value_ok(p, k)) g_s.bad++;
        uint32_t k2 = rng() % kKeys;
        Value v = value_of(k2, rng());
        rc = map->ops->update_elem(map, &k2, &v, 0);
        if (p && !value_ok(p, k)) g_s.bad++;
      }
      if (!rc_ok(rc)) g_s.bad++;
      g_s.ops.fetch_add(1, std::memory_order_relaxed);
    }
  };
  run_kicked(4, 100, std::chrono::microseconds(50), stop, worker);

  EXPECT_EQ(g_s.bad.load(), 0u);
  EXPECT_GT(g_s.handler_runs.load(), 0u);
  std::printf("[ stress  ] ops %llu handler runs %llu misses %llu\n",
              static_cast<unsigned long long>(g_s.ops.load()),
              static_cast<unsigned long long>(g_s.handler_runs.load()),
              static_cast<unsigned long long>(g_s.handler_misses.load()));

  // count == keys reachable by get_next_key, each once, each whole.
  std::set<uint32_t> seen;
  uint32_t cur = 0, next = 0;
  const void* prev = nullptr;
  while (map->ops->get_next_key(map, prev, &next) == 0) {
    ASSERT_TRUE(seen.insert(next).second) << "key " << next << " twice";
    Value v{};
    ASSERT_EQ(map->ops->lookup_elem_copy(map, &next, &v, 0), 0);
    EXPECT_TRUE(value_ok(&v, next));
    cur = next;
    prev = &cur;
  }
  EXPECT_EQ(seen.size(), h->count.load());
  EXPECT_LE(seen.size(), kMaxEntries);
  // Allocation counts balance once every grace period is over.
  if (h->ma) {
    h->ma->flush();
    ASSERT_TRUE(h->dom->rcu.synchronize_rcu(mem::RcuFlavor::kBoth).ok());
    h->ma->flush();
    h->ma->flush();
    mem::MemAllocStats st = h->ma->stats();
    EXPECT_EQ(st.rcu_waiting, 0u);
    EXPECT_EQ(st.in_use, seen.size());
  } else {
    h->pool.reclaim_host();
    EXPECT_EQ(h->pool.waiting(), 0u);
    EXPECT_LE(h->pool.carved(), h->pool.capacity());
    EXPECT_EQ(h->pool.carved(), seen.size() + h->pool.free_elems());
  }
}

// Handlers that enter no slot of their own: an operation interrupting a
// thread that holds a slot (a program run doing updates and deletes) reuses
// that slot (HtabSection takes held_slot()), and so its element cache, in the
// middle of the interrupted thread's own alloc or free.
void on_signal_same_slot(int) {
  int saved_errno = errno;
  Shared& s = g_s;
  const bool nested = s.dom->slots.held_slot() >= 0;
  s.handler_runs.fetch_add(1, std::memory_order_relaxed);
  if (!nested) s.handler_misses.fetch_add(1, std::memory_order_relaxed);
  static thread_local uint64_t x = 0x2545f4914f6cdd1dull;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  uint32_t k = static_cast<uint32_t>(x % kKeys);
  void* p = nested ? s.map->ops->lookup_elem(s.map, &k) : nullptr;
  if (p && !value_ok(p, k)) s.bad.fetch_add(1, std::memory_order_relaxed);
  Value v = value_of(k, x);
  if (!rc_ok(s.map->ops->update_elem(s.map, &k, &v, 0)))
    s.bad.fetch_add(1, std::memory_order_relaxed);
  uint32_t k2 = static_cast<uint32_t>((x >> 20) % kKeys);
  if (!rc_ok(s.map->ops->delete_elem(s.map, &k2))) s.bad.fetch_add(1, std::memory_order_relaxed);
  if (p && !value_ok(p, k)) s.bad.fetch_add(1, std::memory_order_relaxed);
  errno = saved_errno;
}

TEST_P(HashSignalRcuStress, HandlerReusesTheRunsSlot) {
  HashMap* h = start(on_signal_same_slot);
  ASSERT_NE(h, nullptr);
  Map* map = h;
  std::atomic<bool> stop{false};
  auto worker = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      mem::SlotGuard run(h->dom->slots);  // a program run: many operations
      for (int i = 0; i < 64; i++) {
        uint32_t k = rng() % kKeys;
        long rc;
        if (rng() & 1) {
          Value v = value_of(k, rng());
          rc = map->ops->update_elem(map, &k, &v, 0);
        } else {
          rc = map->ops->delete_elem(map, &k);
        }
        if (!rc_ok(rc)) g_s.bad++;
        g_s.ops.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };
  run_kicked(3, 200, std::chrono::microseconds(30), stop, worker);

  EXPECT_EQ(g_s.bad.load(), 0u);
  EXPECT_GT(g_s.handler_runs.load() - g_s.handler_misses.load(), 0u);
  std::printf("[ stress  ] ops %llu handler runs %llu (on the run's slot %llu)\n",
              static_cast<unsigned long long>(g_s.ops.load()),
              static_cast<unsigned long long>(g_s.handler_runs.load()),
              static_cast<unsigned long long>(g_s.handler_runs.load() - g_s.handler_misses.load()));
  uint32_t n = 0, cur = 0, next = 0;
  const void* prev = nullptr;
  while (map->ops->get_next_key(map, prev, &next) == 0) {
    Value v{};
    ASSERT_EQ(map->ops->lookup_elem_copy(map, &next, &v, 0), 0);
    EXPECT_TRUE(value_ok(&v, next));
    cur = next;
    prev = &cur;
    n++;
  }
  EXPECT_EQ(n, h->count.load());
  if (!h->ma) {
    // carved == live + free + waiting, and nothing waits after a reclaim.
    EXPECT_EQ(h->pool.carved(), n + h->pool.free_elems() + h->pool.waiting());
    h->pool.reclaim_host();
    EXPECT_EQ(h->pool.waiting(), 0u);
    EXPECT_EQ(h->pool.carved(), n + h->pool.free_elems());
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, HashSignalRcuStress, ::testing::Values(0u, kBpfFNoPrealloc),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param ? std::string("NoPrealloc") : std::string("Prealloc");
                         });

}  // namespace
}  // namespace userbpf::maps
