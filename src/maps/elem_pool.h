// Fixed-size element storage owned by one map (hash map elements): the
// alloc_elem/free_elem layer, kept behind this small interface so the
// any-context object caches of src/mem can replace it later without touching
// map logic.
//
// Layout: one virtual reservation of `capacity` elements (PROT_NONE, costs no
// memory), made read-write and charged to the map from the front as needed
// ("committed"). Elements are handed out from a lock-free free list, else
// carved from the committed front; growing the front takes a spin lock.
// Preallocated maps commit their whole block at creation; BPF_F_NO_PREALLOC
// maps commit on demand.
//
// Invariants:
//   carved <= committed_elems <= capacity < 2^32 - 1
//   every element index < carved is either live (owned by the map logic) or
//   on the free list, never both
//   memory is unmapped only by the destructor: a stale pointer a program kept
//   after a delete still points to mapped memory of this map (its contents
//   may be reused immediately: there is no grace period yet).
// The free list is a Treiber stack of element indexes; the head word carries
// a 32-bit tag bumped on every change, so a pop that raced with pop+push of
// the same element (ABA) fails its compare-exchange. While an element is free
// the pool uses the 4-byte word at link_offset; everything else in a free
// element is left intact (lock-free readers may still follow its links).
//
// Contexts: alloc/free from any context (program, host, signal handler):
// never blocks on a lock the same thread holds (growth re-entered from a
// signal handler fails instead), never calls malloc. init/destructor: host.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/result.h"
#include "maps/map.h"

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

  // An element (8-byte aligned; contents are whatever it last held, zero if
  // new), or nullptr when the memory limit, the reservation or a re-entrant
  // growth stops it.
  void* alloc();
  void free(void* elem);

  uintptr_t base() const { return base_; }
  uint32_t elem_size() const { return elem_size_; }
  // Bytes from base() that are mapped read-write (elements may live there).
  uint64_t committed_bytes() const { return committed_bytes_.load(std::memory_order_acquire); }
  uint64_t capacity() const { return capacity_; }
  // Elements handed out at least once (live or free).
  uint64_t carved() const { return carved_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t>* link(uint64_t idx) const {
    return reinterpret_cast<std::atomic<uint32_t>*>(base_ + idx * elem_size_ + link_offset_);
  }
  void* elem(uint64_t idx) const { return reinterpret_cast<void*>(base_ + idx * elem_size_); }
  // Commits at least min_elems elements. False if impossible right now.
  bool grow(uint64_t min_elems);

  Map* owner_ = nullptr;
  uintptr_t base_ = 0;
  uint64_t reserved_bytes_ = 0;
  uint64_t capacity_ = 0;
  uint64_t page_size_ = 4096;
  uint32_t elem_size_ = 0;
  uint32_t link_offset_ = 0;
  // (tag << 32) | (index + 1); low half 0 means empty.
  std::atomic<uint64_t> free_head_{0};
  std::atomic<uint64_t> carved_{0};
  std::atomic<uint64_t> committed_elems_{0};
  std::atomic<uint64_t> committed_bytes_{0};
  std::atomic<uint32_t> grow_lock_{0};
};

}  // namespace userbpf::maps
