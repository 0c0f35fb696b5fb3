// CPU slots: the user-space stand-in for "this code runs on this CPU and is
// not preempted". Running a program (or any read-side section, or touching
// per-CPU data) means holding a slot; while held, the slot's per-CPU data
// belongs to the holder alone.
//
// Layout: N normal slots [0, N) (default: possible CPUs) followed by M
// sleepable slots [N, N + M) (default M = N). Sleepable runs only ever take
// sleepable slots, so a program that blocks can never starve normal runs of
// slots; normal runs never take sleepable slots.
//
// Each slot is one cache line holding one 64-bit state word:
//   state == 0            the slot is free
//   state == e (e >= 1)   the slot is held; e is the RCU epoch the holder
//                         read when it entered (rcu.h: a grace period that
//                         started at epoch E waits for every slot that is
//                         held with e < E)
// Invariants:
//   a slot is held by at most one holder (claimed by compare-exchange 0 -> e,
//   released by a release store of 0 by its holder only)
//   epoch() only grows, and never is 0
//   t_depth (per thread) = slots this thread holds or is claiming, across
//   all tables; it is raised before the claim, so a signal handler that
//   interrupts a claim already sees the thread as re-entrant
//   t_held[0, t_depth) (per thread) = which (table, slot) each level holds;
//   a level's entry is cleared before t_depth is raised and filled once the
//   claim succeeds, so an interrupting handler never sees a stale entry.
//   At most kMaxSlotDepth levels: a deeper enter is a miss.
//
// Holding a slot across many short sections (RcuReadHold in rcu.h, the host
// API's repeat loop): the holder notes a HoldMark when it claims and, between
// sections, keeps the slot while hold_fresh() says nobody waits for it: the
// epoch has not moved (no grace period started since the claim), no claimant
// asked holders to yield (yield_requests, bumped by threads that find every
// slot of a pool taken and wait), and the thread still runs on the CPU it
// claimed on. Otherwise it leaves and enters again.
//
// Contexts: enter/leave from any thread and from signal handlers, no
// registration; a re-entrant enter (the thread already holds or is claiming a
// slot, e.g. a signal handler interrupting a run) never waits: it takes
// another free slot or fails (kMiss, counted in misses()). A first-level
// enter with EnterMode::kWait spins/yields until a slot frees up.
// enter_sleepable may sleep. Construction/destruction: host only.
#pragma once

#include <sys/rseq.h>

#include <atomic>
#include <cstdint>
#include <memory>

namespace userbpf::mem {

inline constexpr int kSlotMiss = -1;

enum class EnterMode : uint8_t {
  kWait,    // outside signal handlers: spin/yield until a slot is free
  kNoWait,  // fail with kSlotMiss when no slot is free (signal handlers, hooks)
};

// The CPU the calling thread runs on: rseq's cpu_id (glibc registers rseq
// and exports __rseq_offset/__rseq_size since 2.35), else sched_getcpu(),
// else 0. Async-signal-safe.
inline uint32_t current_cpu_id();
uint32_t current_cpu_id_slow();
// Number of possible CPUs (get_nprocs_conf), at least 1.
uint32_t possible_cpus();

// What a holder notes when it claims a slot it means to keep across
// sections (SlotTable::hold_mark / hold_fresh).
struct HoldMark {
  const std::atomic<uint64_t>* epoch_word;     // the table's epoch
  const std::atomic<uint64_t>* requests_word;  // the pool's yield requests
  const volatile uint32_t* cpu_word;           // rseq cpu_id of this thread, or null
  uint64_t epoch;                              // the epoch the slot was claimed at
  uint64_t requests;                           // *requests_word at the claim
  uint32_t cpu;                                // *cpu_word at the claim
};

class SlotTable {
 public:
  // num_slots 0: possible CPUs; num_sleepable 0: same as num_slots.
  explicit SlotTable(uint32_t num_slots = 0, uint32_t num_sleepable = 0);
  ~SlotTable();
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;

  uint32_t num_slots() const { return n_; }
  uint32_t num_sleepable() const { return m_; }
  uint32_t total_slots() const { return n_ + m_; }

  // Claims a normal slot: the current CPU's if free, else any free one.
  // Returns the slot index in [0, num_slots()), or kSlotMiss.
  inline int enter(EnterMode mode = EnterMode::kWait);
  // Releases a slot obtained from enter, enter_sleepable or try_enter_slot.
  inline void leave(int slot);

  // Claims a sleepable slot in [num_slots(), total_slots()); waits (sleeps)
  // while all are taken (kSlotMiss only when the thread is kMaxSlotDepth
  // levels deep). Host or sleepable context only.
  int enter_sleepable();

  // Claims exactly slot idx if it is free (the background worker uses this to
  // act on one slot's per-CPU data, like the kernel's irq_work on that CPU).
  // Never waits. Counts towards t_depth like enter().
  bool try_enter_slot(uint32_t idx);

  // Whether the calling thread holds (or is claiming) a slot of any table.
  static bool thread_in_slot();
  // The innermost slot of this table the calling thread holds, or -1. Code
  // that runs inside a held slot (map operations called from a program,
  // allocator calls) finds its slot here instead of being passed it.
  // Async-signal-safe.
  inline int held_slot() const;

  // Runs that found no slot (kNoWait or re-entrant enter).
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

  // Holding across sections (see the top of this file). hold_mark is taken
  // right after the claim of slot; hold_fresh reads the epoch, the pool's
  // yield requests and rseq's cpu_id. Any context.
  inline HoldMark hold_mark(int slot) const;
  static inline bool hold_fresh(const HoldMark& m);
  // Asks every holder of the pool slot belongs to to leave and enter again
  // (a waiter for that pool calls it).
  void request_yield(bool sleepable_pool) {
    yield_requests_[sleepable_pool ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
  }

  // RCU interface (rcu.h): the global epoch and each slot's state word.
  std::atomic<uint64_t>& epoch() { return epoch_; }
  uint64_t slot_state(uint32_t idx) const {
    return slots_[idx].state.load(std::memory_order_acquire);
  }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> state{0};
  };
  int enter_slow(uint32_t first, EnterMode mode);
  bool try_claim(uint32_t idx) {
    uint64_t expected = 0;
    uint64_t e = epoch_.load(std::memory_order_acquire);
    // seq_cst: the claim is the read side's full barrier (rcu.h).
    return slots_[idx].state.compare_exchange_strong(expected, e, std::memory_order_seq_cst,
                                                     std::memory_order_relaxed);
  }

  uint32_t n_;
  uint32_t m_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<uint64_t> epoch_{1};
  // [0] normal pool, [1] sleepable pool. A line of their own: waiters bump
  // them while they spin, and every claim reads epoch_.
  alignas(64) std::atomic<uint64_t> yield_requests_[2] = {};
  alignas(64) std::atomic<uint64_t> misses_{0};
};

namespace detail {
inline const char* thread_pointer() {
#if defined(__x86_64__)
  const char* tp;
  asm("mov %%fs:0, %0" : "=r"(tp));
  return tp;
#else
  return static_cast<const char*>(__builtin_thread_pointer());
#endif
}

// The calling thread's rseq cpu_id field, or null without rseq.
inline const volatile uint32_t* rseq_cpu_word() {
  if (__rseq_size == 0) [[unlikely]]
    return nullptr;
  return &reinterpret_cast<const volatile struct rseq*>(thread_pointer() + __rseq_offset)->cpu_id;
}
}  // namespace detail

inline uint32_t current_cpu_id() {
  if (const volatile uint32_t* w = detail::rseq_cpu_word()) [[likely]] {
    const int32_t cpu = static_cast<int32_t>(*w);  // negative while unregistered
    if (cpu >= 0) [[likely]]
      return static_cast<uint32_t>(cpu);
  }
  return current_cpu_id_slow();
}

inline constexpr uint32_t kMaxSlotDepth = 8;

namespace detail {
// Slots this thread holds or is claiming (all tables). Plain integer: only
// this thread and its signal handlers touch it; the signal fences keep the
// compiler from moving it across the claim. constinit + inline: direct TLS
// access, no wrapper call.
inline constinit thread_local uint32_t t_depth = 0;
struct HeldSlot {
  const SlotTable* table;
  int slot;
};
inline constinit thread_local HeldSlot t_held[kMaxSlotDepth] = {};

// Opens level t_depth (entry cleared first). False when the thread is
// kMaxSlotDepth levels deep already.
inline bool push_level() {
  if (t_depth >= kMaxSlotDepth) [[unlikely]]
    return false;
  t_held[t_depth] = HeldSlot{nullptr, -1};
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_depth++;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return true;
}
inline void set_level(const SlotTable* table, int slot) {
  t_held[t_depth - 1] = HeldSlot{table, slot};
}
}  // namespace detail

inline int SlotTable::enter(EnterMode mode) {
  uint32_t cpu = current_cpu_id();
  uint32_t first = cpu < n_ ? cpu : cpu % n_;
  if (detail::t_depth != 0) mode = EnterMode::kNoWait;  // re-entrant: never wait
  if (!detail::push_level()) [[unlikely]] {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return kSlotMiss;
  }
  if (try_claim(first)) [[likely]] {
    detail::set_level(this, static_cast<int>(first));
    return static_cast<int>(first);
  }
  return enter_slow(first, mode);
}

inline int SlotTable::held_slot() const {
  for (uint32_t i = detail::t_depth; i-- > 0;)
    if (detail::t_held[i].table == this) return detail::t_held[i].slot;
  return -1;
}

inline HoldMark SlotTable::hold_mark(int slot) const {
  const uint32_t idx = static_cast<uint32_t>(slot);
  const std::atomic<uint64_t>* requests = &yield_requests_[idx < n_ ? 0 : 1];
  // Without rseq the CPU is not watched (sched_getcpu per section would cost
  // more than the claim it saves): a word that always reads 0.
  static constexpr uint32_t kNoCpu = 0;
  const volatile uint32_t* cpu = detail::rseq_cpu_word();
  if (cpu == nullptr) cpu = &kNoCpu;
  return HoldMark{&epoch_,
                  requests,
                  cpu,
                  slots_[idx].state.load(std::memory_order_relaxed),
                  requests->load(std::memory_order_relaxed),
                  *cpu};
}

inline bool SlotTable::hold_fresh(const HoldMark& m) {
  // Relaxed: a writer waiting for this slot keeps waiting until we leave,
  // whatever we read here; seeing its epoch late only delays the leave.
  return m.epoch_word->load(std::memory_order_relaxed) == m.epoch &&
         m.requests_word->load(std::memory_order_relaxed) == m.requests && *m.cpu_word == m.cpu;
}

inline void SlotTable::leave(int slot) {
  // Stop advertising the slot first: a signal handler arriving after the
  // release below must not find it through held_slot() (the worker or
  // another thread may hold it by then).
  detail::t_held[detail::t_depth - 1] = detail::HeldSlot{nullptr, -1};
  std::atomic_signal_fence(std::memory_order_seq_cst);
  slots_[static_cast<uint32_t>(slot)].state.store(0, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  detail::t_depth--;
}

// Holds a normal slot for a scope. ok() is false on a miss.
class SlotGuard {
 public:
  explicit SlotGuard(SlotTable& t, EnterMode mode = EnterMode::kWait)
      : t_(t), slot_(t.enter(mode)) {}
  ~SlotGuard() {
    if (slot_ >= 0) t_.leave(slot_);
  }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;
  bool ok() const { return slot_ >= 0; }
  int slot() const { return slot_; }

 private:
  SlotTable& t_;
  int slot_;
};

}  // namespace userbpf::mem
