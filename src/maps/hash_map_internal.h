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
// Per-CPU hash (PERCPU_HASH, percpu_hash.cc): the value area holds the N
// copies of the value inline, CPU c's at value_offset + c * pcpu_size, so a
// per-CPU element is an ordinary element, only larger: preallocation, the
// RCU-deferred reuse, the allocator and access_ok's grid all stay as they
// are, and an insert is one allocation. The kernel instead keeps a pointer to
// a per-CPU allocation in the element. Given up: the copies of one element
// share cache lines, so CPUs updating the same key contend for them (copies
// stay exact: each is written by its own slot's holder only).
//
// LRU hash (LRU_HASH, LRU_PERCPU_HASH; lru_hash.cc, the kernel's htab_lru_*):
// the same table, elements and ElemPool (always preallocated: the kernel
// answers BPF_F_NO_PREALLOC with ENOTSUPP; LRU_HASH's chains run oldest
// first, lru_hash.cc says why), plus an LruList (lru_list.h)
// that picks the element to evict. Each element ends with its LruNode, after
// the value copies (lru_offset), so HASH elements do not grow and access_ok
// never lets a program reach a node. An insert takes its element from the
// LRU before locking the bucket (eviction locks buckets: LRU locks -> bucket
// lock, never the other way); a delete, a replace or a failed insert gives
// the entry back (push_free) after unlocking. Program lookups mark the
// element used (ref bit); host lookups, batches and walks do not (the
// kernel's lookup_elem_sys_only), so a dump leaves the eviction order alone.
// Live elements <= max_entries through the LRU's entries: no E2BIG, and no
// count (it stays 0; lru_list.h says why).
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
//     unlinking the old one (LRU_HASH: puts it in the old one's place with
//     one store), so a concurrent lookup finds one or the other, never
//     neither, never a half-written value.
//   - An unlinked element keeps its `next`, key and value until a grace
//     period has passed, so readers standing on it end at their own bucket's
//     marker and see the bytes they looked up. The nulls restart (a walk
//     that ends on another bucket's marker) can then only follow a reuse seen
//     by a reader outside any read-side section (a host thread calling
//     lookup_elem directly); it is kept because it costs one compare on a miss.
//   - seq is odd while an element is being (re)initialised and changes on
//     every reuse; readers inside a section never see it change (LRU maps:
//     unless an insert found the pool dry and reused an evicted element at
//     once, lru_list.h). Tests use it to observe reuse.
//   - count = live elements <= max_entries (HASH, PERCPU_HASH; LRU maps
//     keep none); an insert reserves its slot with an atomic increment
//     before allocating. Elements waiting for a grace period are not
//     counted: inserts never fail with E2BIG because of them.
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
#include <cerrno>
#include <cstdint>
#include <memory>

#include "maps/elem_pool.h"
#include "maps/hash_fn.h"
#include "maps/lru_list.h"
#include "maps/map.h"
#include "maps/map_internal.h"
#include "maps/map_lock.h"
#include "maps/special_fields.h"
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
  // Copies of the value: 1, or N (the domain's normal slots) for per-CPU
  // maps, each pcpu_size = round_up(value_size, 8) bytes apart.
  uint32_t ncpus = 1;
  uint32_t pcpu_size = 0;
  uint64_t pcpu_magic = 0;  // division by pcpu_size for access_ok
  bool percpu = false;
  bool prealloc = true;
  bool prog_rdonly = false;  // BPF_F_RDONLY_PROG
  HashSecret secret;
  HashGeometry geo;
  uint64_t mem_limit = 0;          // attr.memory_limit, for the allocator's worker
  std::atomic<uint32_t> count{0};  // live elements (LRU maps: unused, 0)
  mem::MemDomain* dom = nullptr;
  // Element storage: ma (no-prealloc, over its own page pool) or pool.
  // Declared pages first so ma is destroyed before the pool it carves.
  std::unique_ptr<mem::PagePool> pages;
  std::unique_ptr<mem::MemAlloc> ma;
  ElemPool pool;
  // LRU maps only (else nullptr): the eviction lists, and each element's
  // LruNode offset (after the value copies).
  std::unique_ptr<LruList> lru;
  uint32_t lru_offset = 0;
  // Inserts that found no element ready (grace periods lagging) and reused
  // an evicted one at once; a reader's pointer may then see another key.
  std::atomic<uint64_t> lru_reused{0};
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

inline bool htab_type_is_lru(uint32_t type) {
  return type == static_cast<uint32_t>(MapType::kLRU_HASH) ||
         type == static_cast<uint32_t>(MapType::kLRU_PERCPU_HASH);
}
inline LruNode* htab_lru_node(const HashMap* h, HashElem* e) {
  return reinterpret_cast<LruNode*>(reinterpret_cast<char*>(e) + h->lru_offset);
}
inline HashElem* htab_lru_elem(const HashMap* h, LruNode* n) {
  return reinterpret_cast<HashElem*>(reinterpret_cast<char*>(n) - h->lru_offset);
}

inline uint32_t htab_bucket_index(const HashMap* h, uint32_t hash) {
  return hash & (h->n_buckets - 1);
}

// First element of a chain, or the bucket's nulls marker when empty.
inline uintptr_t htab_first(const HashMap* h, uint32_t bucket) {
  uintptr_t p = h->buckets[bucket].head.load(std::memory_order_acquire);
  return p ? p : nulls_marker(bucket);
}

// The key's hash, with the word loads folded for 4- and 8-byte keys.
[[gnu::always_inline]] inline uint32_t htab_hash(const HashMap* h, const void* key) {
  if (h->key_size == 4) return hash_key(key, 4, h->secret);
  if (h->key_size == 8) return hash_key(key, 8, h->secret);
  return hash_key(key, h->key_size, h->secret);
}

// Lock-free search of key's bucket (the kernel's lookup_nulls_elem_raw):
// restarts when the walk ended on another bucket's marker, which can only
// happen to a reader outside any read-side section (see above). key_size is
// a constant in the specialised lookups (htab_find).
[[gnu::always_inline]] inline HashElem* htab_lookup_nulls(const HashMap* h, const void* key,
                                                          uint32_t hash, uint32_t key_size) {
  uint32_t bucket = htab_bucket_index(h, hash);
  for (;;) {
    uintptr_t p = htab_first(h, bucket);
    while (!is_nulls(p)) {
      auto* e = reinterpret_cast<HashElem*>(p);
      if (e->hash.load(std::memory_order_relaxed) == hash &&
          equal_padded(elem_key(e), key, key_size))
        return e;
      p = e->next.load(std::memory_order_acquire);
    }
    if (nulls_bucket(p) == bucket) [[likely]]
      return nullptr;
  }
}

inline HashElem* htab_lookup_nulls(const HashMap* h, const void* key, uint32_t hash) {
  return htab_lookup_nulls(h, key, hash, h->key_size);
}

// Hash and search with the key size known at compile time (kSize != 0) or
// read from the map.
template <uint32_t kSize>
[[gnu::always_inline]] inline HashElem* htab_find(const HashMap* h, const void* key) {
  const uint32_t ks = kSize ? kSize : h->key_size;
  return htab_lookup_nulls(h, key, hash_key(key, ks, h->secret), ks);
}

// Bucket locks: -EBUSY when this thread (e.g. a signal handler that
// interrupted it) already holds a bucket of the same lock group of this map.
inline int htab_lock_bucket(HashMap* h, uint32_t bucket) {
  return map_lock_acquire(h->buckets[bucket].lock, h, bucket & h->lock_mask);
}
inline void htab_unlock_bucket(HashMap* h, uint32_t bucket) {
  map_lock_release(h->buckets[bucket].lock);
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

// Map operations may run in signal handlers: the system calls of slow
// paths (mmap, mprotect, futex, nanosleep) must not change errno.
struct KeepErrno {
  int saved = errno;
  ~KeepErrno() { errno = saved; }
};

// Rounds of "wait for a grace period, try again" a host update makes before
// it reports ENOMEM (while elements were waiting; else two).
inline constexpr int kHostNomemRetries = 64;

// Ops shared by the four hash types (hash_map.cc; per-CPU aware where the
// value matters: alloc sizes the copies, free/delete release every copy's
// fields, for_each passes the caller's CPU's copy, access_ok allows each
// copy's value bytes; LRU aware where elements come and go: alloc_check,
// alloc, delete and the deleting batches).
int htab_map_alloc_check(const MapAttr& attr);
Result<Map*> htab_map_alloc(const MapAttr& attr);
void htab_map_free(Map* map);
int htab_map_get_next_key(Map* map, const void* key, void* next_key);
long htab_map_delete_elem(Map* map, const void* key);
long htab_map_for_each_elem(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags);
bool htab_map_access_ok(const Map* map, uintptr_t addr, size_t size, bool write);
uintptr_t htab_map_value_at(const Map* map, uintptr_t addr);
// hash_batch.cc: bucket by bucket (per-CPU: the host layout, or one CPU's
// value with BPF_F_CPU).
int htab_map_lookup_batch(Map* map, BatchArgs& args);
int htab_map_lookup_and_delete_batch(Map* map, BatchArgs& args);

// An element for an insert, inside a section holding slot; host: allocator
// caches may refill inline. nullptr when out of memory.
HashElem* htab_alloc_elem(HashMap* h, int slot, bool host);
// Zeroes the special fields of every copy of a new element's value.
void htab_zero_fields(HashMap* h, void* value);
// Fills a new (or reused) element of a map with one copy of the value.
void htab_init_elem(HashMap* h, HashElem* e, const void* key, const void* value, uint32_t hash);
// The same with the key size known at compile time (kSize 4 or 8; 0: read
// from the map), for the update paths. seq is odd meanwhile (reuse is
// visible to tests and to readers outside a section).
template <uint32_t kSize>
[[gnu::always_inline]] inline void htab_init_elem_sized(HashMap* h, HashElem* e, const void* key,
                                                        const void* value, uint32_t hash) {
  uint32_t s = e->seq.load(std::memory_order_relaxed);
  e->seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  e->hash.store(hash, std::memory_order_relaxed);
  store_padded(elem_key(e), key, kSize ? kSize : h->key_size);
  void* v = elem_value(h, e);
  if (!map_fields(h)) [[likely]] {
    // An 8-byte value (a counter) is the commonest: one store.
    if (h->value_size == 8)
      copy_to_map(v, value, 8);
    else
      copy_to_map(v, value, h->value_size);
  } else {
    htab_zero_fields(h, v);
    copy_map_value_in(h, v, value, h->value_size);
  }
  e->seq.store(s + 2, std::memory_order_release);
}

// Host, after leaving its section: lets elements freed so far finish their
// grace period and become allocatable again. False if nothing was waiting.
bool htab_reclaim_host(HashMap* h);

// htab_update_in_section's retries after ENOMEM (out of line, so the first
// update inlines into its caller; update by value, so the first one keeps
// its captures in registers).
template <class Update>
[[gnu::noinline]] long htab_update_retry(HashMap* h, HtabSection& sec, Update update) {
  long rc = -ENOMEM;
  KeepErrno keep_errno;
  for (int round = 0; rc == -ENOMEM && sec.owned() && round < kHostNomemRetries; round++) {
    sec.leave();
    bool waited = htab_reclaim_host(h);
    sec.enter();
    if (!sec.ok()) return -EBUSY;
    if (!waited && round > 0) break;
    rc = update(sec.slot(), true);
  }
  return rc;
}

// Runs update(slot, host) inside a read-side section of the map's domain;
// a host thread retries an ENOMEM after waiting for grace periods, since
// deleted elements become reusable only then (our own section would block
// them). Other threads may take them first, hence more rounds while
// elements were waiting; when nothing waits, only more memory would help and
// ENOMEM stands.
template <class Update>
[[gnu::always_inline]] inline long htab_update_in_section(HashMap* h, Update&& update) {
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  long rc = update(sec.slot(), sec.owned());
  if (rc != -ENOMEM || !sec.owned()) [[likely]]
    return rc;
  return htab_update_retry(h, sec, update);
}

// Under the bucket lock: the element holding key, or nullptr.
HashElem* htab_lookup_locked(HashMap* h, uint32_t bucket, const void* key, uint32_t hash);
// The same with the key size known at compile time (kSize 4 or 8; 0: read
// from the map).
template <uint32_t kSize>
[[gnu::always_inline]] inline HashElem* htab_lookup_locked_sized(HashMap* h, uint32_t bucket,
                                                                 const void* key, uint32_t hash) {
  const uint32_t ks = kSize ? kSize : h->key_size;
  for (uintptr_t p = htab_first(h, bucket); !is_nulls(p);) {
    auto* e = reinterpret_cast<HashElem*>(p);
    if (e->hash.load(std::memory_order_relaxed) == hash && equal_padded(elem_key(e), key, ks))
      return e;
    p = e->next.load(std::memory_order_relaxed);
  }
  return nullptr;
}

// Under the bucket lock: removes e from its chain (e keeps its next link).
void htab_unlink_locked(HashMap* h, uint32_t bucket, HashElem* e);
// The same for an e that may not be on the chain (any more): false if not.
inline bool htab_unlink_if_linked(HashMap* h, uint32_t bucket, HashElem* e) {
  std::atomic<uintptr_t>* link = &h->buckets[bucket].head;
  for (;;) {
    uintptr_t p = link->load(std::memory_order_relaxed);
    if (p == reinterpret_cast<uintptr_t>(e)) break;
    if (p == 0 || is_nulls(p)) return false;
    link = &reinterpret_cast<HashElem*>(p)->next;
  }
  link->store(e->next.load(std::memory_order_relaxed), std::memory_order_release);
  return true;
}
// After unlinking (lock released or not), inside a section holding slot:
// releases the value's special fields, drops the element count and frees e
// for reuse after a grace period (LRU maps: no count; gives its entry back
// to the LRU, which frees it; so only after the bucket lock is released).
void htab_free_elem(HashMap* h, int slot, HashElem* e);
// Releases what the special fields of every copy of e's value hold.
void htab_release_value(HashMap* h, HashElem* e);

// lookup_and_delete_elem of both hash types: copy_out(h, value, e) copies
// the element's value to the host buffer under the bucket lock, then the
// element is unlinked and freed.
template <class CopyOut>
int htab_lookup_and_delete(Map* map, const void* key, void* value, uint64_t flags,
                           CopyOut&& copy_out) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if (int err = map_check_lock_flag(map, flags)) return err;
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  uint32_t hash = htab_hash(h, key);
  uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  HashElem* e = htab_lookup_locked(h, bucket, key, hash);
  if (e) {
    copy_out(h, value, e);
    htab_unlink_locked(h, bucket, e);
  }
  htab_unlock_bucket(h, bucket);
  if (!e) return -ENOENT;
  htab_free_elem(h, sec.slot(), e);
  return 0;
}

// ---- LRU maps (lru_hash.cc) -----------------------------------------------

// Alloc, after the element pool: the LruList over attr.max_entries (already
// rounded up to a multiple of the CPUs with BPF_F_NO_COMMON_LRU), charged to
// the map.
Status htab_lru_init(HashMap* h);
// An element for an insert, counted, bound to an LRU entry (evicting when
// the map is full): fresh from the pool, or when the pool has none ready an
// evicted one reused at once. nullptr (ENOMEM) when nothing could be evicted
// (every candidate busy). Inside a section holding slot, no map lock held by
// the operation (eviction takes bucket locks). Give it back with
// htab_free_elem if it is not linked after all.
HashElem* htab_lru_pop_elem(HashMap* h, int slot);
// LRU_HASH's program-side lookup (marks the element used) and update.
void* lru_htab_map_lookup_elem(Map* map, const void* key);
long lru_htab_map_update_elem(Map* map, const void* key, const void* value, uint64_t flags);

}  // namespace userbpf::maps
