// Batch operations built from a map's single-element ops, as the kernel's
// generic_map_lookup_batch / generic_map_update_batch /
// generic_map_delete_batch (kernel/bpf/syscall.c) do for maps without their
// own. Host only.
//
// Semantics (kernel): elem_flags may hold only BPF_F_LOCK, plus BPF_F_CPU
// (lookup, update) and BPF_F_ALL_CPUS (update) on per-CPU maps (EINVAL
// otherwise, and EINVAL without a spin lock; ERANGE past the last CPU:
// map_check_op_flags); batch.flags is not checked; count 0 returns 0 at
// once. Lookup walks get_next_key from the in_batch key (a key
// of the map; nullptr: from the start), skips keys that vanish meanwhile,
// returns -ENOENT at the end with count filled in, and writes the last key
// it visited to out_batch when it copied anything. Update and delete stop at
// the first error with count = elements done.
// Values use host_value_size bytes each (the per-CPU layout for per-CPU
// maps), or round_up(value_size, 8) with BPF_F_CPU / BPF_F_ALL_CPUS; updates
// go through update_elem_copy where the map has one (per-CPU maps).
#pragma once

#include "maps/map.h"

namespace userbpf::maps {

int generic_map_lookup_batch(Map* map, BatchArgs& args);
int generic_map_update_batch(Map* map, BatchArgs& args);
int generic_map_delete_batch(Map* map, BatchArgs& args);

// For map types without the operation (kernel: NULL in bpf_map_ops, so
// bpf(2) returns ENOTSUPP before looking at the arguments).
int unsupported_batch(Map* map, BatchArgs& args);

}  // namespace userbpf::maps
