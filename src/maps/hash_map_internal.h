// The hash map's data structure, shared by hash_map.cc (element operations)
// and hash_batch.cc (batch operations). Not for use outside src/maps.
//
// Table: n_buckets = roundup_pow_of_two(max_entries) buckets, each a singly
// linked chain of elements and a spin lock. A chain ends in a "nulls" marker
// (bucket index << 1 | 1) instead of NULL, like the kernel's hlist_nulls: an
// element can be deleted and reused at once (no grace period), so a lock-free
// reader standing on it may be carried into another bucket's chain; ending on
// a marker that is not its own bucket's tells it to restart. An empty bucket
// that was never written has head 0 (fresh zero pages, so huge tables cost
// nothing until used); writers turn that into the bucket's marker.
//
// Element: HashElem header, key (round_up(key_size, 8), zero padded), value
// (round_up(value_size, 8)); values are 8-byte aligned.
//
// Invariants:
//   - Chains change only under their bucket's lock; lock-free readers follow
//     `next` with acquire loads. A new element is fully written before the
//     release store that links it.
//   - An update of an existing key links the new element at the head before
//     unlinking the old one, so a concurrent lookup finds one or the other,
//     never neither, never a half-written value.
//   - An unlinked element keeps its `next` until reused, so readers standing
//     on it can continue.
//   - seq is odd while an element is being (re)initialised and changes on
//     every reuse: host copies (key, value) check it before and after, and
//     retry when the element was recycled under them (a seqlock).
//   - count = live elements <= max_entries; an insert reserves its slot with
//     an atomic increment before allocating.
// Lock order: bucket lock -> pool growth lock. At most one bucket lock per
// thread per map at a time (batch ops take buckets one after another).
// Contexts: lookup (lock-free), update, delete, for_each: any context
// including signal handlers (-EBUSY on re-entry into a held lock group).
// get_next_key, batch ops, lookup_elem_copy: host.
#pragma once

#include <atomic>
#include <cstdint>

#include "maps/elem_pool.h"
#include "maps/hash_fn.h"
#include "maps/map.h"
#include "maps/map_lock.h"

namespace userbpf::maps {

struct HashElem {
  std::atomic<uintptr_t> next{0};  // next element or nulls marker
  std::atomic<uint32_t> hash{0};
  std::atomic<uint32_t> seq{0};        // odd while being (re)initialised
  std::atomic<uint32_t> pool_link{0};  // ElemPool's free-list word while free
  uint32_t pad = 0;
};
static_assert(sizeof(HashElem) == 24);
inline constexpr uint32_t kHashKeyOffset = sizeof(HashElem);

struct HashBucket {
  std::atomic<uintptr_t> head{0};  // 0: never used (empty)
  std::atomic<uint32_t> lock{0};
};
static_assert(sizeof(HashBucket) == 16);

struct HashMap : Map {
  HashBucket* buckets = nullptr;
  uint64_t buckets_bytes = 0;
  uint32_t n_buckets = 0;
  uint32_t lock_mask = 0;  // kernel: min(HASHTAB_MAP_LOCK_MASK, n_buckets - 1)
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t value_offset = 0;  // from the element start
  uint32_t elem_size = 0;
  bool prealloc = true;
  HashSecret secret;
  std::atomic<uint32_t> count{0};
  ElemPool pool;
};

inline HashMap* to_htab(Map* m) {
  return static_cast<HashMap*>(m);
}
inline const HashMap* to_htab(const Map* m) {
  return static_cast<const HashMap*>(m);
}

inline uintptr_t nulls_marker(uint32_t bucket) {
  return (static_cast<uintptr_t>(bucket) << 1) | 1;
}
inline bool is_nulls(uintptr_t p) {
  return p & 1;
}
inline uint32_t nulls_bucket(uintptr_t p) {
  return static_cast<uint32_t>(p >> 1);
}

inline void* elem_key(HashElem* e) {
  return reinterpret_cast<char*>(e) + kHashKeyOffset;
}
inline void* elem_value(const HashMap* h, HashElem* e) {
  return reinterpret_cast<char*>(e) + h->value_offset;
}

inline uint32_t htab_bucket_index(const HashMap* h, uint32_t hash) {
  return hash & (h->n_buckets - 1);
}

// Bucket locks: -EBUSY when this thread (e.g. a signal handler that
// interrupted it) already holds a bucket of the same lock group of this map.
inline int htab_lock_bucket(HashMap* h, uint32_t bucket) {
  return map_lock_acquire(h->buckets[bucket].lock, h, bucket & h->lock_mask);
}
inline void htab_unlock_bucket(HashMap* h, uint32_t bucket) {
  map_lock_release(h->buckets[bucket].lock);
}

// First element of a chain, or the bucket's nulls marker when empty.
inline uintptr_t htab_first(const HashMap* h, uint32_t bucket) {
  uintptr_t p = h->buckets[bucket].head.load(std::memory_order_acquire);
  return p ? p : nulls_marker(bucket);
}

// Under the bucket lock: the element holding key, or nullptr.
HashElem* htab_lookup_locked(HashMap* h, uint32_t bucket, const void* key, uint32_t hash);
// Under the bucket lock: removes e from its chain (e keeps its next link).
void htab_unlink_locked(HashMap* h, uint32_t bucket, HashElem* e);
// After unlinking (lock released or not): returns e to the pool and drops
// the element count.
void htab_free_elem(HashMap* h, HashElem* e);

}  // namespace userbpf::maps
