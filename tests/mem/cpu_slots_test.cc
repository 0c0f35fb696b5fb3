// CPU slots: claiming the current CPU's slot, other free slots, misses on
// re-entry and in signal handlers, the separate sleepable pool.
#include "mem/cpu_slots.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace userbpf::mem {
namespace {

TEST(CpuSlots, CurrentCpuMatchesSchedGetcpu) {
  // The thread may migrate between the two reads; retry a few times.
  bool same = false;
  for (int i = 0; i < 100 && !same; i++) same = current_cpu_id() == (uint32_t)sched_getcpu();
  EXPECT_TRUE(same);
  EXPECT_LT(current_cpu_id(), possible_cpus());
}

TEST(CpuSlots, DefaultSizesArePossibleCpus) {
  SlotTable t;
  EXPECT_EQ(t.num_slots(), possible_cpus());
  EXPECT_EQ(t.num_sleepable(), possible_cpus());
  EXPECT_EQ(t.total_slots(), 2 * possible_cpus());
  SlotTable u(3, 5);
  EXPECT_EQ(u.num_slots(), 3u);
  EXPECT_EQ(u.num_sleepable(), 5u);
}

TEST(CpuSlots, EnterPrefersTheCurrentCpu) {
  SlotTable t(possible_cpus());
  int hits = 0;
  for (int i = 0; i < 100; i++) {
    uint32_t before = current_cpu_id();
    int s = t.enter();
    uint32_t after = current_cpu_id();
    ASSERT_GE(s, 0);
    if (before == after && (uint32_t)s == before) hits++;
    t.leave(s);
  }
  EXPECT_GT(hits, 50);  // only a migration between the reads can miss
}

TEST(CpuSlots, SlotStateHoldsEpochWhileHeld) {
  SlotTable t(2);
  int s = t.enter();
  ASSERT_GE(s, 0);
  EXPECT_EQ(t.slot_state(s), t.epoch().load());
  EXPECT_TRUE(SlotTable::thread_in_slot());
  t.leave(s);
  EXPECT_EQ(t.slot_state(s), 0u);
  EXPECT_FALSE(SlotTable::thread_in_slot());
}

TEST(CpuSlots, TakesAnotherFreeSlotThenMisses) {
  SlotTable t(3);
  std::set<int> got;
  std::vector<int> held;
  for (int i = 0; i < 3; i++) {
    int s = t.enter(EnterMode::kNoWait);
    ASSERT_GE(s, 0);
    ASSERT_LT(s, 3);
    got.insert(s);
    held.push_back(s);
  }
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(t.enter(EnterMode::kNoWait), kSlotMiss);
  // Re-entrant (this thread holds slots): never waits even in kWait mode.
  EXPECT_EQ(t.enter(EnterMode::kWait), kSlotMiss);
  EXPECT_EQ(t.misses(), 2u);
  for (int s : held) t.leave(s);
  EXPECT_FALSE(SlotTable::thread_in_slot());
  int s = t.enter(EnterMode::kNoWait);
  EXPECT_GE(s, 0);
  t.leave(s);
}

TEST(CpuSlots, WaitingEnterGetsSlotWhenReleased) {
  SlotTable t(1);
  int s = t.enter();
  ASSERT_EQ(s, 0);
  std::atomic<int> other{-5};
  std::thread th([&] {
    int o = t.enter(EnterMode::kWait);
    other.store(o);
    t.leave(o);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(other.load(), -5);  // still waiting
  t.leave(s);
  th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(t.misses(), 0u);
}

SlotTable* g_table;
std::atomic<int> g_handler_slot{-3};

void enter_in_handler(int) {
  int s = g_table->enter(EnterMode::kWait);  // re-entrant: must not wait
  g_handler_slot.store(s);
  if (s >= 0) g_table->leave(s);
}

TEST(CpuSlots, SignalHandlerTakesAnotherSlotOrMisses) {
  struct sigaction sa{}, old{};
  sa.sa_handler = enter_in_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);

  SlotTable two(2);
  g_table = &two;
  int s = two.enter();
  ASSERT_GE(s, 0);
  raise(SIGUSR1);
  EXPECT_EQ(g_handler_slot.load(), 1 - s);  // the other slot
  two.leave(s);

  SlotTable one(1);
  g_table = &one;
  s = one.enter();
  ASSERT_EQ(s, 0);
  raise(SIGUSR1);
  EXPECT_EQ(g_handler_slot.load(), kSlotMiss);  // skipped, no deadlock
  EXPECT_EQ(one.misses(), 1u);
  one.leave(s);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST(CpuSlots, SleepableRunsUseTheirOwnPool) {
  SlotTable t(1, 1);
  int sl = t.enter_sleepable();
  EXPECT_EQ(sl, 1);  // sleepable slots follow the normal ones
  // A sleeping holder does not keep a normal run from its slot.
  std::atomic<int> normal{-5};
  std::thread th([&] {
    int s = t.enter(EnterMode::kNoWait);
    normal.store(s);
    if (s >= 0) t.leave(s);
  });
  th.join();
  EXPECT_EQ(normal.load(), 0);
  // A second sleepable run waits for the pool.
  std::atomic<int> second{-5};
  std::thread th2([&] {
    int s = t.enter_sleepable();
    second.store(s);
    t.leave(s);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(second.load(), -5);
  t.leave(sl);
  th2.join();
  EXPECT_EQ(second.load(), 1);
}

TEST(CpuSlots, HeldSlotNamesTheInnermostSlotOfEachTable) {
  SlotTable a(2, 1), b(2, 1);
  EXPECT_EQ(a.held_slot(), -1);
  int sa = a.enter();
  ASSERT_GE(sa, 0);
  EXPECT_EQ(a.held_slot(), sa);
  EXPECT_EQ(b.held_slot(), -1);
  int sb = b.enter();
  ASSERT_GE(sb, 0);
  EXPECT_EQ(b.held_slot(), sb);
  EXPECT_EQ(a.held_slot(), sa);
  int sa2 = a.enter(EnterMode::kNoWait);  // nested: the other slot of a
  ASSERT_GE(sa2, 0);
  EXPECT_NE(sa2, sa);
  EXPECT_EQ(a.held_slot(), sa2);
  a.leave(sa2);
  EXPECT_EQ(a.held_slot(), sa);
  b.leave(sb);
  EXPECT_EQ(b.held_slot(), -1);
  int ss = a.enter_sleepable();
  EXPECT_EQ(ss, 2);
  EXPECT_EQ(a.held_slot(), ss);
  a.leave(ss);
  a.leave(sa);
  EXPECT_EQ(a.held_slot(), -1);
  EXPECT_FALSE(SlotTable::thread_in_slot());
}

TEST(CpuSlots, NestingDeeperThanMaxDepthIsAMiss) {
  SlotTable t(kMaxSlotDepth + 2, 1);
  std::vector<int> held;
  for (uint32_t i = 0; i < kMaxSlotDepth; i++) {
    int s = t.enter(EnterMode::kNoWait);
    ASSERT_GE(s, 0) << "level " << i;
    held.push_back(s);
  }
  uint64_t misses = t.misses();
  EXPECT_EQ(t.enter(EnterMode::kNoWait), kSlotMiss);  // slots are free, depth is not
  EXPECT_EQ(t.misses(), misses + 1);
  EXPECT_FALSE(t.try_enter_slot(kMaxSlotDepth + 1));
  EXPECT_EQ(t.held_slot(), held.back());
  while (!held.empty()) {
    t.leave(held.back());
    held.pop_back();
  }
  EXPECT_FALSE(SlotTable::thread_in_slot());
  EXPECT_EQ(t.held_slot(), -1);
}

TEST(CpuSlots, TryEnterSlotClaimsExactlyThatSlot) {
  SlotTable t(2);
  EXPECT_TRUE(t.try_enter_slot(1));
  EXPECT_NE(t.slot_state(1), 0u);
  std::thread th([&] { EXPECT_FALSE(t.try_enter_slot(1)); });
  th.join();
  t.leave(1);
  EXPECT_FALSE(SlotTable::thread_in_slot());
}

TEST(CpuSlots, ConcurrentHoldersAreExclusive) {
  constexpr int kThreads = 4;
  SlotTable t(2);
  std::vector<std::atomic<int>> owners(2);
  std::atomic<bool> bad{false};
  std::vector<std::thread> ths;
  for (int i = 0; i < kThreads; i++) {
    ths.emplace_back([&, i] {
      for (int k = 0; k < 20000; k++) {
        SlotGuard g(t);
        ASSERT_TRUE(g.ok());
        if (owners[g.slot()].exchange(i + 1) != 0) bad = true;
        owners[g.slot()].store(0);
      }
    });
  }
  for (auto& th : ths) th.join();
  EXPECT_FALSE(bad.load());
  EXPECT_EQ(t.misses(), 0u);
}

// A holder keeps its slot across sections while hold_fresh() holds: a new
// epoch (grace period) or a yield request for its pool makes it stale; a
// request for the other pool does not.
TEST(CpuSlots, HoldMarkGoesStaleOnEpochAndRequests) {
  SlotTable t(2, 2);
  int s = t.enter();
  ASSERT_GE(s, 0);
  HoldMark m = t.hold_mark(s);
  EXPECT_EQ(m.epoch, t.slot_state(s));
  EXPECT_TRUE(SlotTable::hold_fresh(m) || current_cpu_id() != m.cpu);  // may migrate
  t.request_yield(/*sleepable_pool=*/true);
  m = t.hold_mark(s);
  t.request_yield(true);
  EXPECT_TRUE(SlotTable::hold_fresh(m) || current_cpu_id() != m.cpu);
  t.request_yield(false);
  EXPECT_FALSE(SlotTable::hold_fresh(m));
  m = t.hold_mark(s);
  t.epoch().fetch_add(1);
  EXPECT_FALSE(SlotTable::hold_fresh(m));
  t.leave(s);

  int sl = t.enter_sleepable();
  ASSERT_GE(sl, 2);
  m = t.hold_mark(sl);
  t.request_yield(false);
  EXPECT_TRUE(SlotTable::hold_fresh(m) || current_cpu_id() != m.cpu);
  t.request_yield(true);
  EXPECT_FALSE(SlotTable::hold_fresh(m));
  t.leave(sl);
}

// A thread waiting for a slot of a full pool asks the holders to yield.
TEST(CpuSlots, WaitersRequestYield) {
  SlotTable t(1, 1);
  int s = t.enter();
  ASSERT_EQ(s, 0);
  const HoldMark m = t.hold_mark(s);
  std::atomic<bool> got{false};
  std::thread th([&] {
    SlotGuard g(t);
    got = g.ok();
  });
  while (m.requests_word->load() == m.requests) std::this_thread::yield();
  EXPECT_FALSE(got.load());
  t.leave(s);
  th.join();
  EXPECT_TRUE(got.load());
}

}  // namespace
}  // namespace userbpf::mem
