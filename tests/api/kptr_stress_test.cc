// Stress: threads run programs that bpf_obj_new, store with bpf_kptr_xchg
// into a hash map, take objects out and drop them, look them up, and drop
// new objects right away, while
// a timer thread interrupts those threads with signals whose handlers run
// the same programs on the same threads (a nested run takes another slot or
// is a miss). No deadlock, no corruption (every object a program reaches
// holds b == 2 * a; programs return -9 otherwise), and bpf_obj_new's
// allocation count is back to its baseline once the map is emptied.
// Both engines. USERBPF_STRESS_MS (default 600 per engine) sets the duration.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "loader/object.h"
#include "signal_kicker.h"
#include "mem/domain.h"
#include "vm/jit/jit.h"
#include "vm/program.h"
#include "vm/run_context.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USERBPF_KPTR_TSAN 1
#endif
#endif

namespace userbpf {
namespace {

struct Args {
  uint32_t key;
  uint32_t pad;
  uint64_t val;
  uint64_t out;
};

constexpr uint32_t kKeys = 16;

struct World {
  mem::MemDomain dom{mem::MemDomainOptions{4, 2, {}}};
  std::unique_ptr<loader::LoadedObject> obj;
  vm::Program* progs[5] = {};  // kNames
  bool jit = false;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> runs{0}, handler_runs{0}, misses{0}, corrupt{0}, faults{0}, nulls{0};
  std::atomic<uint64_t> returned_0[5] = {};  // runs of each program that returned 0
};

World* g_world;

// peek_hash last: TSan runs skip it. new_drop_loop drops each object
// right after its new (the interpreter keeps it for the run's next new:
// run_frames' kept object); new_drop_many holds 40 at once, then pairs.
const char* const kNames[5] = {"stash_hash", "take_hash", "new_drop_loop", "new_drop_many",
                               "peek_hash"};

uint64_t next_rand(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// One program run the way test_run does it: a slot (never waiting inside a
// handler), the runtime's RCU section, the chosen engine. No allocation.
void run_one(World& w, uint64_t& seed, bool in_handler) {
  uint64_t r = next_rand(seed);
  int which = static_cast<int>(r % 5);
#ifdef USERBPF_KPTR_TSAN
  // peek reads the kptr field with a plain load while others exchange it:
  // fine for BPF, a report for TSan. Not under TSan.
  which = static_cast<int>(r % 4);
#endif
  Args a{static_cast<uint32_t>((r >> 8) % kKeys), 0, (r >> 16) & 0xffffff, 0};
  mem::SlotTable& slots = w.dom.slots;
  int slot = slots.enter(in_handler ? mem::EnterMode::kNoWait : mem::EnterMode::kWait);
  if (slot < 0) {
    w.misses.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  vm::RunContext rc;
  rc.prog = w.progs[which];
  rc.ctx = &a;
  rc.ctx_size = sizeof(a);
  rc.cpu = static_cast<uint32_t>(slot) % slots.num_slots();
  rc.num_cpus = slots.num_slots();
  mem::RcuDomain* outer = mem::RcuReadGuard::set_current(&w.dom.rcu);
  auto res = w.jit ? vm::jit_run(*rc.prog, rc) : vm::interpret(*rc.prog, rc);
  mem::RcuReadGuard::set_current(outer);
  slots.leave(slot);
  (in_handler ? w.handler_runs : w.runs).fetch_add(1, std::memory_order_relaxed);
  if (!res.ok()) {
    w.faults.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const auto r0 = static_cast<int32_t>(res.value());
  // new_drop_loop and new_drop_many: -1 no object, -3 one not zeroed;
  // new_drop_many's out: the sum of 3 * i.
  bool bad = r0 == -9;
  if (which == 2 || which == 3) bad = r0 == -3;
  if (which == 3 && r0 == 0 && a.out != 3 * (63 * 64 / 2)) bad = true;
  if (bad) w.corrupt.fetch_add(1, std::memory_order_relaxed);
  if (r0 == 0) w.returned_0[which].fetch_add(1, std::memory_order_relaxed);
  if (r0 == -1) w.nulls.fetch_add(1, std::memory_order_relaxed);
}

thread_local uint64_t t_handler_seed = 0;

void on_signal(int) {
  if (!g_world) return;
  int saved = errno;
  if (!t_handler_seed) t_handler_seed = reinterpret_cast<uintptr_t>(&saved) | 1;
  run_one(*g_world, t_handler_seed, true);
  errno = saved;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void stress(bool jit) {
  World w;
  w.jit = jit;
  auto bytes = read_file(std::string(USERBPF_TEST_PROGS_DIR) + "/kptr_obj.bpf.o");
  ASSERT_FALSE(bytes.empty());
  auto spec = loader::open_object(bytes.data(), bytes.size(), "kptr_obj.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  auto obj = loader::load_object(*spec, &w.dom);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  w.obj = std::move(*obj);
  for (int i = 0; i < 5; i++) {
    for (auto& p : w.obj->programs)
      if (p->name == kNames[i]) w.progs[i] = p.get();
    ASSERT_NE(w.progs[i], nullptr) << kNames[i];
    if (jit) ASSERT_TRUE(vm::ensure_jit(*w.progs[i]).ok());
  }
  // new_drop_loop's new and drop are the interpreter's known pair (else
  // nothing here would run the kept-object path).
  const auto& form = w.progs[2]->interp_insns;
  EXPECT_TRUE(std::any_of(form.begin(), form.end(),
                          [](const isa::Insn& in) { return in.code == vm::kExecObjDropKnown; }));
  const uint64_t base = w.dom.global_ma.stats().in_use;

  userbpf::test::ScopedSignal handler_scope(SIGUSR2, on_signal);
  ASSERT_TRUE(handler_scope.ok());
  g_world = &w;

  const char* env = std::getenv("USERBPF_STRESS_MS");
  const int ms = env ? std::atoi(env) : 600;
  constexpr int kThreads = 3;
  std::vector<std::thread> threads;
  std::vector<pthread_t> ids(kThreads);
  std::atomic<int> started{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      ids[t] = pthread_self();
      started.fetch_add(1);
      uint64_t seed = 0x9e3779b97f4a7c15ull * (t + 1);
      while (!w.stop.load(std::memory_order_relaxed)) run_one(w, seed, false);
    });
  }
  while (started.load() < kThreads) std::this_thread::yield();
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, std::chrono::microseconds(200));
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  w.stop.store(true);
  kicker.stop();
  for (auto& t : threads) t.join();
  g_world = nullptr;

  std::printf("[ kptr    ] %s: runs %llu, in handlers %llu, misses %llu, null allocs %llu\n",
              jit ? "jit" : "interp", (unsigned long long)w.runs.load(),
              (unsigned long long)w.handler_runs.load(), (unsigned long long)w.misses.load(),
              (unsigned long long)w.nulls.load());
  EXPECT_EQ(w.corrupt.load(), 0u);
  EXPECT_EQ(w.faults.load(), 0u);
  EXPECT_GT(w.runs.load(), 100u);
  EXPECT_GT(w.handler_runs.load(), 0u);
  for (int i = 0; i < 4; i++) EXPECT_GT(w.returned_0[i].load(), 0u) << kNames[i];

  // Empty the map from the host: every stored object is dropped.
  maps::Map* hash = nullptr;
  for (auto& m : w.obj->maps)
    if (m->attr.name == "kptr_hash") hash = m.get();
  ASSERT_NE(hash, nullptr);
  for (uint32_t k = 0; k < kKeys; k++) {
    mem::RcuReadGuard g(w.dom.rcu);
    long err = hash->ops->delete_elem(hash, &k);
    EXPECT_TRUE(err == 0 || err == -ENOENT) << err;
  }
  ASSERT_TRUE(w.dom.rcu.rcu_barrier().ok());
  w.dom.global_ma.flush();
  EXPECT_EQ(w.dom.global_ma.stats().in_use, base);
  w.obj.reset();
}

TEST(KptrStress, Interpreter) {
  stress(false);
}

TEST(KptrStress, Jit) {
  if (!vm::jit_supported()) GTEST_SKIP() << "no JIT";
  stress(true);
}

}  // namespace
}  // namespace userbpf
