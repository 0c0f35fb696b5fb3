// BPF_MAP_TYPE_ARRAY: its ops table. Global data sections (.data, .rodata,
// .bss) are arrays with max_entries 1 whose value the loader relocates
// programs to (direct_value_addr).
#pragma once

#include "maps/map.h"

namespace userbpf::maps {

extern const MapOps kArrayMapOps;

// get_next_key of u32-indexed arrays (plain and per-CPU): NULL or an index
// out of range gives 0, the last index ENOENT.
int array_map_get_next_key(Map* map, const void* key, void* next_key);

}  // namespace userbpf::maps
