// The RCU domain on the CPU slots: epoch-based, registration-free.
//
// Read side, two ways to publish "this thread reads since epoch e":
//  - Holding a slot (cpu_slots.h). The claim publishes the epoch the reader
//    saw (one compare-exchange, a full barrier); the release store that frees
//    the slot ends the section. So a program run, which holds a slot anyway,
//    is a read-side section for free, and any thread or signal handler can
//    read without registering: it claims a slot.
//  - A reader record (a host thread's RcuReadGuard outside any section: the
//    liburcu "memb" flavor, registered lazily). A process-wide, never-freed
//    pool of kMaxRcuReaders records, one cache line each; a thread takes one
//    the first time it enters such a section (host context, EnterMode::kWait,
//    no slot held) and gives it back when it exits (a thread_local
//    destructor; a child after fork drops the other threads' records).
//    Entering stores the epoch into the record with a plain store and only
//    a compiler barrier: the writer pays instead, with one
//    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) per grace period, which runs
//    a full barrier on every CPU running a thread of the process. Without
//    membarrier (old kernel, seccomp; USERBPF_RCU_NO_MEMBARRIER=1 in the
//    environment; TSan builds, which cannot see its ordering) readers use a
//    seq_cst fence instead. A thread with no record (pool full, a signal
//    handler, a thread inside a run, use_slots_only) claims a slot as before,
//    so readers still need no registration from the user.
//   Record protocol (the owner thread and its signal handlers only write):
//     epoch 0    idle
//     epoch e    in a section of domain (an RcuDomain::id) since epoch e
//   enter (domain == D, idle): epoch = e (release); compiler barrier (or
//          fence). Host code (EnterMode::kWait) finding another domain on
//          the idle record first switches it: marks D as read through
//          records, fences, domain = D.
//   leave: epoch = 0 (release)
//   A busy record of domain D covers a nested section of D (t_domain_ is
//   for slot holders: a record section writes nothing thread-local). A
//   signal handler (kNoWait) never switches: it finds the record busy (and
//   is covered, or claims a slot), idle with another domain (claims a
//   slot), or idle with its domain (runs its whole section on it before
//   the interrupted code goes on). So a busy record's domain is always the
//   one its epoch belongs to. A record section costs two stores to the
//   record and the guard's own.
// ReadGuard nests: inside a section of the same domain it costs nothing.
// RcuReadHold keeps one slot across many short sections (the host repeat
// loop) and lets go at section boundaries when a grace period or a waiter
// needs it.
//
// Grace periods: start_gp() advances the global epoch to E and returns E; the
// grace period E is over once every slot of the flavor's range has been seen
// free or held with an epoch >= E (entered after the advance, so it cannot
// hold a pointer unlinked before it), and, for the normal flavors, every
// record of this domain shows 0 or an epoch >= E after a membarrier issued
// once the epoch had reached E (poll_gp issues at most one per epoch value:
// a membarrier covers every cookie up to the epoch read just before it).
// Writers unlink, then wait:
//   flavor       slots scanned          records  kernel analogue
//   kNormal      [0, N)                  yes      call_rcu / synchronize_rcu
//   kTasksTrace  [N, N + M) (sleepable)  no       call_rcu_tasks_trace
//   kBoth        [0, N + M)              yes      synchronize_rcu_mult(both):
//                                                 memory that normal and
//                                                 sleepable programs can
//                                                 both reach
// A domain no record ever switched to (the mark) costs poll_gp one load;
// while no thread owns a record, one fence more. Otherwise the membarrier
// is what a grace period costs (0.4-2 us here), and each new cookie needs
// one: a map that seals a batch of freed elements every few dozen updates
// would pay it every few microseconds (host updates of a hash map: 42 ns,
// 74 ns). So poll_gp issues at most one per kMembarrierGapNs (20 us) per
// domain and otherwise answers "not yet" (48 ns); synchronize_rcu does not
// wait for the gap.
// Callbacks (call_rcu) go on one lock-free list per flavor; the reclaimer (a
// task of the domain's BackgroundWorker) takes a list whole, starts a grace
// period for it, and runs it once poll_gp() says it is over; batches of one
// flavor complete in order.
//
// Contexts: read side, call_rcu, start_gp, poll_gp: any context, never block
// (poll_gp may make the membarrier system call). synchronize_rcu,
// rcu_barrier: host or sleepable context, never inside a read-side section
// (EDEADLK: the caller holds a slot or is inside a record section).
// Callbacks run on the worker thread, outside any slot.
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

#if defined(__SANITIZE_THREAD__)
#define USERBPF_RCU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USERBPF_RCU_TSAN 1
#endif
#endif

namespace detail {
// A reader record (see the top of this file). Written by its owner thread
// (and its signal handlers) only; writers read epoch and domain.
struct alignas(64) RcuReader {
  std::atomic<uint64_t> epoch{0};
  std::atomic<uint64_t> domain{0};  // RcuDomain::id() (ids are never reused)
  std::atomic<uint32_t> owned{0};   // 1 while a thread has it (claimed by compare-exchange)
  bool light = false;               // readers need only a compiler barrier (membarrier)
};
inline constexpr uint32_t kMaxRcuReaders = 1024;
// The calling thread's record, or null. Set and cleared by the thread
// outside any section; signal handlers only read it.
inline constinit thread_local RcuReader* t_reader = nullptr;
}  // namespace detail

// The reader-record pool (tests and diagnostics): records ever used (the
// high-water mark: the writers' scan length) and records owned now.
struct RcuReaderStats {
  uint32_t high_water;
  uint32_t owned;
  bool membarrier;  // readers need only a compiler barrier (else a fence)
};
RcuReaderStats rcu_reader_stats();

// Embedded in the object to free (the kernel's rcu_head).
// Polls issue at most one membarrier per this long per domain (above).
inline constexpr uint64_t kMembarrierGapNs = 20'000;

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
  // Names the domain in reader records: unique for the process's life (an
  // address may be reused by a later domain).
  uint64_t id() const { return id_; }

  // Queues func(head) to run after a grace period of flavor. Any context.
  void call_rcu(RcuHead* head, void (*func)(RcuHead*), RcuFlavor flavor = RcuFlavor::kNormal);

  // Waits for a full grace period. EDEADLK when the caller is inside a
  // read-side section (holds a slot, or its record is in a section).
  Status synchronize_rcu(RcuFlavor flavor = RcuFlavor::kNormal);
  // Waits until every callback queued before the call has run.
  Status rcu_barrier();

  // Polling interface (the kernel's start_poll_synchronize_rcu /
  // poll_state_synchronize_rcu): a cookie, then whether its grace period is
  // over. Any context.
  uint64_t start_gp() { return slots_.epoch().fetch_add(1, std::memory_order_seq_cst) + 1; }
  bool poll_gp(uint64_t cookie, RcuFlavor flavor) const { return poll(cookie, flavor, false); }
  // The least time between two membarriers issued by polls (default
  // kMembarrierGapNs; tests use 0). Host context.
  void set_membarrier_gap_ns(uint64_t ns) { mb_gap_ns_ = ns; }

  uint64_t callbacks_queued() const { return queued_.load(std::memory_order_relaxed); }
  uint64_t callbacks_done() const { return done_.load(std::memory_order_relaxed); }

 private:
  friend class RcuReadGuard;
  struct Batch {
    uint64_t cookie;
    uint64_t gen;
    RcuFlavor flavor;
    RcuHead* list;
  };
  static uint64_t reclaim_task(void* self);
  uint64_t reclaim();
  // poll_gp; expedite: issue a membarrier now if one is needed, however
  // recent the last (synchronize_rcu, which waits anyway).
  bool poll(uint64_t cookie, RcuFlavor flavor, bool expedite) const;
  // The records' part of poll (normal flavors).
  bool readers_passed(uint64_t cookie, bool expedite) const;
  // membarrier, then mb_epoch_ raised to the epoch read before it.
  void heavy_barrier() const;

  // Read by every reader's entry: a line writers do not write.
  SlotTable& slots_;
  const uint64_t id_;
  BackgroundWorker& worker_;
  alignas(64) std::atomic<RcuHead*> pending_[kNumRcuFlavors] = {};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> done_{0};
  // Set (for good) before the first record section of this domain.
  std::atomic<bool> record_readers_{false};
  // The epoch read just before the latest completed membarrier: grace
  // periods with cookies up to it need no other. And when it completed
  // (CLOCK_MONOTONIC ns): polls issue at most one per kMembarrierGapNs.
  mutable std::atomic<uint64_t> mb_epoch_{0};
  mutable std::atomic<uint64_t> mb_time_ns_{0};
  uint64_t mb_gap_ns_ = kMembarrierGapNs;
  // Reclaimer state (worker thread only, read by rcu_barrier under mu_).
  std::mutex mu_;
  std::deque<Batch> batches_;
  std::atomic<uint64_t> taken_gen_{0};  // lists taken so far (one per reclaim pass)
  std::atomic<uint64_t> done_gen_{0};   // every list taken in passes <= done_gen_ has run
};

// A read-side section of rcu's domain for a scope: nothing when the thread
// is already inside one of this domain (t_domain_, or its record); else on
// the thread's reader record when it has an idle one (registered here on
// first use, in host context with EnterMode::kWait and no slot held), else
// on a slot of its own. ok() is false on a miss (re-entrant claim with no
// free slot).
class RcuReadGuard {
 public:
  // The nested case (a host lookup inside a run, a helper's section) is one
  // thread-local compare inlined at the caller; the record case is two
  // stores to the record and one to the guard (Zen 2 retires one store per
  // cycle: every store counts); registering and claiming a slot stay out of
  // line.
  explicit RcuReadGuard(RcuDomain& rcu, EnterMode mode = EnterMode::kWait) {
    // kind_ is stored once on each path (no default to overwrite).
    if (t_domain_ == &rcu) [[likely]]
      kind_ = kNested;  // the outer section covers us
    else
      enter(rcu, mode);
  }
  ~RcuReadGuard() {
    if (kind_ == kOnRecord)
      detail::t_reader->epoch.store(0, std::memory_order_release);
    else if (kind_ >= 0) [[unlikely]]
      leave_slow();  // a slot
  }
  RcuReadGuard(const RcuReadGuard&) = delete;
  RcuReadGuard& operator=(const RcuReadGuard&) = delete;
  bool ok() const { return kind_ != kSlotMiss; }
  // Whether this guard entered a section on the thread's reader record.
  bool on_record() const { return kind_ == kOnRecord; }
  static bool in_section(const RcuDomain& rcu) {
    if (t_domain_ == &rcu) return true;
    const detail::RcuReader* r = detail::t_reader;
    return r && r->epoch.load(std::memory_order_relaxed) != 0 &&
           r->domain.load(std::memory_order_relaxed) == rcu.id();
  }
  // Whether the calling thread's reader record is inside a section (of any
  // domain). Async-signal-safe.
  static bool in_record_section() {
    const detail::RcuReader* r = detail::t_reader;
    return r && r->epoch.load(std::memory_order_relaxed) != 0;
  }
  // Test hook: the calling thread gives its record back and takes none
  // while on (the pool-full path); off: it may register again. Host
  // context, outside any record section.
  static void use_slots_only(bool on);
  // Marks an existing slot holding (a program run) as this domain's section.
  static RcuDomain* set_current(RcuDomain* d) {
    RcuDomain* old = t_domain_;
    t_domain_ = d;
    return old;
  }

 private:
  // kind_: a slot index >= 0 (rcu_ and outer_ set), kSlotMiss, or:
  static constexpr int kNested = -2;    // covered by an outer section
  static constexpr int kOnRecord = -3;  // a section on detail::t_reader

  [[gnu::always_inline]] void enter(RcuDomain& rcu, EnterMode mode) {
    if (detail::RcuReader* r = detail::t_reader) [[likely]] {
      const uint64_t busy = r->epoch.load(std::memory_order_relaxed);
      if (r->domain.load(std::memory_order_relaxed) == rcu.id()) [[likely]] {
        if (busy == 0) [[likely]] {
          enter_record(r, rcu);
        } else {
          kind_ = kNested;  // inside a record section of ours (t_domain_ is for slots)
        }
        return;
      }
      // Only host code switches the record to another domain (rcu.h top).
      if (busy == 0 && mode == EnterMode::kWait) {
        switch_domain(r, rcu);
        enter_record(r, rcu);
        return;
      }
    }
    claim(rcu, mode);
  }
  [[gnu::always_inline]] inline void enter_record(detail::RcuReader* r, RcuDomain& rcu);
  // Points the idle record r at rcu, marking rcu as read through records.
  // Host context.
  static void switch_domain(detail::RcuReader* r, RcuDomain& rcu);
  // Registers a record, or claims a slot.
  void claim(RcuDomain& rcu, EnterMode mode);
  void leave_slow();

  static inline constinit thread_local RcuDomain* t_domain_ = nullptr;
  int kind_;
  RcuDomain* rcu_;    // slot: the domain; unset otherwise
  RcuDomain* outer_;  // slot: the thread's section before ours
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

inline void RcuReadGuard::enter_record(detail::RcuReader* r, RcuDomain& rcu) {
  // Acquire: a reader that sees epoch >= E sees what was unlinked before E.
  r->epoch.store(rcu.slots().epoch().load(std::memory_order_acquire), std::memory_order_release);
#if defined(USERBPF_RCU_TSAN)
  std::atomic_thread_fence(std::memory_order_seq_cst);
#else
  // The record is visible before anything the section reads: writers
  // issue a membarrier before they scan (light), else a full fence here.
  if (r->light) [[likely]]
    std::atomic_signal_fence(std::memory_order_seq_cst);
  else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  kind_ = kOnRecord;
}

}  // namespace userbpf::mem
