// Stress: threads allocate, publish (xchg into shared cells, like
// bpf_kptr_xchg), free (plain for never-published objects, rcu for published
// ones) and look up, while a profiling timer runs the same work inside
// SIGPROF handlers on those threads. No deadlock, no corruption (every object
// a reader reaches carries its own address), counts balance at the end.
// USERBPF_STRESS_MS (default 1500) sets the duration.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/time.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "mem/obj_cache.h"

namespace userbpf::mem {
namespace {

constexpr int kCells = 64;
constexpr uint64_t kMagic = 0x5eedf00dcafe0000ull;

struct World {
  SlotTable slots{2, 2};
  BackgroundWorker worker;
  RcuDomain rcu{slots, worker};
  PagePool pages;
  MemAlloc alloc{slots, rcu, worker, pages};
  std::atomic<void*> cells[kCells] = {};
  std::atomic<uint64_t> corrupt{0};
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> handler_runs{0};
  std::atomic<uint64_t> handler_misses{0};
  std::atomic<uint64_t> null_allocs{0};
};

// What the SIGPROF handler runs on. A signal pending when the timer stops can
// still land on any thread (the domain's worker included), so the handler
// counts itself in g_handlers and the test waits for it before the world goes.
std::atomic<World*> g_world{nullptr};
std::atomic<int> g_handlers{0};

uint64_t next_rand(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Word 0 holds the size (readers must not use the hidden header: it becomes
// a list link once the object is freed, as in the kernel); the others a
// pattern derived from the object's address.
void fill(void* p, size_t size) {
  auto* w = static_cast<uint64_t*>(p);
  w[0] = size;
  for (size_t i = 1; i < size / 8; i++) w[i] = kMagic ^ reinterpret_cast<uintptr_t>(p) ^ i;
}

bool check(const void* p) {
  auto* w = static_cast<const uint64_t*>(p);
  size_t size = w[0];
  if (size < 8 || size > 4088) return false;
  for (size_t i = 1; i < size / 8; i++)
    if (w[i] != (kMagic ^ reinterpret_cast<uintptr_t>(p) ^ i)) return false;
  return true;
}

// One "program run": holds a slot for its whole duration.
void run_once(World& w, uint64_t& seed, EnterMode mode) {
  SlotGuard g(w.slots, mode);
  if (!g.ok()) {
    w.handler_misses.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  int slot = g.slot();
  for (int k = 0; k < 4; k++) {
    uint64_t r = next_rand(seed);
    size_t size = 8 + (r % 6) * 40;  // 8 .. 208 bytes, several classes
    int cell = static_cast<int>((r >> 8) % kCells);
    switch ((r >> 16) % 4) {
      case 0: {  // allocate, use, free immediately (never visible to others)
        void* p = w.alloc.alloc(slot, size);
        if (!p) {
          w.null_allocs.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        fill(p, size);
        if (!check(p)) w.corrupt++;
        w.alloc.free(slot, p);
        break;
      }
      case 1: {  // publish a new object; the old one goes through rcu
        void* p = w.alloc.alloc(slot, size);
        if (!p) {
          w.null_allocs.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        fill(p, w.alloc.usable_size(p));  // ours: the header is valid
        void* old = w.cells[cell].exchange(p, std::memory_order_acq_rel);
        if (old) w.alloc.free_rcu(slot, old);
        break;
      }
      case 2: {  // unpublish
        void* old = w.cells[cell].exchange(nullptr, std::memory_order_acq_rel);
        if (old) w.alloc.free_rcu(slot, old);
        break;
      }
      default: {  // lookup: the object stays intact while we hold the slot
        void* p = w.cells[cell].load(std::memory_order_acquire);
        if (p && !check(p)) w.corrupt++;
        break;
      }
    }
  }
  w.ops.fetch_add(1, std::memory_order_relaxed);
}

void on_sigprof(int) {
  static thread_local uint64_t seed = 0x9e3779b97f4a7c15ull;
  g_handlers.fetch_add(1);
  if (World* w = g_world.load()) {
    w->handler_runs.fetch_add(1, std::memory_order_relaxed);
    run_once(*w, seed, EnterMode::kNoWait);
  }
  g_handlers.fetch_sub(1);
}

int stress_ms() {
  const char* env = std::getenv("USERBPF_STRESS_MS");
  return env ? std::atoi(env) : 1500;
}

TEST(MemStress, AllocFreeLookupWithSignalHandlers) {
  auto w = std::make_unique<World>();
  ASSERT_TRUE(w->alloc.init({}).ok());
  g_world.store(w.get());

  struct sigaction sa{}, old{};
  sa.sa_handler = on_sigprof;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGPROF, &sa, &old), 0);
  itimerval it{{0, 200}, {0, 200}};  // every 200 us of process CPU time
  ASSERT_EQ(setitimer(ITIMER_PROF, &it, nullptr), 0);

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; t++) {
    threads.emplace_back([&, t] {
      uint64_t seed = 0x1234567ull * (t + 1);
      while (!stop.load(std::memory_order_relaxed)) run_once(*w, seed, EnterMode::kWait);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(stress_ms()));
  stop = true;
  for (auto& th : threads) th.join();
  itimerval off{};
  setitimer(ITIMER_PROF, &off, nullptr);
  g_world.store(nullptr);
  sigaction(SIGPROF, &old, nullptr);
  while (g_handlers.load() != 0) std::this_thread::yield();

  // Empty the cells and let every grace period finish.
  {
    SlotGuard g(w->slots);
    for (auto& c : w->cells)
      if (void* p = c.exchange(nullptr)) w->alloc.free_rcu(g.slot(), p);
  }
  MemAllocStats st;
  for (int i = 0; i < 200; i++) {
    w->alloc.flush();
    st = w->alloc.stats();
    if (st.rcu_waiting == 0) break;
  }
  EXPECT_EQ(w->corrupt.load(), 0u);
  EXPECT_EQ(st.rcu_waiting, 0u);
  EXPECT_EQ(st.in_use, 0u);
  EXPECT_EQ(st.carved, st.cached + st.depot);
  EXPECT_GT(w->ops.load(), 1000u);
  // Slots are scarce (2 for 3 threads plus handlers): some handler runs miss.
  EXPECT_EQ(w->slots.misses(), w->handler_misses.load());
  fprintf(stderr,
          "stress: %llu runs, %llu in signal handlers (%llu missed a slot), %llu NULL allocs, "
          "%llu objects carved\n",
          (unsigned long long)w->ops.load(), (unsigned long long)w->handler_runs.load(),
          (unsigned long long)w->handler_misses.load(), (unsigned long long)w->null_allocs.load(),
          (unsigned long long)st.carved);
}

}  // namespace
}  // namespace userbpf::mem
