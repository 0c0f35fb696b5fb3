// BPF_MAP_TYPE_PERCPU_ARRAY with the kernel's semantics (kernel/bpf/arraymap.c,
// percpu parts; the host view and flags in percpu_maps.h).
//
// Layout: one zero-initialized, page-aligned block holding N CPU blocks of
// cpu_stride bytes; CPU block c holds max_entries elements of elem_size =
// round_up(value_size, 8) bytes, so the copy of CPU c of key i is at
//   values + c * cpu_stride + i * elem_size.
// cpu_stride = roundup_pow_of_two(max_entries * elem_size), at least 64 (up
// to 1 GiB of values per CPU; beyond, round_up(.., 64)): CPUs never share a
// cache line, so programs counting on different slots do not slow each other
// down (the kernel's per-CPU allocator keeps each CPU's copies in its own
// area too), and access_ok finds the offset inside a CPU block with a mask.
// Pages between a CPU's last value and the next CPU block are never touched
// (no access reaches them), so they cost address space only and are not
// charged. One CPU's copies being contiguous also makes the program lookup
// plain array indexing after adding c * cpu_stride (gen_lookup_percpu).
// Elements always exist: updates copy into place, delete is EINVAL. Special
// fields (kptrs) are released per copy when overwritten and with the map.
//
// Invariants: the block is mapped for the map's whole life and never moves,
// so value pointers handed to programs stay valid.
// Concurrency: no locks. A program writes the copy of the slot it holds,
// which no other program touches meanwhile; host copies move relaxed
// atomic 8-byte words, so they see each word either before or after a
// program's store, never half of it.
// Contexts: lookup/lookup_percpu/update/for_each/access_ok from any context;
// the rest host.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

#include "base/bits.h"
#include "maps/array_map.h"
#include "maps/generic_batch.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "maps/special_fields.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

// Kernel ARRAY_CREATE_FLAG_MASK minus what only plain arrays accept
// (BPF_F_MMAPABLE, BPF_F_INNER_MAP) and BPF_F_NUMA_NODE, which per-CPU maps
// refuse (their copies follow the CPUs, not a node).
constexpr uint32_t kPercpuArrayCreateFlagMask =
    kBpfFRdonly | kBpfFWronly | kBpfFRdonlyProg | kBpfFWronlyProg;
constexpr uint64_t kCacheLine = 64;
// Largest per-CPU block rounded up to a power of two.
constexpr uint64_t kMaxPow2Stride = 1ull << 30;

struct PercpuArrayMap : Map {
  unsigned char* values = nullptr;
  const mem::SlotTable* slots = nullptr;
  uint64_t block_bytes = 0;  // mapped bytes (page multiple)
  uint64_t used_bytes = 0;   // max_entries * elem_size: one CPU's copies
  uint64_t cpu_stride = 0;   // see above
  uint32_t elem_size = 0;
  uint32_t ncpus = 0;
  // access_ok's offset in a CPU block and in an element: masks where the
  // sizes are powers of two (0 otherwise), else divisions as multiplications
  // (exact for dividends < 2^32, which div_fast says all are).
  uint64_t stride_mask = 0;
  uint32_t elem_mask = 0;
  uint64_t stride_magic = 0;
  uint64_t elem_magic = 0;
  bool div_fast = false;
};

uint64_t fastdiv_magic(uint64_t d) {
  return ~0ull / d + 1;
}

// n / d for n < 2^32 given magic = fastdiv_magic(d), d < 2^32.
uint64_t fastdiv(uint64_t n, uint64_t magic) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(magic) * n) >> 64);
}

PercpuArrayMap* to_pcpu_array(Map* m) {
  return static_cast<PercpuArrayMap*>(m);
}
const PercpuArrayMap* to_pcpu_array(const Map* m) {
  return static_cast<const PercpuArrayMap*>(m);
}

uint32_t read_index(const void* key) {
  uint32_t index;
  std::memcpy(&index, key, sizeof(index));
  return index;
}

unsigned char* pcpu_elem(const PercpuArrayMap* a, uint32_t cpu, uint32_t index) {
  return a->values + a->cpu_stride * cpu + uint64_t{a->elem_size} * index;
}

PercpuCopies pcpu_copies(const PercpuArrayMap* a, uint32_t index) {
  return PercpuCopies{pcpu_elem(a, 0, index), a->cpu_stride, a->ncpus};
}

int percpu_array_alloc_check(const MapAttr& attr) {
  if (attr.max_entries == 0) return reject_attr(EINVAL, "max_entries must be > 0");
  if (attr.key_size != 4) return reject_attr(EINVAL, "key_size must be 4");
  if (attr.value_size == 0) return reject_attr(EINVAL, "value_size must be > 0");
  if (attr.map_flags & kBpfFNumaNode)
    return reject_attr(EINVAL, "BPF_F_NUMA_NODE is not for per-CPU maps");
  if (attr.map_flags & (kBpfFMmapable | kBpfFInnerMap))
    return reject_attr(EINVAL, "BPF_F_MMAPABLE and BPF_F_INNER_MAP are only for plain arrays");
  if (attr.map_flags & ~kPercpuArrayCreateFlagMask)
    return reject_attr(EINVAL, "map_flags has bits a per-CPU array does not accept");
  if ((attr.map_flags & kBpfFRdonlyProg) && (attr.map_flags & kBpfFWronlyProg))
    return reject_attr(EINVAL, "map_flags has both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG");
  if (attr.value_size > INT_MAX) return reject_attr(E2BIG, "value_size above INT_MAX");
  if (round_up(uint64_t{attr.value_size}, 8) > kPcpuMinUnitSize)
    return reject_attr(E2BIG, "per-CPU value_size above 32 KiB (PCPU_MIN_UNIT_SIZE)");
  return 0;
}

void percpu_array_free(Map* map) {
  PercpuArrayMap* a = to_pcpu_array(map);
  if (a->values && map_fields(map)) {
    for (uint32_t c = 0; c < a->ncpus; c++)
      for (uint32_t i = 0; i < a->attr.max_entries; i++)
        map_release_fields(map, pcpu_elem(a, c, i));
  }
  if (a->values) munmap(a->values, a->block_bytes);
  delete a;
}

Result<Map*> percpu_array_alloc(const MapAttr& attr) {
  auto* a = new (std::nothrow) PercpuArrayMap();
  if (!a) return make_error(ENOMEM, "out of memory for the map header");
  a->attr = attr;
  a->slots = &map_domain(attr)->slots;
  a->ncpus = a->slots->num_slots();
  a->elem_size = static_cast<uint32_t>(round_up(attr.value_size, 8));
  a->used_bytes = uint64_t{a->elem_size} * attr.max_entries;
  a->cpu_stride = a->used_bytes <= kMaxPow2Stride
                      ? std::max<uint64_t>(roundup_pow_of_two(a->used_bytes), kCacheLine)
                      : round_up(a->used_bytes, kCacheLine);
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t bytes = round_up(a->cpu_stride * a->ncpus, page);
  a->block_bytes = bytes;
  // What can ever be resident: each CPU's values, whole pages.
  const uint64_t charged = std::min(bytes, round_up(a->used_bytes, page) * a->ncpus);
  if (!map_charge(a, sizeof(PercpuArrayMap) + charged)) {
    const uint32_t ncpus = a->ncpus;
    delete a;
    return make_error(ENOMEM, "%llu bytes of values (%u CPUs) exceed memory_limit %llu",
                      static_cast<unsigned long long>(charged), ncpus,
                      static_cast<unsigned long long>(attr.memory_limit));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    delete a;
    return make_error(ENOMEM, "cannot map %llu bytes of values",
                      static_cast<unsigned long long>(bytes));
  }
  a->values = static_cast<unsigned char*>(p);
  a->stride_mask = is_power_of_two(a->cpu_stride) ? a->cpu_stride - 1 : 0;
  a->elem_mask = is_power_of_two(a->elem_size) ? a->elem_size - 1 : 0;
  a->stride_magic = fastdiv_magic(a->cpu_stride);
  a->elem_magic = fastdiv_magic(a->elem_size);
  a->div_fast = a->cpu_stride * a->ncpus <= 0xffffffffull;
  return static_cast<Map*>(a);
}

// ---- host and program ------------------------------------------------------

[[gnu::noinline]] void* percpu_array_lookup_other(const PercpuArrayMap* a, uint32_t index) {
  return pcpu_elem(a, percpu_this_cpu(*a->slots, a->ncpus), index);
}

// The common case (a run on a normal slot) without saved registers; the
// rest in a tail call.
void* percpu_array_lookup_elem(Map* map, const void* key) {
  const PercpuArrayMap* a = to_pcpu_array(map);
  uint32_t index = read_index(key);
  if (index >= a->attr.max_entries) return nullptr;
  auto slot = static_cast<uint32_t>(a->slots->held_slot());
  if (slot >= a->ncpus) [[unlikely]]
    return percpu_array_lookup_other(a, index);
  return pcpu_elem(a, slot, index);
}

void* percpu_array_lookup_percpu_elem(Map* map, const void* key, uint32_t cpu) {
  const PercpuArrayMap* a = to_pcpu_array(map);
  uint32_t index = read_index(key);
  if (cpu >= a->ncpus || index >= a->attr.max_entries) return nullptr;
  return pcpu_elem(a, cpu, index);
}

// Program update (kernel array_map_update_elem, per-CPU branch): this CPU's
// copy only.
long percpu_array_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  PercpuArrayMap* a = to_pcpu_array(map);
  uint32_t index = read_index(key);
  if ((flags & ~kBpfFLock) > kBpfExist) return -EINVAL;
  if (index >= a->attr.max_entries) return -E2BIG;
  if (flags & kBpfNoexist) return -EEXIST;
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  unsigned char* elem = pcpu_elem(a, percpu_this_cpu(*a->slots, a->ncpus), index);
  copy_map_value_in(map, elem, value, a->attr.value_size);
  map_release_fields(map, elem);
  return 0;
}

long percpu_array_delete_elem(Map* map, const void* key) {
  return -EINVAL;
}

long percpu_array_for_each_elem(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags) {
  if (flags != 0) return -EINVAL;
  PercpuArrayMap* a = to_pcpu_array(map);
  const uint32_t cpu = percpu_this_cpu(*a->slots, a->ncpus);
  long num_elems = 0;
  for (uint32_t i = 0; i < a->attr.max_entries; i++) {
    uint32_t key = i;
    num_elems++;
    if (cb(cb_ctx, map, &key, pcpu_elem(a, cpu, i))) break;
  }
  return num_elems;
}

// Inside one value of one CPU's copies (any CPU: bpf_map_lookup_percpu_elem
// hands out other CPUs' copies, writable as in the kernel).
// Where [addr, addr + size) starts inside a value copy of this map: its
// offset in that copy, or false (outside the copies, in a CPU block's tail
// or between values).
bool percpu_array_locate(const PercpuArrayMap* a, uintptr_t addr, size_t size, uint64_t* in_value) {
  uint64_t off = addr - reinterpret_cast<uintptr_t>(a->values);
  const uint64_t total = a->cpu_stride * a->ncpus;
  if (off >= total || size > total - off) return false;
  uint64_t in_cpu;
  if (a->stride_mask) [[likely]]
    in_cpu = off & a->stride_mask;
  else if (a->div_fast)
    in_cpu = off - fastdiv(off, a->stride_magic) * a->cpu_stride;
  else
    in_cpu = off % a->cpu_stride;
  if (in_cpu >= a->used_bytes) return false;  // the tail of a CPU block
  uint64_t in_elem;
  if (a->elem_mask) [[likely]]
    in_elem = in_cpu & a->elem_mask;
  else if (a->div_fast)
    in_elem = in_cpu - fastdiv(in_cpu, a->elem_magic) * a->elem_size;
  else
    in_elem = in_cpu % a->elem_size;
  if (in_elem >= a->attr.value_size) return false;
  *in_value = in_elem;
  return true;
}

bool percpu_array_access_ok(const Map* map, uintptr_t addr, size_t size, bool write) {
  const PercpuArrayMap* a = to_pcpu_array(map);
  uint64_t in_value;
  if (!percpu_array_locate(a, addr, size, &in_value)) return false;
  if (write && (map->attr.map_flags & kBpfFRdonlyProg)) return false;
  return size <= a->attr.value_size - in_value;
}

// The start of the value copy holding addr, or 0.
uintptr_t percpu_array_value_at(const Map* map, uintptr_t addr) {
  uint64_t in_value;
  return percpu_array_locate(to_pcpu_array(map), addr, 1, &in_value) ? addr - in_value : 0;
}

bool percpu_array_gen_lookup_percpu(const Map* map, ArrayLayout* out) {
  const PercpuArrayMap* a = to_pcpu_array(map);
  out->base = reinterpret_cast<uintptr_t>(a->values);
  out->elem_size = a->elem_size;
  out->max_entries = a->attr.max_entries;
  out->cpu_stride = a->cpu_stride;
  return true;
}

// ---- host only -------------------------------------------------------------

int percpu_array_lookup_elem_copy(Map* map, const void* key, void* value, uint64_t flags) {
  if (int err = map_check_op_flags(map, flags, kBpfFLock | kBpfFCpu)) return err;
  PercpuArrayMap* a = to_pcpu_array(map);
  uint32_t index = read_index(key);
  if (index >= a->attr.max_entries) return -ENOENT;
  percpu_copy_out(map, value, pcpu_copies(a, index), flags);
  return 0;
}

// Kernel bpf_percpu_array_update, with BPF_F_CPU / BPF_F_ALL_CPUS.
long percpu_array_update_elem_copy(Map* map, const void* key, const void* value, uint64_t flags) {
  constexpr uint64_t kAllowed = kBpfNoexist | kBpfExist | kBpfFLock | kBpfFCpu | kBpfFAllCpus;
  if (int err = map_check_op_flags(map, flags, kAllowed)) return err;
  if ((static_cast<uint32_t>(flags) & ~(kBpfFCpu | kBpfFAllCpus)) > kBpfExist) return -EINVAL;
  PercpuArrayMap* a = to_pcpu_array(map);
  uint32_t index = read_index(key);
  if (index >= a->attr.max_entries) return -E2BIG;
  if (flags & kBpfNoexist) return -EEXIST;
  percpu_copy_in(map, pcpu_copies(a, index), value, flags);
  return 0;
}

// bpf(2) checks the flags, then finds no lookup_and_delete for arrays.
int percpu_array_lookup_and_delete_elem(Map* map, const void* key, void* value, uint64_t flags) {
  if (flags & ~kBpfFLock) return -EINVAL;
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  return -kEnotsupp;
}

uint32_t percpu_array_host_value_size(const Map* map) {
  const PercpuArrayMap* a = to_pcpu_array(map);
  return a->elem_size * a->ncpus;
}

}  // namespace

extern const MapOps kPercpuArrayMapOps = {
    .alloc_check = percpu_array_alloc_check,
    .alloc = percpu_array_alloc,
    .free = percpu_array_free,
    .get_next_key = array_map_get_next_key,
    .lookup_elem_copy = percpu_array_lookup_elem_copy,
    .update_elem_copy = percpu_array_update_elem_copy,
    .lookup_and_delete_elem = percpu_array_lookup_and_delete_elem,
    .lookup_batch = generic_map_lookup_batch,
    .lookup_and_delete_batch = unsupported_batch,  // kernel: no such op for arrays
    .update_batch = generic_map_update_batch,
    .delete_batch = unsupported_batch,
    .host_value_size = percpu_array_host_value_size,
    .lookup_elem = percpu_array_lookup_elem,
    .lookup_percpu_elem = percpu_array_lookup_percpu_elem,
    .update_elem = percpu_array_update_elem,
    .delete_elem = percpu_array_delete_elem,
    .for_each_elem = percpu_array_for_each_elem,
    .access_ok = percpu_array_access_ok,
    .value_at = percpu_array_value_at,
    .direct_value_addr = nullptr,  // kernel: only plain single-element arrays
    .gen_lookup = nullptr,         // the copy depends on the CPU: gen_lookup_percpu
    .gen_lookup_percpu = percpu_array_gen_lookup_percpu,
};

}  // namespace userbpf::maps
