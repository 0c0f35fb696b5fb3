// Memory charging and attribute-check reasons shared by the map families.
#include "maps/map_internal.h"

#include <cerrno>
#include <initializer_list>

#include "mem/domain.h"

namespace userbpf::maps {
namespace {

// Host-only (map creation), so a plain thread_local is fine.
thread_local const char* t_reject_reason = nullptr;

// Types whose map_extra means something (kernel: bloom filter hash count,
// arena user address). A new type using map_extra (qp-trie) joins this list.
bool type_uses_map_extra(uint32_t type) {
  return type == static_cast<uint32_t>(MapType::kBLOOM_FILTER) ||
         type == static_cast<uint32_t>(MapType::kARENA);
}

}  // namespace

bool map_charge(Map* map, uint64_t bytes) {
  return map_charge_limited(map, bytes, map->attr.memory_limit);
}

bool map_charge_limited(Map* map, uint64_t bytes, uint64_t limit) {
  if (limit == 0) {
    map->memory_used.fetch_add(bytes, std::memory_order_relaxed);
    return true;
  }
  uint64_t used = map->memory_used.load(std::memory_order_relaxed);
  do {
    if (used + bytes > limit || used + bytes < used) return false;
  } while (!map->memory_used.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return true;
}

void map_uncharge(Map* map, uint64_t bytes) {
  map->memory_used.fetch_sub(bytes, std::memory_order_relaxed);
}

mem::MemDomain* map_domain(const MapAttr& attr) {
  return attr.domain ? attr.domain : &mem::default_mem_domain();
}

bool map_type_is_percpu(uint32_t type) {
  return type == static_cast<uint32_t>(MapType::kPERCPU_ARRAY) ||
         type == static_cast<uint32_t>(MapType::kPERCPU_HASH) ||
         type == static_cast<uint32_t>(MapType::kLRU_PERCPU_HASH);
}

uint32_t map_num_cpus(const Map* map) {
  if (!map_type_is_percpu(map->attr.type)) return 1;
  return map_domain(map->attr)->slots.num_slots();
}

int map_check_op_flags(const Map* map, uint64_t flags, uint64_t allowed) {
  if (static_cast<uint32_t>(flags) & ~allowed) return -EINVAL;
  if ((flags & kBpfFLock) && !map_has_spin_lock(map)) return -EINVAL;
  if (!(flags & kBpfFCpu) && (flags >> 32)) return -EINVAL;
  if (flags & (kBpfFCpu | kBpfFAllCpus)) {
    if (!map_type_is_percpu(map->attr.type)) return -EINVAL;
    if ((flags & kBpfFCpu) && (flags & kBpfFAllCpus)) return -EINVAL;
    if ((flags & kBpfFCpu) && (flags >> 32) >= map_num_cpus(map)) return -ERANGE;
  }
  return map_check_lock_flag(map, flags);
}

int reject_attr(int err, const char* why) {
  t_reject_reason = why;
  return -err;
}

const char* take_reject_reason() {
  const char* r = t_reject_reason;
  t_reject_reason = nullptr;
  return r;
}

int map_check_fields(const MapAttr& attr) {
  const FieldTable* ft = attr.fields.get();
  if (ft == nullptr || ft->fields.empty()) return 0;
  if (attr.map_flags & (kBpfFRdonlyProg | kBpfFWronlyProg))
    return reject_attr(EACCES,
                       "a value with special fields (kptr, bpf_spin_lock, bpf_timer, bpf_wq) "
                       "must stay readable and writable by programs: no "
                       "BPF_F_RDONLY_PROG/BPF_F_WRONLY_PROG");
  const auto is = [&](std::initializer_list<MapType> types) {
    for (MapType t : types)
      if (attr.type == static_cast<uint32_t>(t)) return true;
    return false;
  };
  for (const SpecialField& f : ft->fields) {
    switch (f.kind) {
      case FieldKind::kSpinLock:
        if (!is({MapType::kHASH, MapType::kARRAY, MapType::kCGROUP_STORAGE, MapType::kSK_STORAGE,
                 MapType::kINODE_STORAGE, MapType::kTASK_STORAGE, MapType::kCGRP_STORAGE}))
          return reject_attr(EOPNOTSUPP,
                             "bpf_spin_lock in a value is only supported by hash and array maps");
        break;
      case FieldKind::kTimer:
      case FieldKind::kWorkqueue:
        if (!is({MapType::kHASH, MapType::kLRU_HASH, MapType::kARRAY}))
          return reject_attr(EOPNOTSUPP,
                             "bpf_timer and bpf_wq in a value are only supported by hash, LRU "
                             "hash and array maps");
        break;
      case FieldKind::kKptr:
      case FieldKind::kPercpuKptr:
        if (!is({MapType::kHASH, MapType::kPERCPU_HASH, MapType::kLRU_HASH,
                 MapType::kLRU_PERCPU_HASH, MapType::kARRAY, MapType::kPERCPU_ARRAY,
                 MapType::kSK_STORAGE, MapType::kINODE_STORAGE, MapType::kTASK_STORAGE,
                 MapType::kCGRP_STORAGE}))
          return reject_attr(EOPNOTSUPP,
                             "kptrs in a value are only supported by hash and array maps "
                             "(per-CPU and LRU included)");
        break;
    }
  }
  return 0;
}

int map_create_check(const MapAttr& attr) {
  if (attr.map_extra != 0 && !type_uses_map_extra(attr.type))
    return reject_attr(EINVAL, "map_extra must be 0 for this map type");
  if ((attr.map_flags & kBpfFRdonly) && (attr.map_flags & kBpfFWronly))
    return reject_attr(EINVAL, "map_flags has both BPF_F_RDONLY and BPF_F_WRONLY");
  return 0;
}

}  // namespace userbpf::maps
