// BPF_MAP_TYPE_HASH: creation, lock-free lookup, bucket-locked update and
// delete, iteration (kernel/bpf/hashtab.c behaviour; design and invariants
// in hash_map_internal.h), and what the per-CPU and LRU hash types share.
#include "maps/hash_map.h"

#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <new>

#include "base/assert.h"
#include "base/bits.h"
#include "maps/generic_batch.h"
#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "maps/special_fields.h"

namespace userbpf::maps {

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
// Room for elements waiting for a grace period: max(max_entries, this).
constexpr uint64_t kMinDeferred = 16384;
std::atomic<testing::BucketLockedHook> g_bucket_locked_hook{nullptr};
// htab_update's answer to a BPF_F_LOCK update that found the key under the
// bucket lock: not an errno (> 0), never returned to callers.
constexpr long kRetryInPlace = 1;

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

// ---- element memory ----------------------------------------------------------

// Host refill of a no-prealloc map's cache: out of line, so the program
// paths need no frame for it.
[[gnu::noinline]] HashElem* htab_ma_alloc_host(HashMap* h, int slot) {
  KeepErrno keep_errno;
  return static_cast<HashElem*>(h->ma->alloc_host(slot, 0));
}

}  // namespace

// Program context (host == false) never refills inline: an empty cache is
// ENOMEM, as bpf_mem_alloc's NULL is in the kernel.
HashElem* htab_alloc_elem(HashMap* h, int slot, bool host) {
  if (h->ma) {
    if (!host) return static_cast<HashElem*>(h->ma->alloc(slot, 0));
    return htab_ma_alloc_host(h, slot);
  }
  return static_cast<HashElem*>(h->pool.alloc(slot));
}

namespace {

void htab_free_elem_rcu(HashMap* h, int slot, HashElem* e) {
  if (h->ma)
    h->ma->free_rcu(slot, e);
  else
    h->pool.free_rcu(slot, e);
}

}  // namespace

bool htab_reclaim_host(HashMap* h) {
  if (h->ma) {
    h->ma->flush();
    bool waited = h->ma->stats().rcu_waiting != 0;
    (void)h->dom->rcu.synchronize_rcu(mem::RcuFlavor::kBoth);
    h->ma->flush();
    return waited;
  }
  bool waited = h->pool.waiting() != 0;
  h->pool.reclaim_host();
  return waited;
}

void htab_zero_fields(HashMap* h, void* value) {
  const FieldTable* ft = map_fields(h);
  if (!ft) return;
  for (uint32_t c = 0; c < h->ncpus; c++) {
    auto* v = static_cast<unsigned char*>(value) + uint64_t{h->pcpu_size} * c;
    for (const SpecialField& f : ft->fields)
      for (uint32_t i = 0; i < f.size; i++) __atomic_store_n(v + f.offset + i, 0, __ATOMIC_RELAXED);
  }
}

void htab_release_value(HashMap* h, HashElem* e) {
  if (!map_fields(h)) return;
  auto* v = static_cast<unsigned char*>(elem_value(h, e));
  for (uint32_t c = 0; c < h->ncpus; c++) map_release_fields(h, v + uint64_t{h->pcpu_size} * c);
}

void htab_init_elem(HashMap* h, HashElem* e, const void* key, const void* value, uint32_t hash) {
  if (h->key_size == 4) return htab_init_elem_sized<4>(h, e, key, value, hash);
  if (h->key_size == 8) return htab_init_elem_sized<8>(h, e, key, value, hash);
  htab_init_elem_sized<0>(h, e, key, value, hash);
}

// ---- attribute checks and creation (host) --------------------------------

namespace {

// Kernel htab_map_alloc: the table must stay a u32-indexable power of two.
int htab_check_max_entries(uint32_t max_entries) {
  if (max_entries > (1u << 31)) return reject_attr(E2BIG, "max_entries above 2^31");
  if (roundup_pow_of_two(max_entries) > UINT32_MAX / sizeof(HashBucket))
    return reject_attr(E2BIG, "max_entries too large for the bucket table");
  return 0;
}

}  // namespace

// In the kernel's order (htab_map_alloc_check), for all four hash types.
int htab_map_alloc_check(const MapAttr& attr) {
  const bool lru = htab_type_is_lru(attr.type);
  const bool percpu = map_type_is_percpu(attr.type);
  const bool percpu_lru = attr.map_flags & kBpfFNoCommonLru;
  if (attr.map_flags & ~kHtabCreateFlagMask)
    return reject_attr(EINVAL, "map_flags has bits a hash map does not accept");
  if ((attr.map_flags & kBpfFRdonlyProg) && (attr.map_flags & kBpfFWronlyProg))
    return reject_attr(EINVAL, "map_flags has both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG");
  if (percpu_lru && !lru)
    return reject_attr(EINVAL, "BPF_F_NO_COMMON_LRU is only for LRU hash maps");
  if (lru && (attr.map_flags & kBpfFNoPrealloc))
    return reject_attr(kEnotsupp, "LRU hash maps are always preallocated (BPF_F_NO_PREALLOC)");
  if ((attr.map_flags & kBpfFNumaNode) && (percpu || percpu_lru))
    return reject_attr(EINVAL, "BPF_F_NUMA_NODE is not for per-CPU values or per-CPU LRU lists");
  if (attr.max_entries == 0) return reject_attr(EINVAL, "max_entries must be > 0");
  if (attr.key_size == 0) return reject_attr(EINVAL, "key_size must be > 0");
  if (attr.value_size == 0) return reject_attr(EINVAL, "value_size must be > 0");
  if (static_cast<uint64_t>(attr.key_size) + attr.value_size >=
      kKmallocMaxSize - kKernelHtabElemSize)
    return reject_attr(E2BIG, "key_size + value_size too large (kernel limit ~4 MiB)");
  if (percpu && round_up(uint64_t{attr.value_size}, 8) > kPcpuMinUnitSize)
    return reject_attr(E2BIG, "per-CPU value_size above 32 KiB (PCPU_MIN_UNIT_SIZE)");
  return htab_check_max_entries(attr.max_entries);
}

void htab_map_free(Map* map) {
  HashMap* h = to_htab(map);
  if (h->buckets && map_fields(h)) {
    // Live elements release what their special fields hold; deleted ones
    // did when they were unlinked.
    for (uint32_t i = 0; i < h->n_buckets; i++)
      for (uintptr_t p = htab_first(h, i); !is_nulls(p);) {
        auto* e = reinterpret_cast<HashElem*>(p);
        p = e->next.load(std::memory_order_relaxed);
        htab_release_value(h, e);
      }
  }
  if (h->buckets) munmap(h->buckets, h->buckets_bytes);
  delete h;  // the allocator waits for a grace period before its slabs go
}

namespace {

// Elements the storage must hold at most: live, in-flight replacements,
// waiting for a grace period (hash_map_internal.h).
uint64_t htab_elem_capacity(const MapAttr& attr) {
  uint64_t n = attr.max_entries;
  return std::min<uint64_t>(n + possible_cpus() + kInflightSlack + std::max(n, kMinDeferred),
                            0xfffffffeull);
}

uint64_t fastdiv_magic(uint32_t d) {
  return ~0ull / d + 1;
}

bool htab_charge_cb(void* owner, uint64_t bytes) {
  auto* h = static_cast<HashMap*>(owner);
  return map_charge_limited(h, bytes, h->mem_limit);
}
void htab_uncharge_cb(void* owner, uint64_t bytes) {
  map_uncharge(static_cast<HashMap*>(owner), bytes);
}

// BPF_F_NO_PREALLOC with elements that fit a page-pool block: a MemAlloc of
// the map's domain over a page pool of the map's own (one chunk).
Status htab_init_mem_alloc(HashMap* h) {
  mem::MemDomain* d = h->dom;
  const uint64_t unit = mem::kObjHeader + h->elem_size;
  // Live + waiting elements, plus what the slot caches may hold (high
  // watermark and a refill batch each), plus slab tails (< 1/16 of a slab).
  uint64_t elems = htab_elem_capacity(h->attr) + uint64_t{d->slots.total_slots()} * (96 + 48 + 4);
  uint64_t need = elems * unit + elems * unit / 8 + (mem::PagePool::kPageSize << 9);
  uint64_t chunk = std::max<uint64_t>(roundup_pow_of_two(need), 2u << 20);
  if (!map_charge(
          h, sizeof(mem::PagePool) + sizeof(mem::MemAlloc) + uint64_t{d->slots.total_slots()} * 64))
    return make_error(ENOMEM, "memory_limit %llu is below the map's allocator bookkeeping",
                      static_cast<unsigned long long>(h->attr.memory_limit));
  mem::PagePoolOptions po;
  po.chunk_bytes = chunk;
  po.max_bytes = chunk;  // exactly one chunk: access_ok is one range check
  po.noreserve = true;   // charged per slab, not per chunk
  h->pages = std::make_unique<mem::PagePool>(po);
  h->ma = std::make_unique<mem::MemAlloc>(d->slots, d->rcu, d->worker, *h->pages);
  mem::MemAllocOptions mo;
  mo.size = h->elem_size;
  mo.rcu_flavor = mem::RcuFlavor::kBoth;  // sleepable programs may hold pointers too
  mo.charge = mem::MemCharge{static_cast<void*>(h), htab_charge_cb, htab_uncharge_cb};
  Status st = h->ma->init(mo);
  if (!st.ok())
    return make_error(st.error().code, "map %s: element allocator: %s (memory_limit %llu)",
                      h->attr.name.c_str(), st.error().message.c_str(),
                      static_cast<unsigned long long>(h->attr.memory_limit));
  // The chunk is aligned to its size: any element tells where it starts.
  void* probe = nullptr;
  {
    mem::SlotGuard g(d->slots);  // creation is host work: a slot of our own
    int slot = g.ok() ? g.slot() : d->slots.held_slot();
    if (slot >= 0) {
      probe = h->ma->alloc_host(slot, 0);
      if (probe) h->ma->free(slot, probe);
    }
  }
  if (!probe)
    return make_error(ENOMEM, "map %s: no first element (memory_limit %llu)", h->attr.name.c_str(),
                      static_cast<unsigned long long>(h->attr.memory_limit));
  HashGeometry& g = h->geo;
  g.base = reinterpret_cast<uintptr_t>(probe) & ~(chunk - 1);
  g.bytes = chunk;
  g.slab_mask = h->ma->slab_bytes() - 1;
  g.unit = h->ma->unit_bytes();
  g.hdr = static_cast<uint32_t>(mem::kObjHeader);
  g.objs = h->ma->objs_per_slab();
  g.magic = fastdiv_magic(g.unit);
  g.div_fast = true;  // offsets inside a slab are < 2 MiB
  USERBPF_ASSERT(g.unit == unit &&
                 ((reinterpret_cast<uintptr_t>(probe) - g.base) & g.slab_mask) % g.unit == g.hdr);
  return Status::Ok();
}

}  // namespace

Result<Map*> htab_map_alloc(const MapAttr& attr) {
  auto* h = new (std::nothrow) HashMap();
  if (!h) return make_error(ENOMEM, "out of memory for the map header");
  h->attr = attr;
  h->mem_limit = attr.memory_limit;
  h->dom = attr.domain ? attr.domain : &mem::default_mem_domain();
  if (!map_charge(h, sizeof(HashMap))) {
    delete h;
    return make_error(ENOMEM, "memory_limit %llu is below the map header size",
                      static_cast<unsigned long long>(attr.memory_limit));
  }
  const bool lru = htab_type_is_lru(attr.type);
  if (lru && (attr.map_flags & kBpfFNoCommonLru)) {
    // Kernel htab_map_alloc: every CPU's list gets the same share, at least
    // one entry. The map reports the rounded max_entries.
    const uint64_t n = h->dom->slots.num_slots();
    const uint64_t rounded = (uint64_t{attr.max_entries} + n - 1) / n * n;
    if (rounded > UINT32_MAX || htab_check_max_entries(static_cast<uint32_t>(rounded))) {
      htab_map_free(h);
      return make_error(E2BIG, "max_entries %u rounded up to a multiple of %llu CPUs is too large",
                        attr.max_entries, static_cast<unsigned long long>(n));
    }
    h->attr.max_entries = static_cast<uint32_t>(rounded);
  }
  h->n_buckets = static_cast<uint32_t>(roundup_pow_of_two(h->attr.max_entries));
  h->lock_mask = h->n_buckets - 1 < 7 ? h->n_buckets - 1 : 7;
  h->key_size = attr.key_size;
  h->value_size = attr.value_size;
  h->value_offset = kHashKeyOffset + static_cast<uint32_t>(round_up(attr.key_size, 8));
  h->pcpu_size = static_cast<uint32_t>(round_up(attr.value_size, 8));
  h->pcpu_magic = fastdiv_magic(h->pcpu_size);
  h->percpu = map_type_is_percpu(attr.type);
  h->ncpus = h->percpu ? h->dom->slots.num_slots() : 1;
  const uint64_t values_end = h->value_offset + uint64_t{h->pcpu_size} * h->ncpus;
  const uint64_t elem_bytes = values_end + (lru ? sizeof(LruNode) : 0);
  if (elem_bytes > INT32_MAX) {
    const uint32_t ncpus = h->ncpus;
    htab_map_free(h);
    return make_error(E2BIG, "elements of %llu bytes (%u copies of the value) are too large",
                      static_cast<unsigned long long>(elem_bytes), ncpus);
  }
  h->elem_size = static_cast<uint32_t>(elem_bytes);
  if (lru) h->lru_offset = static_cast<uint32_t>(values_end);
  h->prealloc = !(attr.map_flags & kBpfFNoPrealloc);
  h->prog_rdonly = attr.map_flags & kBpfFRdonlyProg;
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

  constexpr uint64_t kMaxBlock = mem::PagePool::kPageSize << mem::PagePool::kMaxOrder;
  if (!h->prealloc && mem::kObjHeader + h->elem_size <= kMaxBlock) {
    Status st = htab_init_mem_alloc(h);
    if (!st.ok()) {
      htab_map_free(h);
      return st.take_error();
    }
    return static_cast<Map*>(h);
  }
  // Preallocated, or no-prealloc elements above the allocator's largest
  // unit: an ElemPool (committed on demand for the latter).
  uint64_t capacity = htab_elem_capacity(h->attr);
  uint64_t initial = h->prealloc ? h->attr.max_entries + possible_cpus() : 0;
  Status st = h->pool.init(h, h->elem_size, offsetof(HashElem, pool_link), capacity, initial);
  if (!st.ok()) {
    htab_map_free(h);
    return st.take_error();
  }
  h->pool.set_rcu(&h->dom->rcu, mem::RcuFlavor::kBoth);
  HashGeometry& g = h->geo;
  g.base = h->pool.base();
  g.unit = h->elem_size;
  g.magic = fastdiv_magic(g.unit);
  g.div_fast = h->pool.reserved_bytes() <= 0xffffffffull;
  if (lru) {
    st = htab_lru_init(h);
    if (!st.ok()) {
      htab_map_free(h);
      return st.take_error();
    }
  }
  return static_cast<Map*>(h);
}

namespace {

// ---- element operations (host and program) -------------------------------

// Program fast path: the caller holds a slot of the map's domain (its run),
// so the pointer stays valid until it returns.
// u32 and u64 keys (most maps) get their own copy of the search, with the
// key loads and compares folded to one word.
// Out of line, so the 4/8-byte paths need no callee-saved registers.
[[gnu::noinline]] void* htab_lookup_value_generic(const HashMap* h, const void* key) {
  HashElem* e = htab_find<0>(h, key);
  return e ? elem_value(h, e) : nullptr;
}

void* htab_map_lookup_elem(Map* map, const void* key) {
  const HashMap* h = to_htab(map);
  HashElem* e;
  if (h->key_size == 4) [[likely]]
    e = htab_find<4>(h, key);
  else if (h->key_size == 8)
    e = htab_find<8>(h, key);
  else
    return htab_lookup_value_generic(h, key);
  return e ? elem_value(h, e) : nullptr;
}

// Inside a section holding slot; host: refill allocator caches inline.
// kSize: the key size when known at compile time (4, 8; one copy each, with
// the search and the key store folded to a word), else 0.
template <uint32_t kSize>
long htab_update_sized(HashMap* h, const void* key, const void* value, uint64_t flags, int slot,
                       bool host) {
  const uint32_t hash = hash_key(key, kSize ? kSize : h->key_size, h->secret);
  const uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  if (auto hook = g_bucket_locked_hook.load(std::memory_order_relaxed)) [[unlikely]]
    hook(h);

  HashElem* old = htab_lookup_locked_sized<kSize>(h, bucket, key, hash);
  uint64_t op = flags & ~kBpfFLock;
  long err = 0;
  if (old && op == kBpfNoexist) {
    err = -EEXIST;
  } else if (!old && op == kBpfExist) {
    err = -ENOENT;
  } else if (old && (flags & kBpfFLock)) {
    err = kRetryInPlace;  // appeared since htab_update_lock_flag's search
  } else if (!old && h->count.fetch_add(1, std::memory_order_relaxed) >= h->attr.max_entries) {
    h->count.fetch_sub(1, std::memory_order_relaxed);
    err = -E2BIG;
  }
  HashElem* e = nullptr;
  if (!err) {
    e = htab_alloc_elem(h, slot, host);
    if (!e) {
      if (!old) h->count.fetch_sub(1, std::memory_order_relaxed);
      err = -ENOMEM;
    }
  }
  if (err) {
    htab_unlock_bucket(h, bucket);
    return err;
  }
  htab_init_elem_sized<kSize>(h, e, key, value, hash);
  // New element first, so concurrent lookups find it before the old one.
  const uintptr_t first = htab_first(h, bucket);
  e->next.store(first, std::memory_order_relaxed);
  h->buckets[bucket].head.store(reinterpret_cast<uintptr_t>(e), std::memory_order_release);
  if (old) {
    // Mostly old led the chain and follows e now: no walk.
    if (first == reinterpret_cast<uintptr_t>(old))
      e->next.store(old->next.load(std::memory_order_relaxed), std::memory_order_release);
    else
      htab_unlink_locked(h, bucket, old);
  }
  htab_unlock_bucket(h, bucket);
  if (old) {  // replaced: the count is unchanged
    htab_release_value(h, old);
    htab_free_elem_rcu(h, slot, old);
  }
  return 0;
}

long htab_update(HashMap* h, const void* key, const void* value, uint64_t flags, int slot,
                 bool host) {
  if (h->key_size == 4) [[likely]]
    return htab_update_sized<4>(h, key, value, flags, slot, host);
  if (h->key_size == 8) return htab_update_sized<8>(h, key, value, flags, slot, host);
  return htab_update_sized<0>(h, key, value, flags, slot, host);
}

// BPF_F_LOCK (the kernel's l_old path): an existing key's value is
// overwritten in place under its bpf_spin_lock, found without the bucket
// lock; a new key is inserted as usual. A key that appears between the
// search and the bucket lock sends the update back to the search
// (kRetryInPlace), so no bucket lock is held while waiting for a spin lock.
long htab_update_lock_flag(HashMap* h, const void* key, const void* value, uint64_t flags, int slot,
                           bool host) {
  for (;;) {
    if (HashElem* e = htab_lookup_nulls(h, key, htab_hash(h, key))) {
      if ((flags & ~kBpfFLock) == kBpfNoexist) return -EEXIST;
      return copy_map_value_locked(h, elem_value(h, e), value, false);
    }
    long rc = htab_update(h, key, value, flags, slot, host);
    if (rc != kRetryInPlace) return rc;
  }
}

long htab_map_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  HashMap* h = to_htab(map);
  if ((flags & ~kBpfFLock) > kBpfExist) return -EINVAL;
  if (flags & kBpfFLock) [[unlikely]] {
    if (int err = map_check_lock_flag(map, flags)) return err;
    return htab_update_in_section(h, [&](int slot, bool host) {
      return htab_update_lock_flag(h, key, value, flags, slot, host);
    });
  }
  return htab_update_in_section(
      h, [&](int slot, bool host) { return htab_update(h, key, value, flags, slot, host); });
}

}  // namespace

long htab_map_delete_elem(Map* map, const void* key) {
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  uint32_t hash = htab_hash(h, key);
  uint32_t bucket = htab_bucket_index(h, hash);
  if (int err = htab_lock_bucket(h, bucket)) return err;
  HashElem* e = htab_lookup_locked(h, bucket, key, hash);
  if (e) htab_unlink_locked(h, bucket, e);
  htab_unlock_bucket(h, bucket);
  if (!e) return -ENOENT;
  htab_free_elem(h, sec.slot(), e);
  return 0;
}

long htab_map_for_each_elem(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags) {
  if (flags != 0) return -EINVAL;
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  // Per-CPU maps: the copy of the caller's CPU slot (the kernel's this_cpu_ptr).
  uint64_t copy_off = 0;
  if (h->percpu) {
    const uint32_t n = h->ncpus;
    const uint32_t s = static_cast<uint32_t>(sec.slot());
    copy_off = uint64_t{h->pcpu_size} * (s < n ? s : s % n);
  }
  long num_elems = 0;
  for (uint32_t i = 0; i < h->n_buckets; i++) {
    // Read next before the callback, which may delete the element.
    for (uintptr_t p = htab_first(h, i); !is_nulls(p);) {
      auto* e = reinterpret_cast<HashElem*>(p);
      p = e->next.load(std::memory_order_acquire);
      num_elems++;
      if (cb(cb_ctx, map, elem_key(e), static_cast<char*>(elem_value(h, e)) + copy_off))
        return num_elems;
    }
  }
  return num_elems;
}

// Where [addr, addr + size) starts in an element slot of this map: its
// offset from the slot's element start, or false outside every slot
// (between slots, in a header, past the committed memory). Elements may be
// free or waiting: their memory stays mapped and owned by the map, so a
// stale access harms nobody else.
bool htab_locate(const HashMap* h, uintptr_t addr, size_t size, uint64_t* in_elem) {
  const HashGeometry& g = h->geo;
  uint64_t off = addr - g.base;
  uint64_t bound = h->ma ? g.bytes : h->pool.committed_bytes();
  if (off >= bound || size > bound - off) [[unlikely]]
    return false;
  uint64_t in_slab = off & g.slab_mask;
  uint64_t idx =
      g.div_fast ? static_cast<uint64_t>((static_cast<unsigned __int128>(g.magic) * in_slab) >> 64)
                 : in_slab / g.unit;
  if (idx >= g.objs) [[unlikely]]
    return false;
  uint64_t in_unit = in_slab - idx * g.unit;
  if (in_unit < g.hdr) [[unlikely]]
    return false;
  *in_elem = in_unit - g.hdr;
  return true;
}

// An offset from the value start made relative to its copy (per-CPU: ncpus
// copies of pcpu_size bytes, in_value < 2^32); UINT64_MAX past the copies
// (an LRU map's node).
uint64_t htab_in_copy(const HashMap* h, uint64_t in_value) {
  if (!h->percpu) return in_value;
  uint64_t c =
      static_cast<uint64_t>((static_cast<unsigned __int128>(h->pcpu_magic) * in_value) >> 64);
  if (c >= h->ncpus) return UINT64_MAX;
  return in_value - c * h->pcpu_size;
}

// Whether [addr, addr + size) lies in the key (read-only) or value of an
// element slot of this map (htab_locate).
bool htab_map_access_ok(const Map* map, uintptr_t addr, size_t size, bool write) {
  const HashMap* h = to_htab(map);
  uint64_t in_elem;
  if (!htab_locate(h, addr, size, &in_elem)) [[unlikely]]
    return false;
  if (write && h->prog_rdonly) return false;
  if (in_elem >= h->value_offset) {
    const uint64_t in_copy = htab_in_copy(h, in_elem - h->value_offset);
    return in_copy < h->value_size && size <= h->value_size - in_copy;
  }
  // Keys (for_each callbacks get a pointer to them) are read-only.
  return !write && in_elem >= kHashKeyOffset && in_elem - kHashKeyOffset + size <= h->key_size;
}

// The start of the value (per-CPU: of the copy) holding addr, or 0.
uintptr_t htab_map_value_at(const Map* map, uintptr_t addr) {
  const HashMap* h = to_htab(map);
  uint64_t in_elem;
  if (!htab_locate(h, addr, 1, &in_elem) || in_elem < h->value_offset) return 0;
  const uint64_t in_copy = htab_in_copy(h, in_elem - h->value_offset);
  return in_copy < h->value_size ? addr - in_copy : 0;
}

namespace {

// ---- host only -------------------------------------------------------------

int htab_map_lookup_elem_copy(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if (int err = map_check_lock_flag(map, flags)) return err;
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  HashElem* e = htab_lookup_nulls(h, key, htab_hash(h, key));
  if (!e) return -ENOENT;
  if (flags & kBpfFLock) return copy_map_value_locked(h, value, elem_value(h, e), true);
  copy_map_value_out(h, value, elem_value(h, e), h->value_size);
  return 0;
}

// BPF_F_LOCK: copied under the value's lock while holding the bucket lock,
// as the kernel does (map_check_lock_flag let only a thread holding no spin
// lock get here).
int htab_map_lookup_and_delete_elem(Map* map, const void* key, void* value, uint64_t flags) {
  return htab_lookup_and_delete(map, key, value, flags,
                                [flags](HashMap* h, void* out, HashElem* e) {
                                  if (flags & kBpfFLock)
                                    copy_map_value_locked(h, out, elem_value(h, e), true);
                                  else
                                    copy_map_value_out(h, out, elem_value(h, e), h->value_size);
                                });
}

}  // namespace

// Order: the rest of the key's chain, then the following non-empty buckets.
// A NULL or missing key starts at the first non-empty bucket. Inside the
// section, an element found (even if deleted meanwhile) keeps its key and
// its link into its bucket's chain.
int htab_map_get_next_key(Map* map, const void* key, void* next_key) {
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  uint32_t i = 0;
  if (key) {
    uint32_t hash = htab_hash(h, key);
    if (HashElem* e = htab_lookup_nulls(h, key, hash)) {
      uintptr_t n = e->next.load(std::memory_order_acquire);
      if (!is_nulls(n)) {
        copy_from_map(next_key, elem_key(reinterpret_cast<HashElem*>(n)), h->key_size);
        return 0;
      }
      i = htab_bucket_index(h, hash) + 1;
    }
  }
  for (; i < h->n_buckets; i++) {
    uintptr_t p = htab_first(h, i);
    if (is_nulls(p)) continue;
    copy_from_map(next_key, elem_key(reinterpret_cast<HashElem*>(p)), h->key_size);
    return 0;
  }
  return -ENOENT;
}

namespace {

uint32_t htab_map_host_value_size(const Map* map) {
  return map->attr.value_size;
}

}  // namespace

// ---- shared with hash_batch.cc ---------------------------------------------

HashElem* htab_lookup_locked(HashMap* h, uint32_t bucket, const void* key, uint32_t hash) {
  if (h->key_size == 4) return htab_lookup_locked_sized<4>(h, bucket, key, hash);
  if (h->key_size == 8) return htab_lookup_locked_sized<8>(h, bucket, key, hash);
  return htab_lookup_locked_sized<0>(h, bucket, key, hash);
}

void htab_unlink_locked(HashMap* h, uint32_t bucket, HashElem* e) {
  const bool linked = htab_unlink_if_linked(h, bucket, e);
  USERBPF_ASSERT(linked);  // e must be on this chain
}

void htab_free_elem(HashMap* h, int slot, HashElem* e) {
  htab_release_value(h, e);
  if (h->lru) [[unlikely]] {  // the LRU frees the element (its free_node)
    h->lru->push_free(htab_lru_node(h, e));
    return;
  }
  h->count.fetch_sub(1, std::memory_order_relaxed);
  htab_free_elem_rcu(h, slot, e);
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
    .value_at = htab_map_value_at,
    .direct_value_addr = nullptr,
};

// LRU_HASH: HASH's ops but for the program lookup, which marks the element
// used, and the update, which takes its element from the LRU (lru_hash.cc).
extern const MapOps kLruHashMapOps = {
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
    .lookup_elem = lru_htab_map_lookup_elem,
    .update_elem = lru_htab_map_update_elem,
    .delete_elem = htab_map_delete_elem,
    .for_each_elem = htab_map_for_each_elem,
    .access_ok = htab_map_access_ok,
    .value_at = htab_map_value_at,
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
  return htab_bucket_index(h, htab_hash(h, key));
}

uint32_t lock_group_of_key(const Map* map, const void* key) {
  return bucket_of_key(map, key) & to_htab(map)->lock_mask;
}

uint32_t n_buckets(const Map* map) {
  return to_htab(map)->n_buckets;
}

uint64_t lru_reused_at_once(const Map* map) {
  return to_htab(map)->lru_reused.load(std::memory_order_seq_cst);
}

}  // namespace testing
}  // namespace userbpf::maps
