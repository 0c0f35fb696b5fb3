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
//   - Locks have ranks (MapLockRank: LRU lists < buckets < pool growth). A
//     thread spins for a lock only when every tracked lock it holds or is
//     taking has a lower rank; otherwise it only tries the word (-EBUSY when
//     taken). Along a chain of waiting threads ranks strictly rise, so no
//     chain closes into a cycle and spinning terminates. Handlers are why
//     this rule is needed: normal code never holds two buckets at once, but
//     a handler on a thread inside one bucket's lock that spun for another
//     could wait for a thread whose handler waits for the first (ABBA).
//     The kernel's rqspinlock reports that case as a deadlock (-EDEADLK);
//     here it is a spurious -EBUSY, which the first invariant allows. An
//     untracked lock (rank LRU) is spun for only by a thread that holds no
//     map lock at all.
//   - A lock holder never waits for anything but map spin locks taken as
//     above, so spinning terminates.
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

// The order in which one thread may wait for map locks (see the invariants).
enum class MapLockRank : uint32_t {
  kLruList = 0,     // untracked
  kBucket = 1,      // hash map buckets
  kPoolGrowth = 2,  // ElemPool::grow
};

// A record entry's group word: the lock group with the rank in its top bits
// (groups are small: a map's lock_mask is at most 7).
inline constexpr uint32_t kMapLockRankShift = 28;
constexpr uint32_t map_lock_key(uint32_t group, MapLockRank rank) {
  return group | static_cast<uint32_t>(rank) << kMapLockRankShift;
}

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

// Where this thread may record a lock: depth, the free entry's index, and
// spin, whether it may wait for the word (no recorded lock of the same or a
// higher rank); depth -EBUSY if it already holds or is taking a lock of the
// same (owner, key), or holds too many.
struct MapLockPlace {
  int depth;
  bool spin;
};

inline MapLockPlace map_lock_place(const HeldMapLocks& t, const void* owner, uint32_t key) {
  const uint32_t d = t.depth.load(std::memory_order_relaxed);
  if (d >= kMaxHeldMapLocks) return {-EBUSY, false};
  bool spin = true;
  for (uint32_t i = 0; i < d; i++) {
    // An entry reserved but not filled yet by code this handler interrupted
    // may show a stale key: its rank can only make the handler try, which
    // is always safe.
    const uint32_t k = t.entries[i].group.load(std::memory_order_relaxed);
    if (t.entries[i].owner.load(std::memory_order_relaxed) == owner && k == key)
      return {-EBUSY, false};
    if (k >> kMapLockRankShift >= key >> kMapLockRankShift) spin = false;
  }
  return {static_cast<int>(d), spin};
}

// Writes entry d of the record for (owner, key); reserving the (cleared)
// entry before filling it means a handler arriving in between sees an empty
// entry and uses the next one.
inline void map_lock_record(HeldMapLocks& t, uint32_t d, const void* owner, uint32_t key) {
  t.depth.store(d + 1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.entries[d].group.store(key, std::memory_order_relaxed);
  t.entries[d].owner.store(owner, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

// Removes entry d (the last) from the record.
inline void map_lock_unrecord(HeldMapLocks& t, uint32_t d) {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.entries[d].owner.store(nullptr, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t.depth.store(d, std::memory_order_relaxed);
}

// Try-acquire of word once entry d is ours: 0, or -EBUSY (entry removed).
inline int map_lock_try_recorded(HeldMapLocks& t, uint32_t d, std::atomic<uint32_t>& word,
                                 const void* owner, uint32_t key) {
  if (word.load(std::memory_order_relaxed) != 0) return -EBUSY;
  map_lock_record(t, d, owner, key);
  if (word.exchange(1, std::memory_order_acquire) == 0) return 0;
  map_lock_unrecord(t, d);
  return -EBUSY;
}

// map_lock_acquire (wait: true) and map_lock_try_acquire (false).
[[gnu::always_inline]] inline int map_lock_take(std::atomic<uint32_t>& word, const void* owner,
                                                uint32_t group, MapLockRank rank, bool wait) {
  HeldMapLocks& t = t_held_map_locks;
  const uint32_t key = map_lock_key(group, rank);
  const MapLockPlace place = map_lock_place(t, owner, key);
  if (place.depth < 0) return place.depth;
  const auto d = static_cast<uint32_t>(place.depth);
  if (!wait || !place.spin) [[unlikely]]
    return map_lock_try_recorded(t, d, word, owner, key);
  map_lock_record(t, d, owner, key);
  spin_take(word);
  return 0;
}

// Takes word for (owner, group) of rank. 0 on success; -EBUSY if this thread
// already holds or is taking a lock of the same (owner, group), holds too
// many, or holds a lock of the same or a higher rank (a signal handler that
// interrupted it, typically) and word is taken: then it does not wait.
inline int map_lock_acquire(std::atomic<uint32_t>& word, const void* owner, uint32_t group,
                            MapLockRank rank = MapLockRank::kBucket) {
  return map_lock_take(word, owner, group, rank, true);
}

// Try-acquire with the same per-thread record as map_lock_acquire (a
// handler interrupting us sees the lock as ours): 0, or -EBUSY if the lock
// is taken by anyone or this thread already holds (owner, group). Release
// with map_lock_release.
inline int map_lock_try_acquire(std::atomic<uint32_t>& word, const void* owner, uint32_t group,
                                MapLockRank rank = MapLockRank::kBucket) {
  return map_lock_take(word, owner, group, rank, false);
}

inline void map_lock_release(std::atomic<uint32_t>& word) {
  word.store(0, std::memory_order_release);
  HeldMapLocks& t = t_held_map_locks;
  map_lock_unrecord(t, t.depth.load(std::memory_order_relaxed) - 1);
}

// One record entry for a sequence of tracked locks of one owner and rank
// that a thread takes one at a time, never two at once (eviction unlinks a
// batch of elements, each under its bucket lock): the entry is written once
// and only its group changes per lock, which saves about 15 instructions
// per lock. Only for a thread that holds no tracked lock of owner (checked
// in debug builds) and, since acquire always spins, none of the same or a
// higher rank (begin refuses then). Between two locks the entry still
// names the last one's group: a handler arriving then sees it held a few
// instructions late and may get a spurious -EBUSY, as the invariants allow.
class MapLockSeq {
 public:
  MapLockSeq() = default;
  MapLockSeq(const MapLockSeq&) = delete;
  MapLockSeq& operator=(const MapLockSeq&) = delete;
  // False (nothing recorded) when the record is full or the thread may not
  // wait for locks of rank (see the invariants): take them one by one with
  // map_lock_acquire then.
  bool begin(const void* owner, uint32_t first_group, MapLockRank rank = MapLockRank::kBucket) {
    HeldMapLocks& t = t_held_map_locks;
    rank_ = map_lock_key(0, rank);
    const MapLockPlace place = map_lock_place(t, owner, map_lock_key(first_group, rank));
    if (place.depth < 0 || !place.spin) return false;
    d_ = static_cast<uint32_t>(place.depth);
    for (uint32_t i = 0; i < d_; i++)
      USERBPF_DEBUG_ASSERT(t.entries[i].owner.load(std::memory_order_relaxed) != owner);
    map_lock_record(t, d_, owner, map_lock_key(first_group, rank));
    return true;
  }
  // Takes word (group: its lock group), spinning while another thread
  // holds it.
  [[gnu::always_inline]] void acquire(std::atomic<uint32_t>& word, uint32_t group) {
    t_held_map_locks.entries[d_].group.store(group | rank_, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    spin_take(word);
  }
  [[gnu::always_inline]] static void release(std::atomic<uint32_t>& word) {
    word.store(0, std::memory_order_release);
  }
  // After the last release.
  void end() { map_lock_unrecord(t_held_map_locks, d_); }

 private:
  uint32_t d_ = 0;
  uint32_t rank_ = 0;  // the rank's bits of the entry's key
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
