// RCU domain: grace periods wait for exactly the readers that could see the
// old data, call_rcu/rcu_barrier, the sleepable flavor, signal-handler use.
#include "mem/rcu.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <thread>

namespace userbpf::mem {
namespace {

struct Rcu {
  SlotTable slots{2, 2};
  BackgroundWorker worker;
  RcuDomain rcu{slots, worker};
};

TEST(Rcu, PollSeesReadersThatEnteredBefore) {
  Rcu r;
  int s = r.slots.enter();
  uint64_t cookie = r.rcu.start_gp();
  EXPECT_FALSE(r.rcu.poll_gp(cookie, RcuFlavor::kNormal));
  EXPECT_TRUE(r.rcu.poll_gp(cookie, RcuFlavor::kTasksTrace));  // only normal slots held
  EXPECT_FALSE(r.rcu.poll_gp(cookie, RcuFlavor::kBoth));
  r.slots.leave(s);
  EXPECT_TRUE(r.rcu.poll_gp(cookie, RcuFlavor::kNormal));
}

TEST(Rcu, ReadersEnteringAfterTheStartDoNotBlock) {
  Rcu r;
  uint64_t cookie = r.rcu.start_gp();
  int s = r.slots.enter();
  EXPECT_TRUE(r.rcu.poll_gp(cookie, RcuFlavor::kNormal));
  r.slots.leave(s);
}

TEST(Rcu, SynchronizeWaitsForPreexistingReader) {
  Rcu r;
  std::atomic<int> phase{0};
  std::thread reader([&] {
    int s = r.slots.enter();
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    phase = 3;
    r.slots.leave(s);
  });
  while (phase.load() != 1) std::this_thread::yield();
  phase = 2;
  ASSERT_TRUE(r.rcu.synchronize_rcu().ok());
  EXPECT_EQ(phase.load(), 3);  // returned only after the reader left
  reader.join();
}

TEST(Rcu, SynchronizeInsideSectionIsEdeadlk) {
  Rcu r;
  RcuReadGuard g(r.rcu);
  auto st = r.rcu.synchronize_rcu();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EDEADLK);
  EXPECT_EQ(r.rcu.rcu_barrier().error().code, EDEADLK);
}

// Outer section on the thread's record, then on a slot (records off): the
// inner one takes nothing of its own.
TEST(Rcu, ReadGuardNestsWithoutASecondSlot) {
  Rcu r;
  for (bool slots_only : {false, true}) {
    RcuReadGuard::use_slots_only(slots_only);
    auto held = [&] {
      int n = 0;
      for (uint32_t i = 0; i < r.slots.num_slots(); i++) n += r.slots.slot_state(i) != 0;
      return n;
    };
    RcuReadGuard outer(r.rcu);
    ASSERT_TRUE(outer.ok());
    EXPECT_EQ(outer.on_record(), !slots_only);
    EXPECT_EQ(held(), slots_only ? 1 : 0);
    EXPECT_TRUE(RcuReadGuard::in_section(r.rcu));
    {
      // A second claim from this thread would have succeeded too (2 slots),
      // so check the count of held slots instead.
      RcuReadGuard inner(r.rcu, EnterMode::kNoWait);
      EXPECT_TRUE(inner.ok());
      EXPECT_FALSE(inner.on_record());
      EXPECT_EQ(held(), slots_only ? 1 : 0);
    }
    EXPECT_TRUE(RcuReadGuard::in_section(r.rcu));
  }
  RcuReadGuard::use_slots_only(false);
}

std::atomic<int> g_cb_runs{0};
void count_cb(RcuHead*) {
  g_cb_runs.fetch_add(1);
}

TEST(Rcu, CallbacksRunAfterReadersLeave) {
  Rcu r;
  g_cb_runs = 0;
  RcuHead heads[10];
  int s = -1;
  std::atomic<bool> go{false}, release{false};
  std::thread reader([&] {
    s = r.slots.enter();
    go = true;
    while (!release.load()) std::this_thread::yield();
    r.slots.leave(s);
  });
  while (!go.load()) std::this_thread::yield();
  for (auto& h : heads) r.rcu.call_rcu(&h, count_cb);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(g_cb_runs.load(), 0);  // the reader still holds its slot
  release = true;
  reader.join();
  ASSERT_TRUE(r.rcu.rcu_barrier().ok());
  EXPECT_EQ(g_cb_runs.load(), 10);
  EXPECT_EQ(r.rcu.callbacks_done(), 10u);
}

TEST(Rcu, TasksTraceFlavorWaitsForSleepableReadersOnly) {
  Rcu r;
  g_cb_runs = 0;
  RcuHead normal, trace, both;
  int sl = r.slots.enter_sleepable();
  r.rcu.call_rcu(&normal, count_cb, RcuFlavor::kNormal);
  r.rcu.call_rcu(&trace, count_cb, RcuFlavor::kTasksTrace);
  r.rcu.call_rcu(&both, count_cb, RcuFlavor::kBoth);
  // Wait (from another thread: this one holds a slot) for the normal one.
  std::thread waiter([&] {
    for (int i = 0; i < 2000 && g_cb_runs.load() < 1; i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  waiter.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(g_cb_runs.load(), 1);  // a sleeping reader holds back trace and both
  r.slots.leave(sl);
  ASSERT_TRUE(r.rcu.rcu_barrier().ok());
  EXPECT_EQ(g_cb_runs.load(), 3);
}

Rcu* g_rcu;
RcuHead g_sig_head;
std::atomic<int> g_sig_slot{-3};
void rcu_in_handler(int) {
  RcuReadGuard g(g_rcu->rcu, EnterMode::kNoWait);
  g_sig_slot = g.ok() ? 1 : 0;
  g_rcu->rcu.call_rcu(&g_sig_head, count_cb);
}

TEST(Rcu, ReadSideAndCallRcuFromSignalHandler) {
  Rcu r;
  g_rcu = &r;
  g_cb_runs = 0;
  struct sigaction sa{}, old{};
  sa.sa_handler = rcu_in_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
  {
    RcuReadGuard g(r.rcu);
    raise(SIGUSR2);  // nested in our section: no second slot needed
  }
  EXPECT_EQ(g_sig_slot.load(), 1);
  ASSERT_TRUE(r.rcu.rcu_barrier().ok());
  EXPECT_EQ(g_cb_runs.load(), 1);
  sigaction(SIGUSR2, &old, nullptr);
}

TEST(Rcu, ManyWritersAndReaders) {
  Rcu r;
  struct Node {
    RcuHead rh;
    uint64_t magic;
  };
  std::atomic<Node*> ptr{new Node{{}, 42}};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0};
  std::thread readers[2];
  for (auto& th : readers) {
    th = std::thread([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        RcuReadGuard g(r.rcu);
        Node* n = ptr.load(std::memory_order_acquire);
        if (n->magic != 42) bad++;
      }
    });
  }
  for (int i = 0; i < 2000; i++) {
    Node* old = ptr.exchange(new Node{{}, 42}, std::memory_order_acq_rel);
    r.rcu.call_rcu(&old->rh, [](RcuHead* h) {
      Node* n = reinterpret_cast<Node*>(h);
      n->magic = 0xdead;
      delete n;
    });
    if (i % 500 == 0) ASSERT_TRUE(r.rcu.synchronize_rcu().ok());
  }
  stop = true;
  for (auto& th : readers) th.join();
  ASSERT_TRUE(r.rcu.rcu_barrier().ok());
  delete ptr.load();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(r.rcu.callbacks_done(), 2000u);
}

// RcuReadHold (the host repeat loop): one slot across sections while nobody
// waits; a grace period ends once the holder reaches a section boundary.
TEST(Rcu, ReadHoldKeepsItsSlotUntilAGracePeriodStarts) {
  Rcu r;
  RcuReadHold hold(r.rcu, false);
  EXPECT_FALSE(hold.fresh());
  int s = hold.refresh();
  ASSERT_GE(s, 0);
  ASSERT_LT(s, 2);
  EXPECT_TRUE(RcuReadGuard::in_section(r.rcu));
  const uint64_t claimed = r.slots.slot_state(s);
  for (int i = 0; i < 100; i++) {
    const int again = hold.refresh();
    ASSERT_GE(again, 0);
    if (again == s) EXPECT_EQ(r.slots.slot_state(s), claimed);  // else: migrated, claimed anew
    s = again;
  }
  const uint64_t cookie = r.rcu.start_gp();
  EXPECT_FALSE(r.rcu.poll_gp(cookie, RcuFlavor::kNormal));  // the holder entered before
  s = hold.refresh();                                       // section boundary: leaves, claims
  ASSERT_GE(s, 0);
  EXPECT_TRUE(r.rcu.poll_gp(cookie, RcuFlavor::kNormal));
  hold.release();
  EXPECT_FALSE(RcuReadGuard::in_section(r.rcu));
  EXPECT_FALSE(SlotTable::thread_in_slot());
}

TEST(Rcu, SynchronizeEndsWhileAHolderKeepsRunningSections) {
  Rcu r;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sections{0};
  std::thread holder([&] {
    RcuReadHold hold(r.rcu, false);
    while (!stop.load(std::memory_order_relaxed)) {
      ASSERT_GE(hold.refresh(), 0);
      sections.fetch_add(1, std::memory_order_relaxed);
    }
  });
  while (sections.load() == 0) std::this_thread::yield();
  for (int i = 0; i < 20; i++) ASSERT_TRUE(r.rcu.synchronize_rcu().ok());
  stop = true;
  holder.join();
}

// A thread waiting for the only slot gets it while the holder goes on.
TEST(Rcu, ReadHoldYieldsToAWaiter) {
  SlotTable slots{1, 1};
  BackgroundWorker worker;
  RcuDomain rcu{slots, worker};
  for (bool sleepable : {false, true}) {
    std::atomic<bool> stop{false}, started{false};
    std::thread holder([&] {
      RcuReadHold hold(rcu, sleepable);
      while (!stop.load(std::memory_order_relaxed)) {
        ASSERT_GE(hold.refresh(), 0);
        started = true;
      }
    });
    while (!started.load()) std::this_thread::yield();
    {
      RcuReadHold waiter(rcu, sleepable);
      EXPECT_EQ(waiter.refresh(), sleepable ? 1 : 0);  // the same, only slot of the pool
    }
    stop = true;
    holder.join();
  }
}

RcuDomain* g_hold_rcu;
std::atomic<int> g_hold_outer{-3}, g_hold_inner{-3}, g_hold_guard_free{-3};
void enter_during_hold(int) {
  SlotTable& t = g_hold_rcu->slots();
  g_hold_outer = t.held_slot();
  // A program run in the handler claims a slot of its own...
  const int s = t.enter(EnterMode::kNoWait);
  g_hold_inner = s;
  if (s >= 0) t.leave(s);
  // ...while a plain read-side section is covered by the holder's.
  int free_before = 0;
  for (uint32_t i = 0; i < t.num_slots(); i++) free_before += t.slot_state(i) == 0;
  RcuReadGuard g(*g_hold_rcu, EnterMode::kNoWait);
  int free_after = 0;
  for (uint32_t i = 0; i < t.num_slots(); i++) free_after += t.slot_state(i) == 0;
  g_hold_guard_free = g.ok() && free_before == free_after ? 1 : 0;
}

TEST(Rcu, SignalHandlerDuringAHoldNeverGetsTheHeldSlot) {
  struct sigaction sa{}, old{};
  sa.sa_handler = enter_during_hold;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  for (uint32_t n : {2u, 1u}) {
    SlotTable slots{n, 1};
    BackgroundWorker worker;
    RcuDomain rcu{slots, worker};
    g_hold_rcu = &rcu;
    RcuReadHold hold(rcu, false);
    const int s = hold.refresh();
    ASSERT_GE(s, 0);
    raise(SIGUSR1);  // between two sections
    EXPECT_EQ(g_hold_outer.load(), s);
    if (n == 2) {
      EXPECT_EQ(g_hold_inner.load(), 1 - s);
    } else {
      EXPECT_EQ(g_hold_inner.load(), kSlotMiss);
    }
    EXPECT_EQ(g_hold_guard_free.load(), 1);
    hold.release();
  }
  sigaction(SIGUSR1, &old, nullptr);
}

}  // namespace
}  // namespace userbpf::mem
