// Fixed-size element storage owned by one map: the preallocated pool of hash
// map elements (the default mode), and the storage of BPF_F_NO_PREALLOC
// elements too large for the object caches (hash_map_internal.h). Freed
// elements are reused only after an RCU grace period of the map's domain.
//
// Layout: one virtual reservation of `capacity` elements (PROT_NONE, costs no
// memory), made read-write and charged to the map from the front as needed
// ("committed"). Elements are handed out from the slot caches (below), else
// from a lock-free shared free list, else carved from the committed front;
// growing the front takes a spin lock. Preallocated maps commit max_entries
// (+ one per CPU) at creation; the rest of the reservation is committed only
// while freed elements wait for a grace period and the map needs more than
// the free lists hold.
//
// Life of an element: free / never carved -> alloc() -> live (owned by the
// map logic) -> free_rcu() -> pending -> sealed into a batch with a grace
// period cookie (rcu.h start_gp) -> once poll_gp(cookie) says every reader
// that could see it has left: free again. free() (immediate reuse) exists
// for elements no reader can have seen.
//
// Shared structures: the free list is a Treiber stack of element indexes;
// its head word carries a 32-bit tag bumped on every change, so a pop that
// raced with pop+push of the same element (ABA) fails its compare-exchange.
// The pending stack is push-only plus take-all (no ABA). Sealed batches live
// in a small ring guarded by a try-lock: whoever gets it seals and recycles,
// everyone else moves on. While an element is not live the pool uses the
// 4-byte word at link_offset; everything else in it is left intact
// (lock-free readers may still follow its links).
//
// Slot caches (the kernel's pcpu_freelist, on the CPU slots of cpu_slots.h).
// Once set_rcu names a domain, every slot of its SlotTable (normal and
// sleepable) has a SlotCache of its own, cache-line aligned: a LIFO free
// list of ready elements (the last one handed back is the hottest), a
// pending list of elements it freed with free_rcu, and a ring of up to
// kSlotRing sealed batches of kSlotBatch elements with their cookies.
// alloc(slot) and free_rcu(slot, e) from the slot's holder touch only that
// cache, with plain loads and stores: no atomic read-modify-write and no
// line another slot writes. Per kSlotBatch operations they leave it once:
//   free_rcu(slot)  at kSlotBatch pending elements: seal them (start_gp) into
//                   the ring; a full ring hands its oldest batch, cookie
//                   and all, to the shared ring (try-lock) or else to the
//                   shared pending stack (one chain push).
//   alloc(slot)     the free list; when empty, the ring's oldest batch if its
//                   grace period is over, else the shared ring's oldest
//                   batch if over (try-lock; batches above kSlotFreeMax go
//                   to the shared free list), else the shared paths: free
//                   list, carve, recycle, grow; else steal (below).
// A batch cannot be over while the caller's own slot entered before its
// cookie was taken: that one load spares the slot scan of poll_gp while a
// long run holds its slot (its own frees wait for it to leave).
// Bounds, per slot: free <= kSlotFreeMax, pending < kSlotBatch, sealed <=
// kSlotRing * kSlotBatch. Elements are reused as far as possible where they
// were freed, so a slot that stops operating keeps what it holds until a
// thief takes it: the map may commit up to that much more memory than it
// did with one shared list before stealing (grow comes first); an insert
// never fails for it.
//
// Stealing. Elements in a cache must stay reachable from other slots: an
// alloc that finds the shared paths dry (memory limit or reservation
// reached) takes the other caches, whole, if one of them is worth it (ready
// elements, a sealed batch whose grace period is over, or pending elements
// of a slot nobody holds); reclaim_host takes every cache. A thief moves the
// ready elements (the free list and the batches whose grace period is over)
// to the shared free list, the other sealed batches with their cookies to
// the shared ring (try-lock; else the pending stack: later reuse, never
// earlier), and the pending list to the shared pending stack, one chain
// push each. One alloc steals at a time (try-lock): the others retry the
// shared free list. Since the owner does no read-modify-write, owner and
// thief agree through an asymmetric Dekker handshake on two flags of the
// cache, `active` (the owner's) and `steal` (won by compare-exchange among
// thieves):
//   owner  active = 1; light fence; steal set? -> active = 0, shared paths;
//          ... plain loads and stores ...; active = 0 (release)
//   thief  steal: 0 -> 1; heavy fence; active clear (acquire)? -> take the
//          lists; steal = 0 (release)
// The light fence is a compiler barrier; the heavy fence is
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a full barrier on
// every CPU running a thread of the process before it returns: either the
// owner's store of `active` precedes that barrier (the thief sees it, or the
// release store ending the operation), or the owner's load of `steal` follows
// it and sees the thief's flag. Where membarrier is unavailable (old kernel,
// seccomp) both fences are seq_cst thread fences: plain Dekker, one fence per
// operation. A thief that finds `active` set (an owner inside one operation:
// a few instructions) leaves that cache alone: alloc moves on (and may fail
// as the shared paths may), reclaim_host yields and tries again.
// Not taken by an alloc: caches holding only sealed batches still waiting
// (nothing to gain now) or only pending elements of a held slot (its holder
// seals them, or leaves the slot idle and they become worth taking); a fence
// paid for another cache takes them too.
//
// Re-entry: a signal handler on the holder's thread may run a map operation
// that reuses its slot (HtabSection takes held_slot()). `active` is set only
// while the cache changes (signal fences keep the compiler from moving list
// accesses across it); a nested operation that finds it set, or finds
// `steal` set, takes the shared lock-free paths instead.
//
// Rejected: a spin lock per cache (the kernel's pcpu_freelist: a lock RMW per
// operation, which is what the caches remove); an owner-only part plus a
// "spill" list thieves may take (elements in a held slot's owner-only part,
// e.g. a slot RcuReadHold keeps across runs, would fail inserts that succeed
// with one shared list, unless every map committed slots * cap spare
// elements); taking an idle victim's cache by claiming its slot
// (try_enter_slot: the same hole for held slots); stealing before growing
// (a membarrier per alloc while anything sits in another cache; growth
// happens once and the memory is reused from then on).
//
// Invariants:
//   carved <= committed_elems <= capacity < 2^32 - 1
//   every element index < carved is in exactly one place: live, the shared
//   free list, the shared pending stack, one shared sealed batch, or one slot
//   cache's free list, pending list or sealed batch; a chain moving from a
//   cache to the shared structures is in transit only while that cache's
//   `active` (spilling owner) or `steal` (thief) is set
//   at rest: carved == live + free_elems() + waiting(); waiting() = shared
//   pending (count in its head word) + shared batches (ring_waiting_) + per
//   cache pend_cnt + ring_n * kSlotBatch
//   a slot cache changes only under its owner's `active` with `steal` seen
//   clear, or under a thief's `steal` with `active` seen clear after the
//   heavy fence
//   an element freed with free_rcu is handed out again only after a grace
//   period (flavor given to set_rcu) that started after the free
//   memory is unmapped only by the destructor: a stale pointer a program kept
//   after a delete still points to mapped memory of this map
// Bound: live elements are capped by the map (count <= max_entries, plus one
// in-flight replacement per concurrent updater); the reservation adds room
// for the waiting ones (the hash map's bound: hash_map_internal.h).
// When readers stall grace periods long enough for more than that to wait,
// alloc() fails (ENOMEM) until a grace period completes; it never waits.
//
// Contexts: alloc/free/free_rcu from any context (program, host, signal
// handler): never block on a lock the same thread holds (growth re-entered
// from a signal handler fails instead, recycling is try-lock only), never
// call malloc. alloc(slot)/free_rcu(slot, e): the caller holds `slot` of the
// domain given to set_rcu, or passes -1 (shared paths only). reclaim_host:
// host thread outside any read-side section (it may yield while an owner
// finishes an operation). init/set_rcu/free_elems/destructor: host.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/assert.h"
#include "base/result.h"
#include "maps/map.h"
#include "mem/cpu_slots.h"
#include "mem/rcu.h"

namespace userbpf::maps {

class ElemPool {
 public:
  ElemPool() = default;
  ~ElemPool();
  ElemPool(const ElemPool&) = delete;
  ElemPool& operator=(const ElemPool&) = delete;

  // Reserves capacity elements of elem_size bytes (a multiple of 8) and
  // commits the first `initial` of them, charging owner. ENOMEM if the
  // reservation fails or the commit passes owner's memory limit.
  Status init(Map* owner, uint32_t elem_size, uint32_t link_offset, uint64_t capacity,
              uint64_t initial);
  // After init: the RCU domain whose grace periods free_rcu waits for
  // (nullptr: free_rcu reuses at once, like free), and one slot cache per
  // slot of its SlotTable, charged to the owner. The caches only make
  // things faster: when they cannot be allocated or charged the pool runs
  // on its shared paths alone.
  void set_rcu(mem::RcuDomain* rcu, mem::RcuFlavor flavor);

  // An element (8-byte aligned; contents are whatever it last held, zero if
  // new), or nullptr when the memory limit, the reservation or a re-entrant
  // growth stops it. slot: the caller's slot (see Contexts) or -1.
  [[gnu::always_inline]] inline void* alloc(int slot);
  void* alloc() { return alloc(-1); }
  // Immediate reuse: only for elements no reader can hold.
  void free(void* elem);
  // Reuse after a grace period.
  [[gnu::always_inline]] inline void free_rcu(int slot, void* elem);
  void free_rcu(void* elem) { free_rcu(-1, elem); }
  // free_rcu(slot, e) for each element of a chain: first, then next(e) until
  // nullptr (next(e) is read before e is freed). The slot's holder enters
  // its cache once per kSlotBatch elements instead of once per element.
  template <class Next>
  [[gnu::always_inline]] inline void free_rcu_chain(int slot, void* first, Next&& next);
  // Host, outside any read-side section: takes every slot cache, waits for a
  // grace period and puts every element freed before the call back on the
  // free list.
  void reclaim_host();

  uintptr_t base() const { return base_; }
  uint32_t elem_size() const { return elem_size_; }
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  // Bytes from base() that are mapped read-write (elements may live there).
  uint64_t committed_bytes() const { return committed_bytes_.load(std::memory_order_acquire); }
  uint64_t capacity() const { return capacity_; }
  // Elements handed out at least once (live, free or waiting).
  uint64_t carved() const { return carved_.load(std::memory_order_relaxed); }
  // Elements freed with free_rcu whose grace period has not been seen over,
  // slot caches included.
  uint64_t waiting() const;
  // Elements in slot caches (ready or waiting).
  uint64_t cached() const;
  // Host, at rest (no operation in flight): elements ready for reuse, on the
  // shared free list and in slot caches (walks the shared list).
  uint64_t free_elems() const;
  // Slot caches in use (0: shared paths only).
  uint32_t num_slot_caches() const { return nslots_; }

 private:
  struct Batch {
    uint64_t cookie;
    uint32_t head, tail, cnt;  // element index + 1 (0: none)
  };
  // A slot's own batches always hold kSlotBatch elements.
  struct SlotBatch {
    uint64_t cookie;
    uint32_t head, tail;
  };
  static constexpr uint32_t kRing = 32;          // shared sealed batches kept apart
  static constexpr uint32_t kSealBatch = 32;     // shared pending elements that trigger a seal
  static constexpr uint32_t kSlotBatch = 32;     // a slot seals this many pending elements
  static constexpr uint32_t kSlotRing = 8;       // sealed batches a slot keeps (power of 2)
  static constexpr uint32_t kSlotFreeMax = 128;  // larger shared batches stay shared

  // Line 0 is all alloc and free_rcu touch; the ring is read once per batch.
  // Owner fields are plain (the handshake above orders them); the counts
  // and the oldest cookie are atomics that owner and thief store and anyone
  // may read (waiting(), a thief deciding whether a cache is worth taking).
  struct alignas(64) SlotCache {
    uint32_t free_head = 0;  // index + 1 (0: empty), linked through link words
    uint32_t free_tail = 0;  // valid while free_head != 0
    uint32_t pend_head = 0;  // pending: pushed at the head
    uint32_t pend_tail = 0;  // the first pushed (its link is 0)
    std::atomic<uint32_t> free_cnt{0};
    std::atomic<uint32_t> pend_cnt{0};
    uint8_t ring_first = 0;
    std::atomic<uint8_t> ring_n{0};
    std::atomic<uint8_t> active{0};        // owner inside an operation
    std::atomic<uint8_t> steal{0};         // a thief is taking the cache
    std::atomic<uint64_t> ring_cookie{0};  // the oldest sealed batch's (0: none)
    SlotBatch ring[kSlotRing] = {};
  };
  // An element chain being moved: head..tail linked, tail's link 0.
  struct Chain {
    uint32_t head = 0, tail = 0, cnt = 0;
  };

  std::atomic<uint32_t>* link(uint64_t idx) const {
    return reinterpret_cast<std::atomic<uint32_t>*>(base_ + idx * elem_size_ + link_offset_);
  }
  std::atomic<uint32_t>* link_of(void* e) const {
    return reinterpret_cast<std::atomic<uint32_t>*>(static_cast<char*>(e) + link_offset_);
  }
  void* elem(uint64_t idx) const { return reinterpret_cast<void*>(base_ + idx * elem_size_); }
  // (e - base) / elem_size by a multiply: exact for offsets < 2^32, which
  // fast_index_ says all are (else a division).
  uint64_t index_of(void* e) const {
    uint64_t off = reinterpret_cast<uintptr_t>(e) - base_;
    if (fast_index_)
      return static_cast<uint64_t>((static_cast<unsigned __int128>(magic_) * off) >> 64);
    return off / elem_size_;
  }
  void append(Chain& c, uint32_t head, uint32_t tail, uint32_t cnt) const;

  // ---- slot caches (owner side) ----
  // Starts an owner operation on c: false when c is busy (re-entry) or a
  // thief is taking it; then the caller uses the shared paths.
  [[gnu::always_inline]] bool cache_enter(SlotCache& c) const {
    if (c.active.load(std::memory_order_relaxed)) [[unlikely]]
      return false;
    c.active.store(1, std::memory_order_relaxed);
    if (light_fence_) [[likely]]
      std::atomic_signal_fence(std::memory_order_seq_cst);
    else
      std::atomic_thread_fence(std::memory_order_seq_cst);
    if (c.steal.load(std::memory_order_acquire)) [[unlikely]] {
      c.active.store(0, std::memory_order_release);
      return false;
    }
    return true;
  }
  [[gnu::always_inline]] static void cache_leave(SlotCache& c) {
    c.active.store(0, std::memory_order_release);
  }
  // Inside an owner operation on slot's empty free list: refills it from
  // the cache's ring or the shared ring, else leaves and goes shared.
  void* alloc_refill(int slot, SlotCache& c);
  // Pops the head of c's non-empty free list (cnt elements) and leaves.
  void* pop_and_leave(SlotCache& c, uint32_t cnt);
  // Inside an owner operation with kSlotBatch pending: seals them, leaves.
  void seal_slot(SlotCache& c);
  // Whether the grace period of cookie is over, for the holder of slot.
  bool gp_over(int slot, uint64_t cookie) const;

  // ---- thieves ----
  // What a cache held when a thief took it.
  struct Taken {
    Chain ready;  // free list and batches whose grace period is over
    Chain pending;
    SlotBatch sealed[kSlotRing];  // the others, cookies kept
    uint32_t n_sealed = 0;
  };
  // Takes the caches other than self's worth taking (all: every non-empty
  // one) that are not in an owner operation (wait: retries those until each
  // was taken once). True if anything was taken.
  bool steal_caches(int self, bool all, bool wait);
  // Whether an alloc should take c: something reusable now, or pending
  // elements of a slot nobody holds (else they would wait for its next
  // holder's frees).
  bool worth_stealing(uint32_t s) const;
  // With c won (owner operation or thief): empties it into t.
  void take_cache(SlotCache& c, Taken& t);
  // Hands what was taken to the shared structures.
  void give_taken(Taken& t);
  void heavy_fence() const;

  // ---- shared paths ----
  void* alloc_shared();
  void* alloc_shared_or_steal(int slot);
  void* pop_free();
  // Pushes the chain head..tail (indexes + 1, linked by link words) on the
  // free list.
  void push_free_chain(uint32_t head, uint32_t tail);
  // Pushes cnt elements head..tail on the pending stack; seals when enough.
  void push_pending_chain(uint32_t head, uint32_t tail, uint32_t cnt);
  // A sealed batch into the shared ring (try-lock), else the pending stack.
  void give_batch(const Batch& b);
  // Commits at least min_elems elements. False if impossible right now.
  bool grow(uint64_t min_elems);
  bool try_lock_recycle() {
    return !recycle_lock_.load(std::memory_order_relaxed) &&
           !recycle_lock_.exchange(1, std::memory_order_acquire);
  }
  void unlock_recycle() { recycle_lock_.store(0, std::memory_order_release); }
  uint64_t shared_waiting() const {
    return (pending_.load(std::memory_order_relaxed) >> 32) +
           ring_waiting_.load(std::memory_order_relaxed);
  }
  // Under the recycle lock: seals the pending stack into a batch.
  void seal_locked();
  // Under the recycle lock: appends b to the ring (full: joins the newest
  // batch, which then waits for the later of the two cookies).
  void ring_insert_locked(const Batch& b);
  // Under the recycle lock: removes the oldest batch.
  Batch ring_pop_locked();
  // Under the recycle lock: moves every batch whose grace period is over to
  // the free list. True if any moved.
  bool recycle_locked();

  Map* owner_ = nullptr;
  mem::RcuDomain* rcu_ = nullptr;
  const mem::SlotTable* slots_ = nullptr;
  mem::RcuFlavor flavor_ = mem::RcuFlavor::kNormal;
  uintptr_t base_ = 0;
  uint64_t reserved_bytes_ = 0;
  uint64_t capacity_ = 0;
  uint64_t page_size_ = 4096;
  uint32_t elem_size_ = 0;
  uint32_t link_offset_ = 0;
  uint64_t magic_ = 0;
  bool fast_index_ = false;
  // Slot caches: nslots_ of them (0: none), the slots whose holders a grace
  // period of flavor_ waits for ([flavor_first_, flavor_end_)), and whether
  // thieves fence with membarrier (owners then need only a compiler fence).
  bool light_fence_ = false;
  uint32_t nslots_ = 0;
  uint32_t flavor_first_ = 0;
  uint32_t flavor_end_ = 0;
  uint64_t cache_bytes_ = 0;  // charged to owner_
  std::unique_ptr<SlotCache[]> caches_;
  // (tag << 32) | (index + 1); low half 0 means empty.
  alignas(64) std::atomic<uint64_t> free_head_{0};
  std::atomic<uint64_t> carved_{0};
  std::atomic<uint64_t> committed_elems_{0};
  std::atomic<uint64_t> committed_bytes_{0};
  std::atomic<uint32_t> grow_lock_{0};
  // Deferred reuse.
  // (count << 32) | (index + 1) of the pending stack: one compare-exchange
  // pushes and counts.
  std::atomic<uint64_t> pending_{0};
  std::atomic<uint64_t> ring_waiting_{0};  // elements in sealed batches
  // The oldest shared batch's cookie (0: none), stored under the lock: a
  // slot peeks at it before taking the lock.
  std::atomic<uint64_t> ring_head_cookie_{0};
  std::atomic<uint32_t> recycle_lock_{0};
  std::atomic<uint32_t> steal_lock_{0};  // one alloc steals at a time (try-lock)
  Batch ring_[kRing] = {};               // under recycle_lock_
  uint32_t ring_first_ = 0;
  uint32_t ring_n_ = 0;
};

// ---- slot fast paths (the holder of slot) ----

inline void* ElemPool::alloc(int slot) {
  if (static_cast<uint32_t>(slot) < nslots_) [[likely]] {
    SlotCache& c = caches_[static_cast<uint32_t>(slot)];
    if (cache_enter(c)) [[likely]] {
      if (const uint32_t h = c.free_head) [[likely]] {
        void* e = elem(h - 1);
        c.free_head = link_of(e)->load(std::memory_order_relaxed);
        c.free_cnt.store(c.free_cnt.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
        cache_leave(c);
        return e;
      }
      return alloc_refill(slot, c);
    }
  }
  return alloc_shared_or_steal(slot);
}

inline void ElemPool::free_rcu(int slot, void* e) {
  const auto i = static_cast<uint32_t>(index_of(e) + 1);
  USERBPF_DEBUG_ASSERT(i <= carved_.load(std::memory_order_relaxed));
  if (static_cast<uint32_t>(slot) < nslots_) [[likely]] {
    SlotCache& c = caches_[static_cast<uint32_t>(slot)];
    if (cache_enter(c)) [[likely]] {
      link_of(e)->store(c.pend_head, std::memory_order_relaxed);
      if (!c.pend_head) c.pend_tail = i;
      c.pend_head = i;
      const uint32_t n = c.pend_cnt.load(std::memory_order_relaxed) + 1;
      c.pend_cnt.store(n, std::memory_order_relaxed);
      if (n >= kSlotBatch) [[unlikely]]
        return seal_slot(c);
      cache_leave(c);
      return;
    }
  }
  if (!rcu_) return free(e);
  push_pending_chain(i, i, 1);
}

template <class Next>
inline void ElemPool::free_rcu_chain(int slot, void* e, Next&& next) {
  if (static_cast<uint32_t>(slot) < nslots_) [[likely]] {
    SlotCache& c = caches_[static_cast<uint32_t>(slot)];
    // In locals: the link stores would make the compiler reload them.
    const uintptr_t base = base_;
    const uint64_t magic = magic_;
    const uint32_t elem_size = elem_size_;
    const uint32_t link_offset = link_offset_;
    const bool fast_index = fast_index_;
    while (e && cache_enter(c)) {
      uint32_t n = c.pend_cnt.load(std::memory_order_relaxed);
      uint32_t head = c.pend_head;
      if (!head) c.pend_tail = static_cast<uint32_t>(index_of(e) + 1);
      do {
        void* following = next(e);
        const uint64_t off = reinterpret_cast<uintptr_t>(e) - base;
        const auto i = static_cast<uint32_t>(
            (fast_index ? static_cast<uint64_t>((static_cast<unsigned __int128>(magic) * off) >> 64)
                        : off / elem_size) +
            1);
        USERBPF_DEBUG_ASSERT(i == index_of(e) + 1);
        USERBPF_DEBUG_ASSERT(i <= carved_.load(std::memory_order_relaxed));
        reinterpret_cast<std::atomic<uint32_t>*>(static_cast<char*>(e) + link_offset)
            ->store(head, std::memory_order_relaxed);
        head = i;
        e = following;
      } while (++n < kSlotBatch && e);
      c.pend_head = head;
      c.pend_cnt.store(n, std::memory_order_relaxed);
      if (n >= kSlotBatch)
        seal_slot(c);  // leaves
      else
        cache_leave(c);
    }
  }
  while (e) {
    void* following = next(e);
    free_rcu(-1, e);
    e = following;
  }
}

}  // namespace userbpf::maps
