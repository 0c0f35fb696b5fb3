// The map type registry: the one list of implemented map types, and map
// creation (the kernel's map_create: shared checks, the type's alloc_check,
// then alloc) and destruction through it.
#include "maps/registry.h"

#include <array>
#include <cerrno>

#include "maps/array_map.h"
#include "maps/hash_map.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"

namespace userbpf::maps {
namespace {

// Every implemented map type, once: MAP_TYPE(UAPI name, ops table). Adding a
// type means adding its line here (and its ops in its own file).
#define USERBPF_MAP_OPS_LIST(MAP_TYPE)       \
  MAP_TYPE(HASH, kHashMapOps)                \
  MAP_TYPE(ARRAY, kArrayMapOps)              \
  MAP_TYPE(PERCPU_HASH, kPercpuHashMapOps)   \
  MAP_TYPE(PERCPU_ARRAY, kPercpuArrayMapOps) \
  MAP_TYPE(LRU_HASH, kLruHashMapOps)         \
  MAP_TYPE(LRU_PERCPU_HASH, kLruPercpuHashMapOps)

constexpr uint32_t max_type_number() {
  uint32_t m = 0;
#define USERBPF_X(name, num) m = (num) > m ? (num) : m;
  USERBPF_MAP_TYPE_NUMBERS(USERBPF_X)
#undef USERBPF_X
  return m;
}

using OpsTable = std::array<const MapOps*, max_type_number() + 1>;

constexpr OpsTable make_ops_table() {
  OpsTable t{};
#define USERBPF_X(name, ops) t[static_cast<uint32_t>(MapType::k##name)] = &ops;
  USERBPF_MAP_OPS_LIST(USERBPF_X)
#undef USERBPF_X
  return t;
}

constexpr OpsTable kOpsTable = make_ops_table();

}  // namespace

const MapOps* find_map_ops(uint32_t type) {
  return type < kOpsTable.size() ? kOpsTable[type] : nullptr;
}

Result<Map*> create_map(const MapAttr& attr) {
  const char* name = attr.name.c_str();
  const char* type_name = map_type_name(attr.type);
  take_reject_reason();
  if (int err = map_create_check(attr)) {
    const char* why = take_reject_reason();
    return make_error(-err, "map '%s' (%s): %s", name, type_name, why ? why : "invalid attributes");
  }
  const MapOps* ops = find_map_ops(attr.type);
  if (!ops)
    return make_error(EINVAL, "map '%s': map type %u (%s) is not supported", name, attr.type,
                      type_name);
  if (ops->alloc_check) {
    if (int err = ops->alloc_check(attr)) {
      const char* why = take_reject_reason();
      return make_error(-err,
                        "map '%s' (%s): %s (key_size %u, value_size %u, max_entries %u, "
                        "map_flags 0x%x)",
                        name, type_name, why ? why : "invalid attributes", attr.key_size,
                        attr.value_size, attr.max_entries, attr.map_flags);
    }
  }
  // The kernel's map_check_btf (after alloc there; nothing allocated here).
  if (int err = map_check_fields(attr)) {
    const char* why = take_reject_reason();
    return make_error(-err, "map '%s' (%s): %s", name, type_name, why ? why : "special fields");
  }
  Result<Map*> r = ops->alloc(attr);
  if (!r.ok())
    return make_error(r.error().code, "map '%s' (%s): %s", name, type_name,
                      r.error().message.c_str());
  Map* map = r.value();
  map->ops = ops;
  // The family may have adjusted max_entries (per-CPU LRU lists round it up
  // to a multiple of the CPUs, as the kernel does); the map reports its own.
  const uint32_t max_entries = map->attr.max_entries;
  map->attr = attr;
  if (max_entries) map->attr.max_entries = max_entries;
  return map;
}

void destroy_map(Map* map) {
  if (map) map->ops->free(map);
}

}  // namespace userbpf::maps
