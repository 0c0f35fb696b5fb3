// Fixed-size element storage owned by one map: the preallocated pool of hash
// map elements (the default mode), and the storage of BPF_F_NO_PREALLOC
// elements too large for the object caches (hash_map_internal.h). Freed
// elements are reused only after an RCU grace period of the map's domain.
//
// Layout: one virtual reservation of `capacity` elements (PROT_NONE, costs no
// memory), made read-write and charged to the map from the front as needed
// ("committed"). Elements are handed out from a lock-free free list, else
// carved from the committed front; growing the front takes a spin lock.
// Preallocated maps commit max_entries (+ one per CPU) at creation; the rest
// of the reservation is committed only while freed elements wait for a grace
// period and the map needs more than the free list holds.
//
// Life of an element: free list / never carved -> alloc() -> live (owned by
// the map logic) -> free_rcu() -> pending -> sealed into a batch with a grace
// period cookie (rcu.h start_gp) -> once poll_gp(cookie) says every reader
// that could see it has left: back on the free list. free() (immediate
// reuse) exists for elements no reader can have seen.
//
// Invariants:
//   carved <= committed_elems <= capacity < 2^32 - 1
//   every element index < carved is in exactly one place: live, the free
//   list, the pending stack, or one sealed batch
//   waiting() = elements on the pending stack (count in its head word) + in
//   sealed batches (ring_waiting_)
//   an element freed with free_rcu is handed out again only after a grace
//   period (flavor given to set_rcu) that started after the free
//   memory is unmapped only by the destructor: a stale pointer a program kept
//   after a delete still points to mapped memory of this map
// Bound: live elements are capped by the map (count <= max_entries, plus one
// in-flight replacement per concurrent updater); the reservation adds room
// for the waiting ones (the hash map's bound: hash_map_internal.h).
// When readers stall grace periods long enough for more than that to wait,
// alloc() fails (ENOMEM) until a grace period completes; it never waits.
// The free list is a Treiber stack of element indexes; the head word carries
// a 32-bit tag bumped on every change, so a pop that raced with pop+push of
// the same element (ABA) fails its compare-exchange. The pending stack is
// push-only plus take-all (no ABA). Sealed batches live in a small ring
// guarded by a try-lock: whoever gets it seals and recycles, everyone else
// moves on. While an element is not live the pool uses the 4-byte word at
// link_offset; everything else in it is left intact (lock-free readers may
// still follow its links).
//
// Contexts: alloc/free/free_rcu from any context (program, host, signal
// handler): never block on a lock the same thread holds (growth re-entered
// from a signal handler fails instead, recycling is try-lock only), never
// call malloc. reclaim_host: host thread outside any read-side section.
// init/set_rcu/destructor: host.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/result.h"
#include "maps/map.h"
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
  // The RCU domain whose grace periods free_rcu waits for (nullptr: free_rcu
  // reuses at once, like free).
  void set_rcu(mem::RcuDomain* rcu, mem::RcuFlavor flavor) {
    rcu_ = rcu;
    flavor_ = flavor;
  }

  // An element (8-byte aligned; contents are whatever it last held, zero if
  // new), or nullptr when the memory limit, the reservation or a re-entrant
  // growth stops it.
  void* alloc();
  // Immediate reuse: only for elements no reader can hold.
  void free(void* elem);
  // Reuse after a grace period.
  void free_rcu(void* elem);
  // Host, outside any read-side section: waits for a grace period and puts
  // every element freed before the call back on the free list.
  void reclaim_host();

  uintptr_t base() const { return base_; }
  uint32_t elem_size() const { return elem_size_; }
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  // Bytes from base() that are mapped read-write (elements may live there).
  uint64_t committed_bytes() const { return committed_bytes_.load(std::memory_order_acquire); }
  uint64_t capacity() const { return capacity_; }
  // Elements handed out at least once (live, free or waiting).
  uint64_t carved() const { return carved_.load(std::memory_order_relaxed); }
  // Elements freed with free_rcu whose grace period has not been seen over.
  uint64_t waiting() const {
    return (pending_.load(std::memory_order_relaxed) >> 32) +
           ring_waiting_.load(std::memory_order_relaxed);
  }

 private:
  struct Batch {
    uint64_t cookie;
    uint32_t head, tail, cnt;  // element index + 1 (0: none)
  };
  static constexpr uint32_t kRing = 32;       // sealed batches kept apart
  static constexpr uint32_t kSealBatch = 32;  // pending elements that trigger a seal

  std::atomic<uint32_t>* link(uint64_t idx) const {
    return reinterpret_cast<std::atomic<uint32_t>*>(base_ + idx * elem_size_ + link_offset_);
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
  void* pop_free();
  // Pushes the chain head..tail (indexes + 1, linked by link words) on the
  // free list.
  void push_free_chain(uint32_t head, uint32_t tail);
  // Commits at least min_elems elements. False if impossible right now.
  bool grow(uint64_t min_elems);
  bool try_lock_recycle() {
    return !recycle_lock_.load(std::memory_order_relaxed) &&
           !recycle_lock_.exchange(1, std::memory_order_acquire);
  }
  void unlock_recycle() { recycle_lock_.store(0, std::memory_order_release); }
  // Under the recycle lock: seals the pending stack into a batch.
  void seal_locked();
  // Under the recycle lock: moves every batch whose grace period is over to
  // the free list. True if any moved.
  bool recycle_locked();

  Map* owner_ = nullptr;
  mem::RcuDomain* rcu_ = nullptr;
  mem::RcuFlavor flavor_ = mem::RcuFlavor::kNormal;
  uintptr_t base_ = 0;
  uint64_t reserved_bytes_ = 0;
  uint64_t capacity_ = 0;
  uint64_t page_size_ = 4096;
  uint32_t elem_size_ = 0;
  uint32_t link_offset_ = 0;
  uint64_t magic_ = 0;
  bool fast_index_ = false;
  // (tag << 32) | (index + 1); low half 0 means empty.
  std::atomic<uint64_t> free_head_{0};
  std::atomic<uint64_t> carved_{0};
  std::atomic<uint64_t> committed_elems_{0};
  std::atomic<uint64_t> committed_bytes_{0};
  std::atomic<uint32_t> grow_lock_{0};
  // Deferred reuse.
  // (count << 32) | (index + 1) of the pending stack: one compare-exchange
  // pushes and counts.
  std::atomic<uint64_t> pending_{0};
  std::atomic<uint64_t> ring_waiting_{0};  // elements in sealed batches
  std::atomic<uint32_t> recycle_lock_{0};
  Batch ring_[kRing] = {};  // under recycle_lock_
  uint32_t ring_first_ = 0;
  uint32_t ring_n_ = 0;
};

}  // namespace userbpf::maps
