// BPF_MAP_TYPE_ARRAY with the kernel's semantics (kernel/bpf/arraymap.c).
//
// Layout: one zero-initialized, page-aligned block of max_entries elements of
// elem_size = round_up(value_size, 8) bytes; element i is the value of key i.
// Elements always exist: update copies into place, delete is EINVAL.
// Special fields (special_fields.h): copies skip them; an update releases
// what the overwritten value's fields held; so does the map's release.
// BPF_F_LOCK (host lookup/update, program update): the copy is made under
// the value's bpf_spin_lock (spin_lock.h).
//
// Invariants: the block is mapped for the map's whole life and never moves,
// so value pointers handed to programs (and direct_value_addr) stay valid.
// Concurrency: no locks. Updates copy in 8-byte words with relaxed atomics
// (the kernel uses a plain memcpy): readers may see a mix of old and new
// words of a value being rewritten, never a torn word.
// Contexts: lookup/update/for_each/access_ok from any context; the rest host.
#include "maps/array_map.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

#include "base/bits.h"
#include "maps/generic_batch.h"
#include "maps/map_internal.h"
#include "maps/special_fields.h"

namespace userbpf::maps {
namespace {

// Kernel ARRAY_CREATE_FLAG_MASK; BPF_F_PRESERVE_ELEMS is accepted there only
// for perf event arrays.
constexpr uint32_t kBpfFPreserveElems = 1u << 11;
constexpr uint32_t kArrayCreateFlagMask = kBpfFNumaNode | kBpfFMmapable | kBpfFRdonly |
                                          kBpfFWronly | kBpfFRdonlyProg | kBpfFWronlyProg |
                                          kBpfFInnerMap | kBpfFPreserveElems;

struct ArrayMap : Map {
  unsigned char* values = nullptr;
  uint64_t block_bytes = 0;  // mapped bytes (page multiple)
  uint64_t used_bytes = 0;   // max_entries * elem_size
  uint32_t elem_size = 0;
};

ArrayMap* to_array(Map* m) {
  return static_cast<ArrayMap*>(m);
}
const ArrayMap* to_array(const Map* m) {
  return static_cast<const ArrayMap*>(m);
}

uint32_t read_index(const void* key) {
  uint32_t index;
  std::memcpy(&index, key, sizeof(index));
  return index;
}

void* array_elem(const ArrayMap* a, uint32_t index) {
  return a->values + static_cast<uint64_t>(a->elem_size) * index;
}

int array_map_alloc_check(const MapAttr& attr) {
  if (attr.max_entries == 0) return reject_attr(EINVAL, "max_entries must be > 0");
  if (attr.key_size != 4) return reject_attr(EINVAL, "key_size must be 4");
  if (attr.value_size == 0) return reject_attr(EINVAL, "value_size must be > 0");
  if (attr.map_flags & ~kArrayCreateFlagMask)
    return reject_attr(EINVAL, "map_flags has bits an array does not accept");
  if ((attr.map_flags & kBpfFRdonlyProg) && (attr.map_flags & kBpfFWronlyProg))
    return reject_attr(EINVAL, "map_flags has both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG");
  if (attr.map_flags & kBpfFPreserveElems)
    return reject_attr(EINVAL, "BPF_F_PRESERVE_ELEMS is only for perf event arrays");
  if (attr.value_size > INT_MAX) return reject_attr(E2BIG, "value_size above INT_MAX");
  return 0;
}

void array_map_free(Map* map) {
  ArrayMap* a = to_array(map);
  if (a->values && map_fields(map)) {
    // What the values' special fields hold (kptr objects) goes with the map.
    for (uint32_t i = 0; i < a->attr.max_entries; i++) map_release_fields(map, array_elem(a, i));
  }
  if (a->values) munmap(a->values, a->block_bytes);
  delete a;
}

Result<Map*> array_map_alloc(const MapAttr& attr) {
  auto* a = new (std::nothrow) ArrayMap();
  if (!a) return make_error(ENOMEM, "out of memory for the map header");
  a->attr = attr;
  a->elem_size = static_cast<uint32_t>(round_up(attr.value_size, 8));
  a->used_bytes = static_cast<uint64_t>(a->elem_size) * attr.max_entries;
  uint64_t bytes = round_up(a->used_bytes, static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  a->block_bytes = bytes;
  if (!map_charge(a, sizeof(ArrayMap) + bytes)) {
    delete a;
    return make_error(ENOMEM, "%llu bytes of values exceed memory_limit %llu",
                      static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(attr.memory_limit));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    delete a;
    return make_error(ENOMEM, "cannot map %llu bytes of values",
                      static_cast<unsigned long long>(bytes));
  }
  a->values = static_cast<unsigned char*>(p);
  return static_cast<Map*>(a);
}

// ---- host and program ------------------------------------------------------

void* array_map_lookup_elem(Map* map, const void* key) {
  ArrayMap* a = to_array(map);
  uint32_t index = read_index(key);
  if (index >= a->attr.max_entries) return nullptr;
  return array_elem(a, index);
}

long array_map_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  ArrayMap* a = to_array(map);
  uint32_t index = read_index(key);
  if ((flags & ~kBpfFLock) > kBpfExist) return -EINVAL;
  if (index >= a->attr.max_entries) return -E2BIG;  // all elements exist already
  if (flags & kBpfNoexist) return -EEXIST;
  if (int err = map_check_lock_flag(map, flags)) return err;
  void* elem = array_elem(a, index);
  // Special fields keep their place; the value is overwritten, so what they
  // held is released (the kernel's copy_map_value[_locked] +
  // bpf_obj_free_fields, which releases kptrs even under BPF_F_LOCK).
  if (flags & kBpfFLock)
    copy_map_value_locked(map, elem, value, false);
  else
    copy_map_value_in(map, elem, value, a->attr.value_size);
  map_release_fields(map, elem);
  return 0;
}

long array_map_delete_elem(Map* map, const void* key) {
  return -EINVAL;
}

long array_map_for_each_elem(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags) {
  if (flags != 0) return -EINVAL;
  ArrayMap* a = to_array(map);
  long num_elems = 0;
  for (uint32_t i = 0; i < a->attr.max_entries; i++) {
    uint32_t key = i;  // the callback gets a pointer to a copy, as in the kernel
    num_elems++;
    if (cb(cb_ctx, map, &key, array_elem(a, i))) break;
  }
  return num_elems;
}

bool array_map_access_ok(const Map* map, uintptr_t addr, size_t size, bool write) {
  const ArrayMap* a = to_array(map);
  uint64_t off = addr - reinterpret_cast<uintptr_t>(a->values);
  if (off >= a->used_bytes || size > a->used_bytes - off) return false;
  if (write && (map->attr.map_flags & kBpfFRdonlyProg)) return false;
  if (a->elem_size == a->attr.value_size) return true;
  // Not the padding after a value, not across two values.
  return off % a->elem_size + size <= a->attr.value_size;
}

void* array_map_direct_value_addr(Map* map) {
  // Kernel: only single-element arrays (global data) support it.
  return map->attr.max_entries == 1 ? to_array(map)->values : nullptr;
}

bool array_map_gen_lookup(const Map* map, ArrayLayout* out) {
  const ArrayMap* a = to_array(map);
  out->base = reinterpret_cast<uintptr_t>(a->values);
  out->elem_size = a->elem_size;
  out->max_entries = a->attr.max_entries;
  return true;
}

// ---- host only -------------------------------------------------------------

int array_map_lookup_elem_copy(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if (int err = map_check_lock_flag(map, flags)) return err;
  ArrayMap* a = to_array(map);
  uint32_t index = read_index(key);
  if (index >= a->attr.max_entries) return -ENOENT;
  if (flags & kBpfFLock)
    copy_map_value_locked(map, value, array_elem(a, index), true);
  else
    copy_map_value_out(map, value, array_elem(a, index), a->attr.value_size);
  return 0;
}

// bpf(2) checks the flags, then finds no lookup_and_delete for arrays.
int array_map_lookup_and_delete_elem(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if (int err = map_check_lock_flag(map, flags)) return err;
  return -kEnotsupp;
}

uint32_t array_map_host_value_size(const Map* map) {
  return map->attr.value_size;
}

}  // namespace

// Shared with the per-CPU array (same keys).
int array_map_get_next_key(Map* map, const void* key, void* next_key) {
  uint32_t max = map->attr.max_entries;
  uint32_t index = key ? read_index(key) : UINT32_MAX;
  uint32_t next;
  if (index >= max) {
    next = 0;
  } else if (index == max - 1) {
    return -ENOENT;
  } else {
    next = index + 1;
  }
  std::memcpy(next_key, &next, sizeof(next));
  return 0;
}

extern const MapOps kArrayMapOps = {
    .alloc_check = array_map_alloc_check,
    .alloc = array_map_alloc,
    .free = array_map_free,
    .get_next_key = array_map_get_next_key,
    .lookup_elem_copy = array_map_lookup_elem_copy,
    .lookup_and_delete_elem = array_map_lookup_and_delete_elem,
    .lookup_batch = generic_map_lookup_batch,
    .lookup_and_delete_batch = unsupported_batch,  // kernel: no such op for arrays
    .update_batch = generic_map_update_batch,
    .delete_batch = unsupported_batch,
    .host_value_size = array_map_host_value_size,
    .lookup_elem = array_map_lookup_elem,
    .update_elem = array_map_update_elem,
    .delete_elem = array_map_delete_elem,
    .for_each_elem = array_map_for_each_elem,
    .access_ok = array_map_access_ok,
    .direct_value_addr = array_map_direct_value_addr,
    .gen_lookup = array_map_gen_lookup,
};

}  // namespace userbpf::maps
