// The hash map's data structure, shared by hash_map.cc (element operations)
// and hash_batch.cc (batch operations). Not for use outside src/maps.
//
// Table: n_buckets = roundup_pow_of_two(max_entries) buckets, each a singly
// linked chain of elements and a spin lock. A chain ends in a "nulls" marker
// (bucket index << 1 | 1) instead of NULL, like the kernel's hlist_nulls. An
// empty bucket that was never written has head 0 (fresh zero pages, so huge
// tables cost nothing until used); writers turn that into the bucket's marker.
//
// Element: HashElem header, key (round_up(key_size, 8), zero padded), value
// (round_up(value_size, 8)); values are 8-byte aligned.
//
// Element memory (all of it charged to the map, MapAttr::memory_limit):
//   - preallocated maps (default): ElemPool, max_entries + one per CPU
//     committed at creation;
//   - BPF_F_NO_PREALLOC: a MemAlloc of the map's domain (fixed unit = element
//     size, RCU flavor kBoth since sleepable programs may hold pointers too)
//     over a page pool of the map's own: one chunk sized for the worst case
//     (MAP_NORESERVE, charged only as slabs are carved), so access_ok is a
//     range check plus the slab/unit grid, and memory stays mapped until the
//     map is destroyed. Elements larger than the page pool's largest block
//     (2 MiB) fall back to an ElemPool committed on demand.
// Deleted and replaced elements are reused only after an RCU grace period of
// the map's domain (kBoth: normal and sleepable readers). A program run
// holds a slot of its runtime's domain, which is the map's, so a pointer it
// got from lookup keeps pointing at the element's old key and value until
// the program returns, even if other threads delete the element and insert
// other keys (SPEC.md section 2; the kernel only promises type-stable reuse).
// Host operations enter a read-side section of the map's domain when the
// calling thread does not hold one of its slots already (HtabSection).
//
// Invariants:
//   - Chains change only under their bucket's lock; lock-free readers follow
//     `next` with acquire loads. A new element is fully written (special
//     fields zeroed) before the release store that links it.
//   - An update of an existing key links the new element at the head before
//     unlinking the old one, so a concurrent lookup finds one or the other,
//     never neither, never a half-written value.
//   - An unlinked element keeps its `next`, key and value until a grace
//     period has passed, so readers standing on it end at their own bucket's
//     marker and see the bytes they looked up. The nulls restart (a walk
//     that ends on another bucket's marker) can then only follow a reuse seen
//     by a reader outside any read-side section (a host thread calling
//     lookup_elem directly); it is kept because it costs one compare on a miss.
//   - seq is odd while an element is being (re)initialised and changes on
//     every reuse; readers inside a section never see it change. Tests use it
//     to observe reuse.
//   - count = live elements <= max_entries; an insert reserves its slot with
//     an atomic increment before allocating. Elements waiting for a grace
//     period are not counted: inserts never fail with E2BIG because of them.
//   - Element storage bound: live (<= max_entries + one in-flight replacement
//     per concurrent updater) + waiting. The ElemPool reservation holds
//     max_entries + CPUs + 1024 + max(max_entries, 16384) elements; past it
//     (grace periods stalled by a reader while others churn), program
//     updates fail with ENOMEM, never wait; host updates wait for grace
//     periods and retry while elements were waiting. The no-prealloc chunk is sized likewise.
//   - Special fields of a value are released (map_release_fields) when its
//     element is deleted, replaced, or destroyed with the map; host copies
//     skip them (copy_map_value_in/out).
// Lock order: bucket lock -> pool growth lock / allocator depot mutex (host
// refill only). At most one bucket lock per thread per map at a time (batch
// ops take buckets one after another).
// Contexts: lookup (lock-free), update, delete, for_each: any context
// including signal handlers (-EBUSY on re-entry into a held lock group);
// lookup's pointer is valid while the caller holds a slot of the map's
// domain. get_next_key, batch ops, lookup_elem_copy: host.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "maps/elem_pool.h"
#include "maps/hash_fn.h"
#include "maps/map.h"
#include "maps/map_lock.h"
#include "mem/domain.h"

namespace userbpf::maps {

// next is not the first word: the object cache keeps a batch length in the
// first usable word of a free object, so a reader outside any section that
// still stands on a recycled element sees a wrong hash, never a wild link.
struct HashElem {
  std::atomic<uint32_t> hash{0};
  std::atomic<uint32_t> seq{0};        // odd while being (re)initialised
  std::atomic<uintptr_t> next{0};      // next element or nulls marker
  std::atomic<uint32_t> pool_link{0};  // ElemPool's list word while not live
  uint32_t pad = 0;
};
static_assert(sizeof(HashElem) == 24);
inline constexpr uint32_t kHashKeyOffset = sizeof(HashElem);

struct HashBucket {
  std::atomic<uintptr_t> head{0};  // 0: never used (empty)
  std::atomic<uint32_t> lock{0};
};
static_assert(sizeof(HashBucket) == 16);

// Where elements may lie, for access_ok: slabs of slab_mask + 1 bytes from
// base (ElemPool: one slab, the committed front), each holding objs units of
// `unit` bytes whose element starts `hdr` bytes in. idx = off / unit is
// computed as (off * magic) >> 64 (exact for off < 2^32) when div_fast.
struct HashGeometry {
  uintptr_t base = 0;
  uint64_t bytes = 0;  // MemAlloc chunk size (ElemPool: committed_bytes())
  uint64_t slab_mask = ~0ull;
  uint64_t magic = 0;
  uint64_t objs = ~0ull;
  uint32_t unit = 0;
  uint32_t hdr = 0;
  bool div_fast = false;
};

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
  bool prog_rdonly = false;  // BPF_F_RDONLY_PROG
  HashSecret secret;
  HashGeometry geo;
  uint64_t mem_limit = 0;  // attr.memory_limit, for the allocator's worker
  std::atomic<uint32_t> count{0};
  mem::MemDomain* dom = nullptr;
  // Element storage: ma (no-prealloc, over its own page pool) or pool.
  // Declared pages first so ma is destroyed before the pool it carves.
  std::unique_ptr<mem::PagePool> pages;
  std::unique_ptr<mem::MemAlloc> ma;
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

// A read-side section of the map's domain for a host operation: nothing to
// do when the thread already holds a slot of the domain (a program run, or
// an outer section); else claims one. slot() is the slot the operation uses
// for the allocator; ok() is false on a miss (nested claim, no free slot).
class HtabSection {
 public:
  explicit HtabSection(HashMap* h) : dom_(h->dom) {
    t_ops_++;
    slot_ = dom_->slots.held_slot();
    if (slot_ < 0) enter();
  }
  ~HtabSection() {
    leave();
    t_ops_--;
  }
  HtabSection(const HtabSection&) = delete;
  HtabSection& operator=(const HtabSection&) = delete;
  bool ok() const { return slot_ >= 0; }
  int slot() const { return slot_; }
  // Whether this section claimed the slot itself and is the thread's only
  // hash operation (a host thread outside any section of the domain, not a
  // signal handler interrupting another operation's wait): the operation may
  // then refill caches inline and, after leave(), wait for grace periods.
  bool owned() const { return owned_ && t_ops_ == 1; }
  void enter() {
    slot_ = dom_->slots.enter(mem::EnterMode::kWait);  // never waits when nested
    if (slot_ < 0) return;
    owned_ = true;
    outer_ = mem::RcuReadGuard::set_current(&dom_->rcu);
  }
  void leave() {
    if (!owned_) return;
    mem::RcuReadGuard::set_current(outer_);
    dom_->slots.leave(slot_);
    owned_ = false;
  }

 private:
  // Hash operations running on this thread (a signal handler's nest inside
  // the interrupted one's).
  static inline constinit thread_local uint32_t t_ops_ = 0;
  mem::MemDomain* dom_;
  mem::RcuDomain* outer_ = nullptr;
  int slot_ = -1;
  bool owned_ = false;
};

// Under the bucket lock: the element holding key, or nullptr.
HashElem* htab_lookup_locked(HashMap* h, uint32_t bucket, const void* key, uint32_t hash);
// Under the bucket lock: removes e from its chain (e keeps its next link).
void htab_unlink_locked(HashMap* h, uint32_t bucket, HashElem* e);
// After unlinking (lock released or not), inside a section holding slot:
// releases the value's special fields, drops the element count and frees e
// for reuse after a grace period.
void htab_free_elem(HashMap* h, int slot, HashElem* e);

}  // namespace userbpf::maps
