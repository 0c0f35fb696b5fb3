// BPF_MAP_TYPE_HASH: creation, lock-free lookup, bucket-locked update and
// delete, iteration (kernel/bpf/hashtab.c behaviour; design and invariants
// in hash_map_internal.h).
#include "maps/hash_map.h"

#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>

#include "base/assert.h"
#include "base/bits.h"
#include "maps/generic_batch.h"
#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"

namespace userbpf::maps {

int htab_map_lookup_batch(Map* map, BatchArgs& args);             // hash_batch.cc
int htab_map_lookup_and_delete_batch(Map* map, BatchArgs& args);  // hash_batch.cc

namespace {

constexpr uint32_t kHtabCreateFlagMask = kBpfFNoPrealloc | kBpfFNoCommonLru | kBpfFNumaNode |
                                         kBpfFRdonly | kBpfFWronly | kBpfFRdonlyProg |
                                         kBpfFWronlyProg | kBpfFZeroSeed;
// The kernel bounds key_size + value_size by what kmalloc can hand out:
// KMALLOC_MAX_SIZE (4 MiB on x86-64) minus its 48-byte struct htab_elem.
constexpr uint64_t kKmallocMaxSize = 4ull << 20;
constexpr uint64_t kKernelHtabElemSize = 48;
// Elements beyond max_entries that updates replacing a key may hold for a
// moment (kernel: one extra element per CPU). Preallocated maps commit
// max_entries + CPUs; the reservation has this many more for the rare case
// of more concurrent replacements than CPUs.
constexpr uint64_t kInflightSlack = 1024;

std::atomic<testing::BucketLockedHook> g_bucket_locked_hook{nullptr};

uint64_t possible_cpus() {
  long n = sysconf(_SC_NPROCESSORS_CONF);
  return n > 0 ? static_cast<uint64_t>(n) : 1;
}

uint64_t random_seed() {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
    seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return seed;
}

// Lock-free search of key's bucket (the kernel's lookup_nulls_elem_raw):
// restarts when the walk ended on another bucket's marker because an element
// it stood on was deleted and reused elsewhere.
HashElem* htab_lookup_nulls(const HashMap* h, const void* key, uint32_t hash) {
  uint32_t bucket = htab_bucket_index(h, hash);
  for (;;) {
    uintptr_t p = htab_first(h, bucket);
    while (!is_nulls(p)) {
      auto* e = reinterpret_cast<HashElem*>(p);
      if (e->hash.load(std::memory_order_relaxed) == hash &&
          equal_padded(elem_key(e), key, h->key_size))
        return e;
      p = e->next.load(std::memory_order_acquire);
    }
    if (nulls_bucket(p) == bucket) return nullptr;
  }
}

// Fills a new element. seq is odd meanwhile so a host copy that still holds
// a pointer to the element's previous life notices the reuse.
void htab_init_elem(HashMap* h, HashElem* e, const void* key, const void* value, uint32_t hash) {
  uint32_t s = e->seq.load(std::memory_order_relaxed);
  e->seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  e->hash.store(hash, std::memory_order_relaxed);
  store_padded(elem_key(e), key, h->key_size);
  copy_to_map(elem_value(h, e), value, h->value_size);
  e->seq.store(s + 2, std::memory_order_release);
}

// Seqlock reader side: begin returns the even seq, or false while rewritten.
bool seq_begin(const HashElem* e, uint32_t* seq) {
  *seq = e->seq.load(std::memory_order_acquire);
  return (*seq & 1) == 0;
}
bool seq_still(const HashElem* e, uint32_t seq) {
  std::atomic_thread_fence(std::memory_order_acquire);
  return e->seq.load(std::memory_order_relaxed) == seq;
}

// Host-side search that also pins down the element's life: returns the
// element holding key with *seq its even reuse counter, or nullptr if
// missing. The caller reads what it needs, then checks seq_still().
HashElem* htab_find_stable(const HashMap* h, const void* key, uint32_t hash, uint32_t* seq) {
  for (;;) {
    HashElem* e = htab_lookup_nulls(h, key, hash);
    if (!e) return nullptr;
    if (!seq_begin(e, seq)) continue;
    // Recycled for another key between the search and seq_begin?
    if (e->hash.load(std::memory_order_relaxed) == hash &&
        equal_padded(elem_key(e), key, h->key_size))
      return e;
  }
}

// Copies the key of e if e is not being recycled meanwhile.
bool copy_key_stable(const HashMap* h, HashElem* e, void* out) {
  uint32_t s;
  if (!seq_begin(e, &s)) return false;
  copy_from_map(out, elem_key(e), h->key_size);
  return seq_still(e, s);
}

// ---- attribute checks and creation (host) --------------------------------

int htab_map_alloc_check(const MapAttr& attr) {
  if (attr.map_flags & ~kHtabCreateFlagMask)
    return reject_attr(EINVAL, "map_flags has bits a hash map does not accept");
  if ((attr.map_flags & kBpfFRdonlyProg) && (attr.map_flags & kBpfFWronlyProg))
    return reject_attr(EINVAL, "map_flags has both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG");
  if (attr.map_flags & kBpfFNoCommonLru)
    return reject_attr(EINVAL, "BPF_F_NO_COMMON_LRU is only for LRU hash maps");
  if (attr.max_entries == 0) return reject_attr(EINVAL, "max_entries must be > 0");
  if (attr.key_size == 0) return reject_attr(EINVAL, "key_size must be > 0");
  if (attr.value_size == 0) return reject_attr(EINVAL, "value_size must be > 0");
  if (static_cast<uint64_t>(attr.key_size) + attr.value_size >=
      kKmallocMaxSize - kKernelHtabElemSize)
    return reject_attr(E2BIG, "key_size + value_size too large (kernel limit ~4 MiB)");
  // Kernel htab_map_alloc: the table must stay a u32-indexable power of two.
  if (attr.max_entries > (1u << 31)) return reject_attr(E2BIG, "max_entries above 2^31");
  if (roundup_pow_of_two(attr.max_entries) > UINT32_MAX / sizeof(HashBucket))
    return reject_attr(E2BIG, "max_entries too large for the bucket table");
  return 0;
}

void htab_map_free(Map* map) {
  HashMap* h = to_htab(map);
  if (h->buckets) munmap(h->buckets, h->buckets_bytes);
  delete h;
}

Result<Map*> htab_map_alloc(const MapAttr& attr) {
  auto* h = new (std::nothrow) HashMap();
  if (!h) return make_error(ENOMEM, "out of memory for the map header");
  h->attr = attr;
  if (!map_charge(h, sizeof(HashMap))) {
    delete h;
    return make_error(ENOMEM, "memory_limit %llu is below the map header size",
                      static_cast<unsigned long long>(attr.memory_limit));
  }
  h->n_buckets = static_cast<uint32_t>(roundup_pow_of_two(attr.max_entries));
  h->lock_mask = h->n_buckets - 1 < 7 ? h->n_buckets - 1 : 7;
  h->key_size = attr.key_size;
  h->value_size = attr.value_size;
  h->value_offset = kHashKeyOffset + static_cast<uint32_t>(round_up(attr.key_size, 8));
  h->elem_size = h->value_offset + static_cast<uint32_t>(round_up(attr.value_size, 8));
  h->prealloc = !(attr.map_flags & kBpfFNoPrealloc);
  h->secret = make_hash_secret((attr.map_flags & kBpfFZeroSeed) ? 0 : random_seed());

  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t bytes = round_up(static_cast<uint64_t>(h->n_buckets) * sizeof(HashBucket), page);
  if (!map_charge(h, bytes)) {
    htab_map_free(h);
    return make_error(ENOMEM, "%llu bytes of buckets exceed memory_limit %llu",
                      static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(attr.memory_limit));
  }
  // Zero pages: every head starts 0 ("empty"), touched only when used.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    htab_map_free(h);
    return make_error(ENOMEM, "cannot map %llu bytes of buckets",
                      static_cast<unsigned long long>(bytes));
  }
  h->buckets = static_cast<HashBucket*>(p);
  h->buckets_bytes = bytes;

  uint64_t extra = possible_cpus();
  uint64_t capacity = attr.max_entries + extra + kInflightSlack;
  uint64_t initial = h->prealloc ? attr.max_entries + extra : 0;
  Status st = h->pool.init(h, h->elem_size, offsetof(HashElem, pool_link), capacity, initial);
  if (!st.ok()) {
    htab_map_free(h);
    return st.take_error();
  }
  return static_cast<Map*>(h);
}

// ---- element operations (host and program) -------------------------------

void* htab_map_lookup_elem(Map* map, const void* key) {
  HashMap* h = to_htab(map);
  HashElem* e = htab_lookup_nulls(h, key, hash_key(key, h->key_size, h->secret));
  return e ? elem_value(h, e) : nullptr;
}

long htab_map_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  HashMap* h = to_htab(map);
  if ((flags & ~kBpfFLock) > kBpfExist) return -EINVAL;
  // With a spin lock, BPF_F_LOCK would copy into the existing value in place.
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  uint32_t hash = hash_key(key, h->key_size, h->secret);
  uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  if (auto hook = g_bucket_locked_hook.load(std::memory_order_relaxed)) hook(map);

  HashElem* old = htab_lookup_locked(h, bucket, key, hash);
  uint64_t op = flags & ~kBpfFLock;
  long err = 0;
  if (old && op == kBpfNoexist) {
    err = -EEXIST;
  } else if (!old && op == kBpfExist) {
    err = -ENOENT;
  } else if (!old && h->count.fetch_add(1, std::memory_order_relaxed) >= h->attr.max_entries) {
    h->count.fetch_sub(1, std::memory_order_relaxed);
    err = -E2BIG;
  }
  HashElem* e = nullptr;
  if (!err) {
    e = static_cast<HashElem*>(h->pool.alloc());
    if (!e) {
      if (!old) h->count.fetch_sub(1, std::memory_order_relaxed);
      err = -ENOMEM;
    }
  }
  if (err) {
    htab_unlock_bucket(h, bucket);
    return err;
  }
  htab_init_elem(h, e, key, value, hash);
  // New element first, so concurrent lookups find it before the old one.
  e->next.store(htab_first(h, bucket), std::memory_order_relaxed);
  h->buckets[bucket].head.store(reinterpret_cast<uintptr_t>(e), std::memory_order_release);
  if (old) htab_unlink_locked(h, bucket, old);
  htab_unlock_bucket(h, bucket);
  if (old) h->pool.free(old);  // replaced: the count is unchanged
  return 0;
}

long htab_map_delete_elem(Map* map, const void* key) {
  HashMap* h = to_htab(map);
  uint32_t hash = hash_key(key, h->key_size, h->secret);
  uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  HashElem* e = htab_lookup_locked(h, bucket, key, hash);
  if (e) htab_unlink_locked(h, bucket, e);
  htab_unlock_bucket(h, bucket);
  if (!e) return -ENOENT;
  htab_free_elem(h, e);
  return 0;
}

long htab_map_for_each_elem(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags) {
  if (flags != 0) return -EINVAL;
  HashMap* h = to_htab(map);
  long num_elems = 0;
  for (uint32_t i = 0; i < h->n_buckets; i++) {
    // Read next before the callback, which may delete the element.
    for (uintptr_t p = htab_first(h, i); !is_nulls(p);) {
      auto* e = reinterpret_cast<HashElem*>(p);
      p = e->next.load(std::memory_order_acquire);
      num_elems++;
      if (cb(cb_ctx, map, elem_key(e), elem_value(h, e))) return num_elems;
    }
  }
  return num_elems;
}

bool htab_map_access_ok(const Map* map, uintptr_t addr, size_t size, bool write) {
  const HashMap* h = to_htab(map);
  uint64_t off = addr - h->pool.base();
  uint64_t committed = h->pool.committed_bytes();
  if (off >= committed || size > committed - off) return false;
  if (write && (map->attr.map_flags & kBpfFRdonlyProg)) return false;
  uint64_t in_elem = off % h->elem_size;
  if (in_elem >= h->value_offset) return in_elem - h->value_offset + size <= h->value_size;
  // Keys (for_each callbacks get a pointer to them) are read-only.
  return !write && in_elem >= kHashKeyOffset && in_elem - kHashKeyOffset + size <= h->key_size;
}

// ---- host only -------------------------------------------------------------

int htab_map_lookup_elem_copy(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  HashMap* h = to_htab(map);
  uint32_t hash = hash_key(key, h->key_size, h->secret);
  for (;;) {
    uint32_t s;
    HashElem* e = htab_find_stable(h, key, hash, &s);
    if (!e) return -ENOENT;
    copy_from_map(value, elem_value(h, e), h->value_size);
    if (seq_still(e, s)) return 0;
  }
}

int htab_map_lookup_and_delete_elem(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  HashMap* h = to_htab(map);
  uint32_t hash = hash_key(key, h->key_size, h->secret);
  uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  HashElem* e = htab_lookup_locked(h, bucket, key, hash);
  if (e) {
    copy_from_map(value, elem_value(h, e), h->value_size);
    htab_unlink_locked(h, bucket, e);
  }
  htab_unlock_bucket(h, bucket);
  if (!e) return -ENOENT;
  htab_free_elem(h, e);
  return 0;
}

// Order: the rest of the key's chain, then the following non-empty buckets.
// A NULL or missing key starts at the first non-empty bucket.
int htab_map_get_next_key(Map* map, const void* key, void* next_key) {
  HashMap* h = to_htab(map);
  for (;;) {
    uint32_t i = 0;
    bool retry = false;
    if (key) {
      uint32_t hash = hash_key(key, h->key_size, h->secret);
      uint32_t s;
      if (HashElem* e = htab_find_stable(h, key, hash, &s)) {
        uintptr_t n = e->next.load(std::memory_order_acquire);
        if (!seq_still(e, s)) continue;  // e was recycled: its link is meaningless
        if (!is_nulls(n)) {
          if (copy_key_stable(h, reinterpret_cast<HashElem*>(n), next_key)) return 0;
          continue;
        }
        i = htab_bucket_index(h, hash) + 1;
      }
    }
    for (; i < h->n_buckets; i++) {
      uintptr_t p = htab_first(h, i);
      if (is_nulls(p)) continue;
      if (copy_key_stable(h, reinterpret_cast<HashElem*>(p), next_key)) return 0;
      retry = true;
      break;
    }
    if (!retry) return -ENOENT;
  }
}

uint32_t htab_map_host_value_size(const Map* map) {
  return map->attr.value_size;
}

}  // namespace

// ---- shared with hash_batch.cc ---------------------------------------------

HashElem* htab_lookup_locked(HashMap* h, uint32_t bucket, const void* key, uint32_t hash) {
  for (uintptr_t p = htab_first(h, bucket); !is_nulls(p);) {
    auto* e = reinterpret_cast<HashElem*>(p);
    if (e->hash.load(std::memory_order_relaxed) == hash &&
        equal_padded(elem_key(e), key, h->key_size))
      return e;
    p = e->next.load(std::memory_order_relaxed);
  }
  return nullptr;
}

void htab_unlink_locked(HashMap* h, uint32_t bucket, HashElem* e) {
  std::atomic<uintptr_t>* link = &h->buckets[bucket].head;
  for (;;) {
    uintptr_t p = link->load(std::memory_order_relaxed);
    if (p == reinterpret_cast<uintptr_t>(e)) break;
    USERBPF_ASSERT(!is_nulls(p));  // e must be on this chain
    link = &reinterpret_cast<HashElem*>(p)->next;
  }
  link->store(e->next.load(std::memory_order_relaxed), std::memory_order_release);
}

void htab_free_elem(HashMap* h, HashElem* e) {
  h->count.fetch_sub(1, std::memory_order_relaxed);
  h->pool.free(e);
}

extern const MapOps kHashMapOps = {
    .alloc_check = htab_map_alloc_check,
    .alloc = htab_map_alloc,
    .free = htab_map_free,
    .get_next_key = htab_map_get_next_key,
    .lookup_elem_copy = htab_map_lookup_elem_copy,
    .lookup_and_delete_elem = htab_map_lookup_and_delete_elem,
    .lookup_batch = htab_map_lookup_batch,
    .lookup_and_delete_batch = htab_map_lookup_and_delete_batch,
    .update_batch = generic_map_update_batch,
    .delete_batch = generic_map_delete_batch,
    .host_value_size = htab_map_host_value_size,
    .lookup_elem = htab_map_lookup_elem,
    .update_elem = htab_map_update_elem,
    .delete_elem = htab_map_delete_elem,
    .for_each_elem = htab_map_for_each_elem,
    .access_ok = htab_map_access_ok,
    .direct_value_addr = nullptr,
};

namespace testing {

void set_bucket_locked_hook(BucketLockedHook hook) {
  g_bucket_locked_hook.store(hook, std::memory_order_relaxed);
}

uint32_t elem_seq_of_value(const Map* map, const void* value) {
  const HashMap* h = to_htab(map);
  auto* e = reinterpret_cast<const HashElem*>(static_cast<const char*>(value) - h->value_offset);
  return e->seq.load(std::memory_order_acquire);
}

uint32_t bucket_of_key(const Map* map, const void* key) {
  const HashMap* h = to_htab(map);
  return htab_bucket_index(h, hash_key(key, h->key_size, h->secret));
}

uint32_t lock_group_of_key(const Map* map, const void* key) {
  return bucket_of_key(map, key) & to_htab(map)->lock_mask;
}

uint32_t n_buckets(const Map* map) {
  return to_htab(map)->n_buckets;
}

}  // namespace testing
}  // namespace userbpf::maps
