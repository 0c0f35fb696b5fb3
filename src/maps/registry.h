// The map type registry: UAPI type number -> MapOps, and map creation and
// destruction through it.
#pragma once

#include <memory>

#include "maps/map.h"

namespace userbpf::maps {

// Ops for a map type number, nullptr if userbpf does not implement it.
const MapOps* find_map_ops(uint32_t type);

// Checks attributes (alloc_check), then allocates. Errors name the map and
// the offending attribute, with the kernel's errno.
Result<Map*> create_map(const MapAttr& attr);
void destroy_map(Map* map);

struct MapDeleter {
  void operator()(Map* m) const { destroy_map(m); }
};
using MapPtr = std::unique_ptr<Map, MapDeleter>;

}  // namespace userbpf::maps
