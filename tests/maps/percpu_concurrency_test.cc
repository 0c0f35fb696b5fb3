// Per-CPU maps under concurrency (also run under TSan): more threads than
// CPU slots count without atomics on the copy of the slot they hold, and the
// host's sum over copies is exact; host reads racing with those writers never
// see a torn 8-byte word.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "mem/domain.h"
#include "percpu_test_util.h"

namespace userbpf::maps {
namespace {

using test::host_lookup;
using test::host_update;
using test::PercpuFixture;

constexpr uint32_t kCpus = 2;
constexpr int kThreads = 6;  // > kCpus: slots are shared, one holder at a time

// What a program run does: hold a slot, look the value up, increment its
// copy with a plain load and store (no atomic read-modify-write).
void run_increments(mem::MemDomain& dom, Map* m, uint32_t key, int runs, int per_run) {
  for (int r = 0; r < runs; r++) {
    mem::SlotGuard g(dom.slots);
    ASSERT_TRUE(g.ok());
    for (int i = 0; i < per_run; i++) {
      auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &key));
      ASSERT_TRUE(p);
      uint64_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
      __atomic_store_n(p, v + 1, __ATOMIC_RELAXED);
    }
  }
}

uint64_t host_sum(Map* m, uint32_t key) {
  std::vector<uint64_t> v(kCpus);
  EXPECT_EQ(host_lookup(m, &key, v.data()), 0);
  uint64_t s = 0;
  for (uint64_t x : v) s += x;
  return s;
}

class PercpuConcurrency : public ::testing::TestWithParam<MapType> {};

TEST_P(PercpuConcurrency, SumOverCopiesIsExact) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(GetParam(), 4, 8, 4));
  ASSERT_TRUE(m);
  uint32_t key = 1;
  std::vector<uint64_t> zero(kCpus, 0);
  ASSERT_EQ(host_update(m, &key, zero.data()), 0);
  constexpr int kRuns = 2000, kPerRun = 10;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&] { run_increments(f.dom(), m, key, kRuns, kPerRun); });
  // A reader meanwhile: the sum never goes down and never passes the total.
  uint64_t last = 0;
  for (int i = 0; i < 200; i++) {
    uint64_t s = host_sum(m, key);
    EXPECT_GE(s, last);
    EXPECT_LE(s, uint64_t{kThreads} * kRuns * kPerRun);
    last = s;
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(host_sum(m, key), uint64_t{kThreads} * kRuns * kPerRun);
}

// Writers keep the high and low halves of their copy equal after every
// store; a reader copying all copies meanwhile must always see equal halves.
// The low halves add up to the number of steps.
TEST_P(PercpuConcurrency, HostReadsNeverTearWords) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(GetParam(), 4, 8, 4));
  ASSERT_TRUE(m);
  uint32_t key = 2;
  std::vector<uint64_t> zero(kCpus, 0);
  ASSERT_EQ(host_update(m, &key, zero.data()), 0);
  constexpr int kWriters = 3, kRuns = 3000, kPerRun = 100;
  std::atomic<int> done{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kWriters; t++)
    ts.emplace_back([&] {
      for (int r = 0; r < kRuns; r++) {
        mem::SlotGuard g(f.dom().slots);
        for (int i = 0; i < kPerRun; i++) {
          auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &key));
          uint32_t lo = static_cast<uint32_t>(__atomic_load_n(p, __ATOMIC_RELAXED)) + 1;
          __atomic_store_n(p, (uint64_t{lo} << 32) | lo, __ATOMIC_RELAXED);
        }
      }
      done.fetch_add(1);
    });
  uint64_t torn = 0, reads = 0;
  std::vector<uint64_t> v(kCpus);
  do {
    ASSERT_EQ(host_lookup(m, &key, v.data()), 0);
    for (uint64_t x : v) torn += (x >> 32) != (x & 0xffffffffu);
    reads++;
  } while (done.load() < kWriters);
  for (auto& t : ts) t.join();
  EXPECT_EQ(torn, 0u) << "of " << reads << " reads";
  ASSERT_EQ(host_lookup(m, &key, v.data()), 0);
  uint64_t steps = 0;
  for (uint64_t x : v) steps += x & 0xffffffffu;
  EXPECT_EQ(steps, uint64_t{kWriters} * kRuns * kPerRun);
}

// Host updates of every copy racing with program updates and deletes of
// other keys (hash: elements allocated, retired and reused meanwhile).
TEST(PercpuHashConcurrency, HostAndProgramUpdatesMix) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_HASH, 4, 8, 64));
  ASSERT_TRUE(m);
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; t++)
    ts.emplace_back([&, t] {
      uint32_t i = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        mem::SlotGuard g(f.dom().slots);
        uint32_t k = (i++ * 7 + t) % 32;
        uint64_t v = k;
        // Program inserts never wait: under this churn (deletes of elements
        // still in their grace period) they may find no element, as with
        // the plain hash map.
        long rc = m->ops->update_elem(m, &k, &v, kBpfAny);
        EXPECT_TRUE(rc == 0 || rc == -ENOMEM) << rc;
        if (i % 3 == 0) m->ops->delete_elem(m, &k);
        // Each copy holds 0 (inserted on another CPU), k (a program) or
        // k + 32 * cpu (the host).
        if (auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &k))) {
          uint64_t x = __atomic_load_n(p, __ATOMIC_RELAXED);
          EXPECT_TRUE(x == 0 || x % 32 == k) << x << " for key " << k;
        }
      }
    });
  std::vector<uint64_t> v(kCpus);
  for (int i = 0; i < 5000; i++) {
    uint32_t k = i % 32;
    for (uint32_t c = 0; c < kCpus; c++) v[c] = k + 32 * c;
    long rc = host_update(m, &k, v.data());
    EXPECT_TRUE(rc == 0) << rc;
    if (host_lookup(m, &k, v.data()) == 0)
      for (uint64_t x : v) EXPECT_TRUE(x == 0 || x % 32 == k) << x << " for key " << k;
  }
  stop.store(true);
  for (auto& t : ts) t.join();
}

INSTANTIATE_TEST_SUITE_P(Types, PercpuConcurrency,
                         ::testing::Values(MapType::kPERCPU_ARRAY, MapType::kPERCPU_HASH),
                         [](const ::testing::TestParamInfo<MapType>& i) {
                           return i.param == MapType::kPERCPU_ARRAY ? "Array" : "Hash";
                         });

}  // namespace
}  // namespace userbpf::maps
