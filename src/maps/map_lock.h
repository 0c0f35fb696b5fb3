// Spin locks for map internals (hash buckets, pool growth) that programs may
// take from any context, including a signal handler that interrupted its own
// thread while that thread held the same lock.
//
// The kernel guards its bucket locks with a per-CPU map_locked counter: a
// program that runs (from NMI, a tracepoint...) on a CPU already inside a
// lock of the same map and lock group gets -EBUSY instead of deadlocking.
// User space has no "this CPU"; the equivalent is "this thread": each thread
// keeps a small record of the (owner, group) pairs it holds or is acquiring.
// A signal handler runs on the interrupted thread and sees that record, so a
// re-entrant acquire of a held (owner, group) fails with -EBUSY. Different
// threads simply spin.
//
// Untracked locks (map_lock_acquire_untracked and friends) skip the record:
// only a per-thread count says the thread holds (or is taking) one. They are
// for owners that never wait for a lock when the thread already holds a map
// lock (map_lock_thread_busy(): such an owner only try-locks), so a handler
// re-entering them never waits and needs no (owner, group) check; a
// try-lock of a word its own thread holds fails because the word is taken.
// The LRU lists' locks are untracked (lru_list.h); the kernel gives its LRU
// locks no map_locked check either. Tracked locks cost a record entry
// written and cleared around each acquisition; an untracked one, one
// increment and one decrement of the count.
//
// Invariants:
//   - A record entry is written before the lock word is taken and removed
//     after it is released, so a handler never sees "not held" while its own
//     thread holds the lock. (It may see "held" a few instructions early or
//     late and report a spurious -EBUSY, which is allowed.) Likewise the
//     untracked count is raised before the word is taken and lowered after
//     it is released.
//   - Locks are released in reverse order of acquisition on a thread
//     (signal handlers finish before the interrupted code resumes).
//   - A lock holder never waits for anything but other map spin locks taken
//     in a fixed order (LRU lists -> bucket -> pool growth), so spinning
//     terminates.
//   - MapLockSeq: one entry for a run of tracked locks of one owner taken one
//     at a time; it names the group of the lock being taken or held (or,
//     between two, of the last one: "late" as above).
// Contexts: any (program, host, signal handler). Never allocates.
#pragma once

#include <sched.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "base/assert.h"

namespace userbpf::maps {

inline constexpr uint32_t kMaxHeldMapLocks = 16;

struct HeldMapLocks {
  struct Entry {
    std::atomic<const void*> owner{nullptr};
    std::atomic<uint32_t> group{0};
  };
  Entry entries[kMaxHeldMapLocks];
  std::atomic<uint32_t> depth{0};      // tracked locks: entries in use
  std::atomic<uint32_t> untracked{0};  // untracked locks held or being taken
};

// initial-exec: no lazy TLS allocation, so safe to touch in a signal handler.
extern thread_local constinit HeldMapLocks t_held_map_locks
    __attribute__((tls_model("initial-exec")));

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Takes word (0 -> 1), spinning while another thread holds it.
[[gnu::always_inline]] inline void spin_take(std::atomic<uint32_t>& word) {
  for (uint32_t spins = 0;;) {
    if (word.load(std::memory_order_relaxed) == 0 &&
        word.exchange(1, std::memory_order_acquire) == 0)
      return;
    if (++spins < 256) {
      cpu_relax();
    } else {
      // The holder may be preempted (more threads than cores): let it run.
      sched_yield();
      spins = 0;
    }
  }
}

// The depth at which this thread may record (owner, group), or -EBUSY if it
// already holds or is taking a lock of that (owner, group), or holds too many.
inline int map_lock_free_depth(const HeldMapLocks& t, const void* owner, uint32_t group) {
  uint32_t d = t.depth.load(std::memory_order_relaxed);
  if (d >= kMaxHeldMapLocks) return -EBUSY;
  for (uint32_t i = 0; i < d; i++)
    if (t.entries[i].owner.load(std::memory_order_relaxed) == owner &&
        t.entries[i].group.load(std::memory_order_relaxed) == group)
      return -EBUSY;
  return static_cast<int>(d);
}

// Takes word for (owner, group). 0 on success; -EBUSY if this thread already
// holds or is taking a lock of the same (owner, group), or holds too many.
inline int map_lock_acquire(std::atomic<uint32_t>& word, const void* owner, uint32_t group) {
  HeldMapLocks& t = t_held_map_locks;
  const int depth = map_lock_free_depth(t, owner, group);
  if (depth < 0) return depth;
  const uint32_t d = static_cast<uint32_t>(depth);
  // Reserve the (cleared) slot, then fill it: a handler arriving in between
  // sees an empty entry and uses the next slot.
  t.depth.store(d + 1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.entries[d].group.store(group, std::memory_order_relaxed);
  t.entries[d].owner.store(owner, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  spin_take(word);
  return 0;
}

// Try-acquire with the same per-thread record as map_lock_acquire (a
// handler interrupting us sees the lock as ours): 0, or -EBUSY if the lock
// is taken by anyone or this thread already holds (owner, group). Release
// with map_lock_release.
inline int map_lock_try_acquire(std::atomic<uint32_t>& word, const void* owner, uint32_t group) {
  HeldMapLocks& t = t_held_map_locks;
  const int depth = map_lock_free_depth(t, owner, group);
  if (depth < 0) return depth;
  const uint32_t d = static_cast<uint32_t>(depth);
  if (word.load(std::memory_order_relaxed) != 0) return -EBUSY;
  t.depth.store(d + 1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.entries[d].group.store(group, std::memory_order_relaxed);
  t.entries[d].owner.store(owner, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (word.exchange(1, std::memory_order_acquire) == 0) return 0;
  t.entries[d].owner.store(nullptr, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.depth.store(d, std::memory_order_relaxed);
  return -EBUSY;
}

inline void map_lock_release(std::atomic<uint32_t>& word) {
  word.store(0, std::memory_order_release);
  HeldMapLocks& t = t_held_map_locks;
  uint32_t d = t.depth.load(std::memory_order_relaxed) - 1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.entries[d].owner.store(nullptr, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.depth.store(d, std::memory_order_relaxed);
}

// One record entry for a sequence of tracked locks of one owner that a
// thread takes one at a time, never two at once (eviction unlinks a batch
// of elements, each under its bucket lock): the entry is written once and
// only its group changes per lock, which saves about 15 instructions per
// lock. Only for a thread that holds no tracked lock of owner (checked by
// begin in debug builds). Between two locks the entry still names the
// last one's group: a handler arriving then sees it held a few instructions
// late and may get a spurious -EBUSY, as the invariants allow.
class MapLockSeq {
 public:
  MapLockSeq() = default;
  MapLockSeq(const MapLockSeq&) = delete;
  MapLockSeq& operator=(const MapLockSeq&) = delete;
  // False (nothing recorded) when the record is full.
  bool begin(const void* owner, uint32_t first_group) {
    HeldMapLocks& t = t_held_map_locks;
    d_ = t.depth.load(std::memory_order_relaxed);
    if (d_ >= kMaxHeldMapLocks) return false;
    for (uint32_t i = 0; i < d_; i++)
      USERBPF_DEBUG_ASSERT(t.entries[i].owner.load(std::memory_order_relaxed) != owner);
    t.depth.store(d_ + 1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.entries[d_].group.store(first_group, std::memory_order_relaxed);
    t.entries[d_].owner.store(owner, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return true;
  }
  // Takes word (group: its lock group), spinning while another thread
  // holds it.
  [[gnu::always_inline]] void acquire(std::atomic<uint32_t>& word, uint32_t group) {
    t_held_map_locks.entries[d_].group.store(group, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    spin_take(word);
  }
  [[gnu::always_inline]] static void release(std::atomic<uint32_t>& word) {
    word.store(0, std::memory_order_release);
  }
  // After the last release.
  void end() {
    HeldMapLocks& t = t_held_map_locks;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.entries[d_].owner.store(nullptr, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.depth.store(d_, std::memory_order_relaxed);
  }

 private:
  uint32_t d_ = 0;
};

// Whether this thread holds or is taking any map lock, tracked or not: an
// operation starting now runs nested in another (a signal handler, or code
// called under a lock) and must not wait for an untracked lock.
inline bool map_lock_thread_busy() {
  const HeldMapLocks& t = t_held_map_locks;
  return (t.depth.load(std::memory_order_relaxed) | t.untracked.load(std::memory_order_relaxed)) !=
         0;
}

// The untracked count, changed by plain stores: a handler that interrupts
// the update restores the count before it returns.
[[gnu::always_inline]] inline void map_lock_untracked_add(uint32_t n) {
  HeldMapLocks& t = t_held_map_locks;
  t.untracked.store(t.untracked.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

// Takes an untracked lock, spinning while another thread holds it. Only
// when !map_lock_thread_busy() (else map_lock_try_acquire_untracked).
[[gnu::always_inline]] inline void map_lock_acquire_untracked(std::atomic<uint32_t>& word) {
  map_lock_untracked_add(1);
  spin_take(word);
}

// 0, or -EBUSY if the lock is taken (by anyone, this thread included).
[[gnu::always_inline]] inline int map_lock_try_acquire_untracked(std::atomic<uint32_t>& word) {
  if (word.load(std::memory_order_relaxed) != 0) return -EBUSY;
  map_lock_untracked_add(1);
  if (word.exchange(1, std::memory_order_acquire) == 0) return 0;
  map_lock_untracked_add(~0u);
  return -EBUSY;
}

[[gnu::always_inline]] inline void map_lock_release_untracked(std::atomic<uint32_t>& word) {
  word.store(0, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  map_lock_untracked_add(~0u);
}

}  // namespace userbpf::maps
