// BPF_MAP_TYPE_PERCPU_HASH and BPF_MAP_TYPE_LRU_PERCPU_HASH with the kernel's
// semantics (kernel/bpf/hashtab.c, htab_percpu_map_ops and
// htab_lru_percpu_map_ops): the hash map's table, locks, element storage and
// RCU-deferred reuse (hash_map_internal.h), with the N copies of each value
// inline in the element (the choice and its cost are written there) and the
// host view of percpu_maps.h; the LRU variant takes and gives back its
// elements through the map's LruList (lru_hash.cc).
//
// Updates of an existing key write its copies in place under the bucket
// lock, as the kernel's per-CPU hash does: no element is allocated or
// retired, so a program's pointer to its copy stays the key's copy. (The
// LRU variant still takes an element first unless the update is
// BPF_EXIST, evicting if the map is full, and gives it back: the kernel's
// __htab_lru_percpu_map_update_elem, which cannot know before locking
// whether the key exists; the update marks the key used.) A
// program update writes only its own CPU's copy; an insert from a program
// zeroes the other copies (the kernel's pcpu_init_value), an insert from the
// host writes every copy (BPF_F_CPU: that one, the others zero).
// Concurrency: programs write their own slot's copy through lookup pointers
// without locks while the host may rewrite every copy under the bucket lock;
// both move relaxed atomic 8-byte words, so no word is ever torn, and a
// program's read-modify-write of its copy races only with host writes to it.
// Contexts: lookup, lookup_percpu, update, delete, for_each: any context
// (-EBUSY on re-entry into a held lock group; LRU: -ENOMEM when nothing can
// be evicted); the rest host.
#include <cerrno>
#include <cstring>

#include "base/bits.h"
#include "maps/generic_batch.h"
#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "maps/special_fields.h"

namespace userbpf::maps {
namespace {

PercpuCopies elem_copies(const HashMap* h, HashElem* e) {
  return PercpuCopies{static_cast<unsigned char*>(elem_value(h, e)), h->pcpu_size, h->ncpus};
}

[[gnu::always_inline]] inline void* copy_of(const HashMap* h, HashElem* e, uint32_t cpu) {
  return static_cast<unsigned char*>(elem_value(h, e)) + uint64_t{h->pcpu_size} * cpu;
}

void zero_copy(const HashMap* h, void* copy) {
  auto* w = static_cast<uint64_t*>(copy);
  for (uint32_t i = 0; i < h->pcpu_size / 8; i++) __atomic_store_n(&w[i], 0, __ATOMIC_RELAXED);
}

// What an update writes: from a program (cpu >= 0) one value into that
// CPU's copy; from the host the value buffer as flags say (percpu_copy_in).
struct PcpuSource {
  const void* value;
  uint64_t flags;  // host: 0, kBpfFCpu | cpu << 32, or kBpfFAllCpus
  int32_t cpu;     // program: the caller's CPU slot; host: -1
};

// Writes src into e's copies; fresh: e is a new (or reused) element, whose
// copies src does not fill whole must read as zero, padding included.
void pcpu_write(HashMap* h, HashElem* e, const PcpuSource& src, bool fresh) {
  const bool whole = src.cpu < 0 && !(src.flags & (kBpfFCpu | kBpfFAllCpus));
  if (fresh && !whole)
    for (uint32_t c = 0; c < h->ncpus; c++) zero_copy(h, copy_of(h, e, c));
  if (src.cpu >= 0) {
    void* d = copy_of(h, e, static_cast<uint32_t>(src.cpu));
    if (!map_fields(h)) [[likely]] {
      copy_to_map(d, src.value, h->value_size);
      return;
    }
    copy_map_value_in(h, d, src.value, h->value_size);
    map_release_fields(h, d);
    return;
  }
  percpu_copy_in(h, elem_copies(h, e), src.value, src.flags);
}

// Inside a section holding slot. op: BPF_ANY, BPF_NOEXIST or BPF_EXIST.
long pcpu_htab_update(HashMap* h, const void* key, const PcpuSource& src, uint64_t op, int slot,
                      bool host) {
  uint32_t hash = htab_hash(h, key);
  uint32_t bucket = htab_bucket_index(h, hash);
  // LRU: the element (and any eviction for it) before the bucket lock.
  HashElem* lru_elem = nullptr;
  if (h->lru && op != kBpfExist) {
    lru_elem = htab_lru_pop_elem(h, slot);
    if (!lru_elem) return -ENOMEM;
  }
  long err = htab_lock_bucket(h, bucket);
  if (err) {
    if (lru_elem) htab_free_elem(h, slot, lru_elem);
    return err;
  }
  HashElem* old = htab_lookup_locked(h, bucket, key, hash);
  if (old && op == kBpfNoexist) {
    err = -EEXIST;
  } else if (!old && op == kBpfExist) {
    err = -ENOENT;
  } else if (old) {
    if (h->lru) LruList::set_ref(htab_lru_node(h, old));
    pcpu_write(h, old, src, false);  // in place, as the kernel's per-CPU hash
  } else if (!h->lru && h->count.fetch_add(1, std::memory_order_relaxed) >= h->attr.max_entries) {
    h->count.fetch_sub(1, std::memory_order_relaxed);
    err = -E2BIG;
  }
  HashElem* e = lru_elem;
  if (!err && !old && !e) {
    e = htab_alloc_elem(h, slot, host);
    if (!e) {
      h->count.fetch_sub(1, std::memory_order_relaxed);
      err = -ENOMEM;
    }
  }
  if (err || old) {
    htab_unlock_bucket(h, bucket);
    if (lru_elem) htab_free_elem(h, slot, lru_elem);  // gives its entry back
    return err;
  }
  // As htab_init_elem: seq odd while the element is written.
  uint32_t s = e->seq.load(std::memory_order_relaxed);
  e->seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  e->hash.store(hash, std::memory_order_relaxed);
  store_padded(elem_key(e), key, h->key_size);
  htab_zero_fields(h, elem_value(h, e));
  pcpu_write(h, e, src, true);
  e->seq.store(s + 2, std::memory_order_release);
  e->next.store(htab_first(h, bucket), std::memory_order_relaxed);
  h->buckets[bucket].head.store(reinterpret_cast<uintptr_t>(e), std::memory_order_release);
  htab_unlock_bucket(h, bucket);
  return 0;
}

// ---- host and program ------------------------------------------------------

[[gnu::noinline]] HashElem* pcpu_htab_find_generic(const HashMap* h, const void* key) {
  return htab_find<0>(h, key);
}

[[gnu::always_inline]] inline HashElem* pcpu_htab_find(const HashMap* h, const void* key) {
  if (h->key_size == 4) [[likely]]
    return htab_find<4>(h, key);
  if (h->key_size == 8) return htab_find<8>(h, key);
  return pcpu_htab_find_generic(h, key);
}

// The caller's CPU slot's copy (the kernel's this_cpu_ptr). The caller holds
// a slot of the map's domain (a program run), so the element and its copy
// stay valid until it returns.
void* pcpu_htab_lookup_elem(Map* map, const void* key) {
  const HashMap* h = to_htab(map);
  HashElem* e = pcpu_htab_find(h, key);
  if (!e) return nullptr;
  auto slot = static_cast<uint32_t>(h->dom->slots.held_slot());
  if (slot >= h->ncpus) [[unlikely]]
    slot = percpu_this_cpu_slow(static_cast<int>(slot), h->ncpus);
  return copy_of(h, e, slot);
}

void* pcpu_htab_lookup_percpu_elem(Map* map, const void* key, uint32_t cpu) {
  const HashMap* h = to_htab(map);
  if (cpu >= h->ncpus) return nullptr;
  HashElem* e = pcpu_htab_find(h, key);
  return e ? copy_of(h, e, cpu) : nullptr;
}

// LRU_PERCPU_HASH's program lookups (kernel htab_lru_percpu_map_lookup_elem
// and _lookup_percpu_elem): as above, and they mark the element used.
void* lru_pcpu_htab_lookup_elem(Map* map, const void* key) {
  const HashMap* h = to_htab(map);
  HashElem* e = pcpu_htab_find(h, key);
  if (!e) return nullptr;
  LruList::set_ref(htab_lru_node(h, e));
  auto slot = static_cast<uint32_t>(h->dom->slots.held_slot());
  if (slot >= h->ncpus) [[unlikely]]
    slot = percpu_this_cpu_slow(static_cast<int>(slot), h->ncpus);
  return copy_of(h, e, slot);
}

void* lru_pcpu_htab_lookup_percpu_elem(Map* map, const void* key, uint32_t cpu) {
  const HashMap* h = to_htab(map);
  if (cpu >= h->ncpus) return nullptr;
  HashElem* e = pcpu_htab_find(h, key);
  if (!e) return nullptr;
  LruList::set_ref(htab_lru_node(h, e));
  return copy_of(h, e, cpu);
}

// Program update (kernel htab_percpu_map_update_elem): one value for the
// caller's CPU slot's copy.
long pcpu_htab_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  HashMap* h = to_htab(map);
  if (flags > kBpfExist) return -EINVAL;  // BPF_F_LOCK too: no spin locks in per-CPU values
  return htab_update_in_section(h, [&](int slot, bool host) {
    const uint32_t n = h->ncpus, s = static_cast<uint32_t>(slot);
    const PcpuSource src{value, 0, static_cast<int32_t>(s < n ? s : s % n)};
    return pcpu_htab_update(h, key, src, flags, slot, host);
  });
}

// ---- host only -------------------------------------------------------------

int pcpu_htab_lookup_elem_copy(Map* map, const void* key, void* value, uint64_t flags) {
  if (int err = map_check_op_flags(map, flags, kBpfFLock | kBpfFCpu)) return err;
  HashMap* h = to_htab(map);
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;
  HashElem* e = htab_lookup_nulls(h, key, htab_hash(h, key));
  if (!e) return -ENOENT;
  percpu_copy_out(h, value, elem_copies(h, e), flags);
  return 0;
}

// Kernel bpf_percpu_hash_update, with BPF_F_CPU / BPF_F_ALL_CPUS.
long pcpu_htab_update_elem_copy(Map* map, const void* key, const void* value, uint64_t flags) {
  constexpr uint64_t kAllowed = kBpfNoexist | kBpfExist | kBpfFLock | kBpfFCpu | kBpfFAllCpus;
  if (int err = map_check_op_flags(map, flags, kAllowed)) return err;
  const uint64_t op = static_cast<uint32_t>(flags) & ~(kBpfFCpu | kBpfFAllCpus);
  if (op > kBpfExist) return -EINVAL;
  HashMap* h = to_htab(map);
  const PcpuSource src{value, flags & ~op, -1};
  return htab_update_in_section(
      h, [&](int slot, bool host) { return pcpu_htab_update(h, key, src, op, slot, host); });
}

int pcpu_htab_lookup_and_delete_elem(Map* map, const void* key, void* value, uint64_t flags) {
  return htab_lookup_and_delete(map, key, value, flags, [](HashMap* h, void* out, HashElem* e) {
    percpu_copy_out(h, out, elem_copies(h, e), 0);
  });
}

uint32_t pcpu_htab_host_value_size(const Map* map) {
  const HashMap* h = to_htab(map);
  return h->pcpu_size * h->ncpus;
}

}  // namespace

extern const MapOps kPercpuHashMapOps = {
    .alloc_check = htab_map_alloc_check,
    .alloc = htab_map_alloc,
    .free = htab_map_free,
    .get_next_key = htab_map_get_next_key,
    .lookup_elem_copy = pcpu_htab_lookup_elem_copy,
    .update_elem_copy = pcpu_htab_update_elem_copy,
    .lookup_and_delete_elem = pcpu_htab_lookup_and_delete_elem,
    .lookup_batch = htab_map_lookup_batch,
    .lookup_and_delete_batch = htab_map_lookup_and_delete_batch,
    .update_batch = generic_map_update_batch,
    .delete_batch = generic_map_delete_batch,
    .host_value_size = pcpu_htab_host_value_size,
    .lookup_elem = pcpu_htab_lookup_elem,
    .lookup_percpu_elem = pcpu_htab_lookup_percpu_elem,
    .update_elem = pcpu_htab_update_elem,
    .delete_elem = htab_map_delete_elem,
    .for_each_elem = htab_map_for_each_elem,
    .access_ok = htab_map_access_ok,
    .value_at = htab_map_value_at,
    .direct_value_addr = nullptr,
};

// LRU_PERCPU_HASH: PERCPU_HASH's ops with the program lookups that mark
// elements used; its updates and deletes go through the LRU because the map
// has one (HashMap::lru).
extern const MapOps kLruPercpuHashMapOps = {
    .alloc_check = htab_map_alloc_check,
    .alloc = htab_map_alloc,
    .free = htab_map_free,
    .get_next_key = htab_map_get_next_key,
    .lookup_elem_copy = pcpu_htab_lookup_elem_copy,
    .update_elem_copy = pcpu_htab_update_elem_copy,
    .lookup_and_delete_elem = pcpu_htab_lookup_and_delete_elem,
    .lookup_batch = htab_map_lookup_batch,
    .lookup_and_delete_batch = htab_map_lookup_and_delete_batch,
    .update_batch = generic_map_update_batch,
    .delete_batch = generic_map_delete_batch,
    .host_value_size = pcpu_htab_host_value_size,
    .lookup_elem = lru_pcpu_htab_lookup_elem,
    .lookup_percpu_elem = lru_pcpu_htab_lookup_percpu_elem,
    .update_elem = pcpu_htab_update_elem,
    .delete_elem = htab_map_delete_elem,
    .for_each_elem = htab_map_for_each_elem,
    .access_ok = htab_map_access_ok,
    .value_at = htab_map_value_at,
    .direct_value_addr = nullptr,
};

}  // namespace userbpf::maps
