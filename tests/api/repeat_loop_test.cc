// The host repeat loop (test_run.cc) keeps one CPU slot and RCU section
// across its runs (mem::RcuReadHold), like the kernel's BPF_PROG_TEST_RUN
// repeat: a signal handler interrupting the loop never gets the loop's slot,
// grace periods still end while the loop runs, and a thread waiting for the
// only slot gets it before the loop is over. Both engines.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <string>
#include <thread>

#include "api/internal.h"
#include "mem/domain.h"
#include "userbpf/userbpf.h"
#include "vm/jit/jit.h"

namespace {

using userbpf::Engine;

std::string prog_path(const char* name) {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/" + name + ".bpf.o";
}

class RepeatLoopTest : public ::testing::TestWithParam<Engine> {
 protected:
  void open(uint32_t cpus) {
    if (GetParam() == Engine::kJit && !userbpf::vm::jit_supported()) GTEST_SKIP() << "no JIT";
    userbpf::RuntimeOptions o;
    o.num_cpus = cpus;
    auto r = userbpf::Runtime::create(o);
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto ob = userbpf::Object::open(*rt, prog_path("repeat_loop"));
    ASSERT_TRUE(ob.ok()) << ob.error().message;
    obj = std::move(ob.value());
    auto st = obj->load();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  userbpf::mem::MemDomain& dom() { return *rt->impl()->mem; }
  userbpf::RunOptions opts(uint32_t repeat) const {
    userbpf::RunOptions ro;
    ro.repeat = repeat;
    ro.engine = GetParam();
    ro.insn_budget = 1000;  // until_stopped spins this long once told to stop
    return ro;
  }
  // Runs until_stopped up to `repeat` times on this thread; true if the loop
  // ended because stop[0] was set (the budget error), false if it ran out.
  bool run_until_stopped(uint32_t repeat) {
    auto p = obj->find_program("until_stopped");
    EXPECT_TRUE(p.ok());
    auto r = p->run(opts(repeat));
    if (r.ok()) return false;
    EXPECT_EQ(r.error().code, ELOOP) << r.error().message;
    return true;
  }
  void set_stop() {
    auto m = obj->find_map("stop");
    ASSERT_TRUE(m.ok());
    const uint32_t key = 0;
    const uint64_t one = 1;
    ASSERT_TRUE(m->update(&key, &one).ok());
  }
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
};

// Long enough that a broken hold would not end it by itself in time to
// matter; a working one is stopped after a few ms.
constexpr uint32_t kLongLoop = 100'000'000;

userbpf::mem::SlotTable* g_slots;
std::atomic<uint64_t> g_interrupted_holder{0}, g_shared{0};

void on_signal(int) {
  const int outer = g_slots->held_slot();
  const int s = g_slots->enter(userbpf::mem::EnterMode::kNoWait);
  if (outer >= 0) {
    g_interrupted_holder.fetch_add(1, std::memory_order_relaxed);
    if (s == outer) g_shared.fetch_add(1, std::memory_order_relaxed);
  }
  if (s >= 0) g_slots->leave(s);
}

TEST_P(RepeatLoopTest, SignalHandlerNeverGetsTheLoopsSlot) {
  ASSERT_NO_FATAL_FAILURE(open(2));
  if (IsSkipped()) return;
  g_slots = &dom().slots;
  g_interrupted_holder = 0;
  g_shared = 0;
  struct sigaction sa{}, old{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  const pthread_t self = pthread_self();
  std::atomic<bool> done{false};
  std::thread timer([&] {
    while (!done.load()) {
      pthread_kill(self, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      if (g_interrupted_holder.load() >= 200) set_stop();
    }
  });
  const bool stopped = run_until_stopped(kLongLoop);
  done = true;
  timer.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_TRUE(stopped);
  EXPECT_GE(g_interrupted_holder.load(), 200u);
  EXPECT_EQ(g_shared.load(), 0u);
}

TEST_P(RepeatLoopTest, GracePeriodsEndWhileTheLoopRuns) {
  ASSERT_NO_FATAL_FAILURE(open(1));
  if (IsSkipped()) return;
  std::thread writer([&] {
    // Wait for the loop to hold the only normal slot, then for grace periods.
    while (dom().slots.slot_state(0) == 0) std::this_thread::yield();
    for (int i = 0; i < 10; i++) ASSERT_TRUE(dom().rcu.synchronize_rcu().ok());
    set_stop();
  });
  EXPECT_TRUE(run_until_stopped(kLongLoop));
  writer.join();
}

TEST_P(RepeatLoopTest, AWaiterGetsTheOnlySlotDuringTheLoop) {
  ASSERT_NO_FATAL_FAILURE(open(1));
  if (IsSkipped()) return;
  std::thread other([&] {
    while (dom().slots.slot_state(0) == 0) std::this_thread::yield();
    auto p = obj->find_program("cpu_id");
    ASSERT_TRUE(p.ok());
    auto r = p->run(opts(1000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->retval, 0u);
    set_stop();
  });
  EXPECT_TRUE(run_until_stopped(kLongLoop));
  other.join();
}

INSTANTIATE_TEST_SUITE_P(Engines, RepeatLoopTest,
                         ::testing::Values(Engine::kInterpreter, Engine::kJit),
                         [](const auto& info) {
                           return std::string(info.param == Engine::kJit ? "Jit" : "Interp");
                         });

}  // namespace
