// The RCU domain on the CPU slots: epoch-based, registration-free.
//
// Read side: holding a slot (cpu_slots.h) is a read-side section. The claim
// publishes the epoch the reader saw (one compare-exchange, a full barrier);
// the release store that frees the slot ends the section. So a program run,
// which holds a slot anyway, is a read-side section for free, and any thread
// or signal handler can read without registering: it claims a slot.
// ReadGuard nests: inside a section of the same domain it costs nothing.
// RcuReadHold keeps one slot across many short sections (the host repeat
// loop) and lets go at section boundaries when a grace period or a waiter
// needs it.
//
// Grace periods: start_gp() advances the global epoch to E and returns E; the
// grace period E is over once every slot of the flavor's range has been seen
// free or held with an epoch >= E (entered after the advance, so it cannot
// hold a pointer unlinked before it). Writers unlink, then wait:
//   flavor       slots scanned          kernel analogue
//   kNormal      [0, N)                  call_rcu / synchronize_rcu
//   kTasksTrace  [N, N + M) (sleepable)  call_rcu_tasks_trace
//   kBoth        [0, N + M)              synchronize_rcu_mult(both): memory
//                                        that normal and sleepable programs
//                                        can both reach
// Callbacks (call_rcu) go on one lock-free list per flavor; the reclaimer (a
// task of the domain's BackgroundWorker) takes a list whole, starts a grace
// period for it, and runs it once poll_gp() says it is over; batches of one
// flavor complete in order.
//
// Contexts: read side, call_rcu, start_gp, poll_gp: any context, never block.
// synchronize_rcu, rcu_barrier: host or sleepable context, never inside a
// read-side section (EDEADLK: the caller holds a slot). Callbacks run on the worker
// thread, outside any slot.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>

#include "base/result.h"
#include "mem/bg_worker.h"
#include "mem/cpu_slots.h"

namespace userbpf::mem {

enum class RcuFlavor : uint8_t { kNormal = 0, kTasksTrace = 1, kBoth = 2 };
inline constexpr int kNumRcuFlavors = 3;

// Embedded in the object to free (the kernel's rcu_head).
struct RcuHead {
  RcuHead* next = nullptr;
  void (*func)(RcuHead*) = nullptr;
};

class RcuDomain {
 public:
  // Runs its reclaimer on worker (which must outlive the domain).
  RcuDomain(SlotTable& slots, BackgroundWorker& worker);
  // Runs every pending callback (rcu_barrier) first.
  ~RcuDomain();
  RcuDomain(const RcuDomain&) = delete;
  RcuDomain& operator=(const RcuDomain&) = delete;

  SlotTable& slots() { return slots_; }

  // Queues func(head) to run after a grace period of flavor. Any context.
  void call_rcu(RcuHead* head, void (*func)(RcuHead*), RcuFlavor flavor = RcuFlavor::kNormal);

  // Waits for a full grace period. EDEADLK when the caller holds a slot.
  Status synchronize_rcu(RcuFlavor flavor = RcuFlavor::kNormal);
  // Waits until every callback queued before the call has run.
  Status rcu_barrier();

  // Polling interface (the kernel's start_poll_synchronize_rcu /
  // poll_state_synchronize_rcu): a cookie, then whether its grace period is
  // over. Any context.
  uint64_t start_gp() { return slots_.epoch().fetch_add(1, std::memory_order_seq_cst) + 1; }
  bool poll_gp(uint64_t cookie, RcuFlavor flavor) const;

  uint64_t callbacks_queued() const { return queued_.load(std::memory_order_relaxed); }
  uint64_t callbacks_done() const { return done_.load(std::memory_order_relaxed); }

 private:
  struct Batch {
    uint64_t cookie;
    uint64_t gen;
    RcuFlavor flavor;
    RcuHead* list;
  };
  static uint64_t reclaim_task(void* self);
  uint64_t reclaim();

  SlotTable& slots_;
  BackgroundWorker& worker_;
  std::atomic<RcuHead*> pending_[kNumRcuFlavors] = {};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> done_{0};
  // Reclaimer state (worker thread only, read by rcu_barrier under mu_).
  std::mutex mu_;
  std::deque<Batch> batches_;
  std::atomic<uint64_t> taken_gen_{0};  // lists taken so far (one per reclaim pass)
  std::atomic<uint64_t> done_gen_{0};   // every list taken in passes <= done_gen_ has run
};

// A read-side section of rcu's domain for a scope: claims a slot unless the
// thread is already inside one of this domain. ok() is false on a miss
// (re-entrant claim with no free slot).
class RcuReadGuard {
 public:
  // The nested case (a host lookup inside a run, a helper's section) is one
  // thread-local compare inlined at the caller; claiming and releasing a
  // slot stay out of line so that the compare is all callers carry.
  explicit RcuReadGuard(RcuDomain& rcu, EnterMode mode = EnterMode::kWait) {
    if (t_domain_ != &rcu) [[unlikely]]
      claim(rcu, mode);  // else nested: the outer section covers us
  }
  ~RcuReadGuard() {
    if (rcu_) [[unlikely]]
      release();
  }
  RcuReadGuard(const RcuReadGuard&) = delete;
  RcuReadGuard& operator=(const RcuReadGuard&) = delete;
  bool ok() const { return slot_ != kSlotMiss; }
  static bool in_section(const RcuDomain& rcu) { return t_domain_ == &rcu; }
  // Marks an existing slot holding (a program run) as this domain's section.
  static RcuDomain* set_current(RcuDomain* d) {
    RcuDomain* old = t_domain_;
    t_domain_ = d;
    return old;
  }

 private:
  void claim(RcuDomain& rcu, EnterMode mode);
  void release();

  static inline constinit thread_local RcuDomain* t_domain_ = nullptr;
  RcuDomain* rcu_ = nullptr;
  RcuDomain* outer_ = nullptr;
  int slot_ = -2;  // -2: nested, no slot of our own
};

// A read-side section kept by one thread across a series of short sections,
// each of which needs a slot of its own (program runs): the host API's repeat
// loop. The kernel's BPF_PROG_TEST_RUN repeat does the same: it runs its
// repetitions with migration disabled and rcu_read_lock held, and drops both
// only when need_resched(). Between sections, refresh() keeps the slot while
// SlotTable::hold_fresh() says nobody waits for it; otherwise it leaves (a
// quiescent state: the grace period that moved the epoch can end), yields the
// CPU if a claimant asked for a slot, and claims again. While a slot is kept,
// the thread is inside a section exactly as during a run: a signal handler
// that runs a program meanwhile takes another slot or misses, and one that
// only reads (RcuReadGuard) is covered by it.
// Contexts: host, or a signal handler (its claims never wait: a miss is
// kSlotMiss). One thread; the object lives on its stack.
class RcuReadHold {
 public:
  // sleepable: claim from the sleepable pool (enter_sleepable).
  RcuReadHold(RcuDomain& rcu, bool sleepable)
      : rcu_(rcu), slots_(rcu.slots()), sleepable_(sleepable) {}
  ~RcuReadHold() { release(); }
  RcuReadHold(const RcuReadHold&) = delete;
  RcuReadHold& operator=(const RcuReadHold&) = delete;

  // Whether the slot held can run the next section as it is
  // (SlotTable::hold_fresh). False when nothing is held.
  bool fresh() const { return slot_ >= 0 && SlotTable::hold_fresh(mark_); }
  // The slot to run the next section in, claimed (again) if needed; kSlotMiss
  // if a re-entrant claim found no free slot (nothing is held then).
  int refresh() { return fresh() ? slot_ : reclaim(); }
  // Leaves the slot held (if any) and claims one (again).
  int reclaim();
  // Leaves the slot (if any) and the section.
  void release();

 private:
  RcuDomain& rcu_;
  SlotTable& slots_;
  RcuDomain* outer_ = nullptr;  // the thread's section before ours
  HoldMark mark_{};
  int slot_ = kSlotMiss;
  bool sleepable_;
};

}  // namespace userbpf::mem
