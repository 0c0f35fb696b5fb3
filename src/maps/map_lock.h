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
// Invariants:
//   - A record entry is written before the lock word is taken and removed
//     after it is released, so a handler never sees "not held" while its own
//     thread holds the lock. (It may see "held" a few instructions early or
//     late and report a spurious -EBUSY, which is allowed.)
//   - Locks are released in reverse order of acquisition on a thread
//     (signal handlers finish before the interrupted code resumes).
//   - A lock holder never waits for anything but other map spin locks taken
//     in a fixed order (bucket -> pool growth), so spinning terminates.
// Contexts: any (program, host, signal handler). Never allocates.
#pragma once

#include <sched.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace userbpf::maps {

inline constexpr uint32_t kMaxHeldMapLocks = 16;

struct HeldMapLocks {
  struct Entry {
    std::atomic<const void*> owner{nullptr};
    std::atomic<uint32_t> group{0};
  };
  Entry entries[kMaxHeldMapLocks];
  std::atomic<uint32_t> depth{0};
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
  for (uint32_t spins = 0;;) {
    if (word.load(std::memory_order_relaxed) == 0 &&
        word.exchange(1, std::memory_order_acquire) == 0)
      return 0;
    if (++spins < 256) {
      cpu_relax();
    } else {
      // The holder may be preempted (more threads than cores): let it run.
      sched_yield();
      spins = 0;
    }
  }
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

}  // namespace userbpf::maps
