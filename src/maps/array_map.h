// BPF_MAP_TYPE_ARRAY: its ops table. Global data sections (.data, .rodata,
// .bss) are arrays with max_entries 1 whose value the loader relocates
// programs to (direct_value_addr).
#pragma once

#include "maps/map.h"

namespace userbpf::maps {

extern const MapOps kArrayMapOps;

}  // namespace userbpf::maps
