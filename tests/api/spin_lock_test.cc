// bpf_spin_lock / bpf_spin_unlock end to end, on both engines
// (tests/progs/spin_lock.bpf.c):
//   - T threads run lock; a++; b++; unlock on one value M times while the
//     host reads it with BPF_F_LOCK: the halves never differ, and both end
//     at T * M exactly;
//   - the misuses the kernel's verifier refuses stop the run with the
//     verifier's words, and a run that ends holding the lock releases it;
//   - signal handlers run the same program on threads that are running it
//     (the lock may be held by the code a handler interrupted): no deadlock,
//     every run completes or fails with EDEADLK/EBUSY, and the counts
//     balance; two threads whose handlers wait for each other's interrupted
//     holders both give up (EBUSY).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "loader/object.h"
#include "signal_kicker.h"
#include "maps/map.h"
#include "mem/domain.h"
#include "userbpf/userbpf.h"
#include "vm/jit/jit.h"
#include "vm/run_context.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USERBPF_SPIN_TSAN 1
#endif
#endif

namespace {

using userbpf::Engine;

struct Args {
  uint32_t key = 0;
  uint32_t which = 0;  // 0: lock_array, 1: lock_hash
  uint64_t n = 0;
  uint64_t out = 0;
};

struct Val {
  uint32_t lock;
  uint32_t tag;
  uint64_t a;
  uint64_t b;
};

constexpr uint64_t kBpfFLock = 4;

std::string prog_path() {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/spin_lock.bpf.o";
}

class SpinLockApi : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    userbpf::RuntimeOptions ro;
    ro.num_cpus = 4;
    auto r = userbpf::Runtime::create(ro);
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, prog_path());
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
    auto st = obj->load();
    ASSERT_TRUE(st.ok()) << st.error().message;
    array = std::make_unique<userbpf::Map>(obj->find_map("lock_array").value());
    hash = std::make_unique<userbpf::Map>(obj->find_map("lock_hash").value());
    uint32_t k0 = 0;
    Val zero{};
    ASSERT_TRUE(hash->update(&k0, &zero, 0).ok());
  }

  userbpf::Result<userbpf::RunResult> run(const char* prog, Args& a, uint32_t repeat = 1) {
    auto p = obj->find_program(prog);
    if (!p.ok()) return p.error();
    userbpf::RunOptions o;
    o.ctx = &a;
    o.ctx_size = sizeof(a);
    o.repeat = repeat;
    o.engine = GetParam();
    auto r = p->run(o);
    if (r.ok()) std::memcpy(&a, r->ctx_out.data(), sizeof(a));
    return r;
  }

  Val read(userbpf::Map& m, uint32_t key) {
    Val v{};
    auto st = m.lookup(&key, &v, kBpfFLock);
    EXPECT_TRUE(st.ok()) << st.error().message;
    return v;
  }

  // One bump of key 0: succeeds only if nothing holds its lock any more
  // (a lock left held would make it wait forever).
  void expect_unlocked(uint32_t which) {
    Args a{0, which, 1, 0};
    auto r = run("bump", a);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
  std::unique_ptr<userbpf::Map> array, hash;
};

TEST_P(SpinLockApi, CountsAreExactAndReadsNeverTorn) {
  constexpr int kThreads = 4;
  constexpr uint32_t kRuns = 20000;
  for (uint32_t which : {0u, 1u}) {
    SCOPED_TRACE(which ? "hash" : "array");
    userbpf::Map& m = which ? *hash : *array;
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> torn{0}, reads{0}, prog_torn{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
      threads.emplace_back([&] {
        // Not before the host reads (on 2 cores the runs could otherwise
        // all end before the reader is ever scheduled).
        while (reads.load() == 0) std::this_thread::yield();
        Args a{0, which, 1, 0};
        auto r = run("bump", a, kRuns);
        EXPECT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(r->retval, 0u);
      });
    }
    std::thread host([&] {
      while (!stop.load()) {
        Val v = read(m, 0);
        if (v.a != v.b) torn.fetch_add(1);
        reads.fetch_add(1);
      }
    });
    std::thread reader([&] {
      while (!stop.load()) {
        Args a{0, which, 0, 0};
        auto r = run("torn", a, 50);
        ASSERT_TRUE(r.ok()) << r.error().message;
        prog_torn.fetch_add(r->retval);
      }
    });
    for (auto& t : threads) t.join();
    stop.store(true);
    host.join();
    reader.join();
    EXPECT_EQ(torn.load(), 0u);
    EXPECT_EQ(prog_torn.load(), 0u);
    EXPECT_GT(reads.load(), 0u);
    Val v = read(m, 0);
    EXPECT_EQ(v.a, uint64_t{kThreads} * kRuns);
    EXPECT_EQ(v.b, uint64_t{kThreads} * kRuns);
    EXPECT_EQ(v.lock, 0u);  // host copies show the lock as zeros
  }
}

TEST_P(SpinLockApi, MisusesStopTheRunAndReleaseTheLock) {
  struct Case {
    const char* prog;
    int err;
    const char* what;
  };
  const Case cases[] = {
      {"lock_twice", EINVAL, "Locking two bpf_spin_locks are not allowed"},
      {"lock_two", EINVAL, "Locking two bpf_spin_locks are not allowed"},
      {"no_unlock", EINVAL, "bpf_spin_unlock is missing"},
      {"unlock_only", EINVAL, "bpf_spin_unlock without taking a lock"},
      {"unlock_other", EINVAL, "bpf_spin_unlock of different lock"},
      {"lock_stack", EINVAL, "not the struct bpf_spin_lock of a map value"},
      {"lock_not_field", EINVAL, "not the struct bpf_spin_lock of a map value"},
      {"update_under_lock", EINVAL, "function calls are not allowed while holding a lock"},
      {"fault_under_lock", EFAULT, "null pointer load"},
  };
  for (uint32_t which : {0u, 1u}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(c.prog) + (which ? " hash" : " array"));
      Args a{0, which, 1, 0};
      auto r = run(c.prog, a);
      ASSERT_FALSE(r.ok()) << "retval " << r->retval;
      EXPECT_EQ(r.error().code, c.err) << r.error().message;
      EXPECT_NE(r.error().message.find(c.what), std::string::npos) << r.error().message;
      expect_unlocked(which);
      if (which == 0) {  // lock_two and unlock_other lock array keys 0 and 1
        Args b{1, 0, 1, 0};
        ASSERT_TRUE(run("bump", b).ok());
      }
    }
  }
  // In a repeat loop every run releases: 100 runs that return holding it.
  Args a{0, 0, 1, 0};
  auto r = run("no_unlock", a, 100);
  ASSERT_FALSE(r.ok());
  expect_unlocked(0);
}

TEST_P(SpinLockApi, ProgramUpdatesWithLockFlag) {
  for (uint32_t which : {0u, 1u}) {
    Args a{0, which, 77, 1};
    ASSERT_TRUE(run("locked_update", a).ok());
    EXPECT_EQ(a.out, 0u);
    Val v = read(which ? *hash : *array, 0);
    EXPECT_EQ(v.a, 77u);
    EXPECT_EQ(v.b, 77u);
    EXPECT_EQ(v.tag, 7u);
    expect_unlocked(which);
  }
  Args a{9, 0, 1, 1};  // array key out of range
  ASSERT_TRUE(run("locked_update", a).ok());
  EXPECT_EQ(static_cast<int64_t>(a.out), -E2BIG);
}

INSTANTIATE_TEST_SUITE_P(Engines, SpinLockApi,
                         ::testing::Values(Engine::kInterpreter, Engine::kJit),
                         [](const auto& info) {
                           return info.param == Engine::kJit ? "jit" : "interp";
                         });

// ---- programs in signal handlers (the runtime's own path, as test_run and
// kptr_stress_test do: a slot that never waits inside a handler, the RCU
// section, the engine; no allocation unless a run fails).

struct World {
  userbpf::mem::MemDomain dom{userbpf::mem::MemDomainOptions{6, 2, {}}};
  std::unique_ptr<userbpf::loader::LoadedObject> obj;
  userbpf::vm::Program* bump = nullptr;
  userbpf::vm::Program* hold = nullptr;
  userbpf::maps::Map* array = nullptr;
  userbpf::maps::Map* hash = nullptr;
  userbpf::maps::Map* ctl = nullptr;
  bool jit = false;
};

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void load_world(World& w, bool jit) {
  using namespace userbpf;
  w.jit = jit;
  auto bytes = read_file(prog_path());
  ASSERT_FALSE(bytes.empty());
  auto spec = loader::open_object(bytes.data(), bytes.size(), "spin_lock.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  auto obj = loader::load_object(*spec, &w.dom);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  w.obj = std::move(*obj);
  for (auto& p : w.obj->programs) {
    if (p->name == "bump") w.bump = p.get();
    if (p->name == "hold") w.hold = p.get();
  }
  ASSERT_NE(w.bump, nullptr);
  ASSERT_NE(w.hold, nullptr);
  if (jit) {
    ASSERT_TRUE(vm::ensure_jit(*w.bump).ok());
    ASSERT_TRUE(vm::ensure_jit(*w.hold).ok());
  }
  for (auto& m : w.obj->maps) {
    if (m->attr.name == "lock_array") w.array = m.get();
    if (m->attr.name == "lock_hash") w.hash = m.get();
    if (m->attr.name == "ctl") w.ctl = m.get();
  }
  ASSERT_TRUE(w.array && w.hash && w.ctl);
  uint32_t k0 = 0;
  Val zero{};
  mem::RcuReadGuard g(w.dom.rcu);
  ASSERT_EQ(w.hash->ops->update_elem(w.hash, &k0, &zero, 0), 0);
}

// 0 for a run that returned 0, -1 for a miss (no free slot), else the errno.
int run_one(World& w, userbpf::vm::Program* p, Args& a, bool in_handler) {
  using namespace userbpf;
  mem::SlotTable& slots = w.dom.slots;
  const int slot = slots.enter(in_handler ? mem::EnterMode::kNoWait : mem::EnterMode::kWait);
  if (slot < 0) return -1;
  vm::RunContext rc;
  rc.prog = p;
  rc.ctx = &a;
  rc.ctx_size = sizeof(a);
  rc.cpu = static_cast<uint32_t>(slot) % slots.num_slots();
  rc.num_cpus = slots.num_slots();
  mem::RcuDomain* outer = mem::RcuReadGuard::set_current(&w.dom.rcu);
  auto res = w.jit ? vm::jit_run(*p, rc) : vm::interpret(*p, rc);
  mem::RcuReadGuard::set_current(outer);
  slots.leave(slot);
  if (!res.ok()) return res.error().code;
  return res.value() == 0 ? 0 : -2;
}

Val value(World& w, uint32_t which, uint32_t key) {
  using namespace userbpf::maps;
  Map* m = which ? w.hash : w.array;
  Val v{};
  EXPECT_EQ(m->ops->lookup_elem_copy(m, &key, &v, kBpfFLock), 0);
  return v;
}

// Handler-side state (async-signal-safe: atomics and thread-locals only).
struct Stress {
  World* w = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ok[2], deadlk{0}, busy{0}, miss{0}, other{0}, top_fail{0}, handler_runs{0};
};
Stress* g_stress = nullptr;
thread_local uint64_t t_rand = 0;

void on_stress_signal(int) {
  Stress* s = g_stress;
  if (s == nullptr) return;
  const int saved = errno;
  if (t_rand == 0) t_rand = reinterpret_cast<uintptr_t>(&saved) | 1;
  t_rand ^= t_rand << 13;
  t_rand ^= t_rand >> 7;
  t_rand ^= t_rand << 17;
  const uint32_t which = t_rand & 1;
  Args a{0, which, 1, 0};
  const int rc = run_one(*s->w, s->w->bump, a, true);
  s->handler_runs.fetch_add(1);
  if (rc == 0)
    s->ok[which].fetch_add(1);
  else if (rc == EDEADLK)
    s->deadlk.fetch_add(1);
  else if (rc == EBUSY)
    s->busy.fetch_add(1);
  else if (rc == -1)
    s->miss.fetch_add(1);
  else
    s->other.fetch_add(1);
  errno = saved;
}

void signal_stress(bool jit) {
  World w;
  load_world(w, jit);
  Stress s;
  s.w = &w;
  s.ok[0] = 0;
  s.ok[1] = 0;
  userbpf::test::ScopedSignal handler_scope(SIGUSR2, on_stress_signal);
  ASSERT_TRUE(handler_scope.ok());
  g_stress = &s;

  const char* env = std::getenv("USERBPF_STRESS_MS");
  const int ms = env ? std::atoi(env) : 500;
  constexpr int kThreads = 3;
  std::vector<std::thread> threads;
  std::vector<pthread_t> ids(kThreads);
  std::atomic<int> started{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      ids[t] = pthread_self();
      started.fetch_add(1);
      for (uint64_t i = 0; !s.stop.load(std::memory_order_relaxed); i++) {
        const uint32_t which = (i + t) & 1;
        Args a{0, which, 1, 0};
        const int rc = run_one(w, w.bump, a, false);
        if (rc == 0)
          s.ok[which].fetch_add(1);
        else
          s.top_fail.fetch_add(1);
      }
    });
  }
  while (started.load() < kThreads) std::this_thread::yield();
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, std::chrono::microseconds(100));
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  s.stop.store(true);
  kicker.stop();
  for (auto& t : threads) t.join();
  g_stress = nullptr;

  std::printf(
      "[ spin    ] %s: ok %llu + %llu, handler runs %llu (EDEADLK %llu, EBUSY %llu, miss %llu)\n",
      jit ? "jit" : "interp", (unsigned long long)s.ok[0].load(),
      (unsigned long long)s.ok[1].load(), (unsigned long long)s.handler_runs.load(),
      (unsigned long long)s.deadlk.load(), (unsigned long long)s.busy.load(),
      (unsigned long long)s.miss.load());
  EXPECT_EQ(s.top_fail.load(), 0u);  // top-level runs wait, never fail
  EXPECT_EQ(s.other.load(), 0u);
  EXPECT_GT(s.handler_runs.load(), 0u);
  for (uint32_t which : {0u, 1u}) {
    Val v = value(w, which, 0);
    EXPECT_EQ(v.a, s.ok[which].load()) << (which ? "hash" : "array");
    EXPECT_EQ(v.b, s.ok[which].load()) << (which ? "hash" : "array");
  }
}

TEST(SpinLockSignals, HandlersRunTheSameProgramInterp) {
  signal_stress(false);
}

TEST(SpinLockSignals, HandlersRunTheSameProgramJit) {
  if (!userbpf::vm::jit_supported()) GTEST_SKIP() << "no JIT";
  signal_stress(true);
}

// Two threads each hold one lock in hold(). Round 1: a signal makes each
// one's handler bump the other's key; without bounded waits the handlers
// would wait for each other's interrupted holders forever: both give up
// (EBUSY). Round 2: each handler bumps its own thread's key: EDEADLK at once.
struct Crossed {
  World* w = nullptr;
  std::atomic<int> done{0};
  std::atomic<uint32_t> key[2];
  std::atomic<int> result[2];
};
Crossed* g_crossed = nullptr;
thread_local int t_crossed_index = 0;

void on_crossed_signal(int) {
  Crossed* c = g_crossed;
  if (c == nullptr) return;
  const int saved = errno;
  const int i = t_crossed_index;
  Args a{c->key[i].load(), 0, 1, 0};
  c->result[i].store(run_one(*c->w, c->w->bump, a, true));
  c->done.fetch_add(1);
  errno = saved;
}

void crossed(bool jit) {
  World w;
  load_world(w, jit);
  Crossed c;
  c.w = &w;
  userbpf::test::ScopedSignal handler_scope(SIGUSR2, on_crossed_signal);
  ASSERT_TRUE(handler_scope.ok());
  g_crossed = &c;

  uint32_t k0 = 0;
  auto* go = static_cast<uint64_t*>(w.ctl->ops->lookup_elem(w.ctl, &k0));
  ASSERT_NE(go, nullptr);
  __atomic_store_n(go, 0, __ATOMIC_RELEASE);
  pthread_t ids[2];
  std::atomic<int> ready{0};
  int results[2] = {-100, -100};
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < 2; t++) {
    threads.emplace_back([&, t] {
      ids[t] = pthread_self();
      t_crossed_index = static_cast<int>(t);
      ready.fetch_add(1);
      Args a{t, 0, 1, 0};
      results[t] = run_one(w, w.hold, a, false);
    });
  }
  while (ready.load() < 2) std::this_thread::yield();
  auto word = [&](uint32_t key) {
    auto* v = static_cast<Val*>(w.array->ops->lookup_elem(w.array, &key));
    return __atomic_load_n(&v->lock, __ATOMIC_ACQUIRE);
  };
  while (word(0) == 0 || word(1) == 0) std::this_thread::yield();
  const int expected[2] = {EBUSY, EDEADLK};
  for (int round = 0; round < 2; round++) {
    SCOPED_TRACE(round == 0 ? "each other's lock" : "own lock");
    for (int i = 0; i < 2; i++) {
      c.key[i].store(round == 0 ? 1 - i : i);
      c.result[i].store(-100);
    }
    c.done.store(0);
    pthread_kill(ids[0], SIGUSR2);
    pthread_kill(ids[1], SIGUSR2);
    // A guard against hanging the suite, not a speed check: the handlers
    // take a few milliseconds.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (c.done.load() < 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    EXPECT_EQ(c.done.load(), 2) << "handlers did not finish";
    if (c.done.load() != 2) break;
    EXPECT_EQ(c.result[0].load(), expected[round]);
    EXPECT_EQ(c.result[1].load(), expected[round]);
  }
  __atomic_store_n(go, 1, __ATOMIC_RELEASE);
  for (auto& t : threads) t.join();
  g_crossed = nullptr;
  EXPECT_EQ(results[0], 0);
  EXPECT_EQ(results[1], 0);
  for (uint32_t key : {0u, 1u}) {
    Val v = value(w, 0, key);
    EXPECT_EQ(v.a, 1u);  // hold's own increment; the handlers' bumps failed
    EXPECT_EQ(v.b, 1u);
  }
}

TEST(SpinLockSignals, CrossedHandlersGiveUpInterp) {
  crossed(false);
}

TEST(SpinLockSignals, CrossedHandlersGiveUpJit) {
  if (!userbpf::vm::jit_supported()) GTEST_SKIP() << "no JIT";
#ifdef USERBPF_SPIN_TSAN
  // TSan delivers a signal only when the thread reaches instrumented code;
  // hold()'s JIT loop has none, so the handlers would run after it ends.
  GTEST_SKIP() << "signals are deferred out of uninstrumented JIT code under TSan";
#endif
  crossed(true);
}

}  // namespace
