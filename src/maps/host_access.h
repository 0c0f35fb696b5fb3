// Host access rules of bpf(2) for map operations: what a map's creation
// flags and freezing allow the host (not programs) to do.
//
// Kernel (syscall.c map_get_sys_perms, bpf_get_file_flag): a map created
// with BPF_F_RDONLY cannot be written by the host, BPF_F_WRONLY cannot be
// read, and a frozen map cannot be written; such calls fail with EPERM
// before any other check of the operation. Reads are lookup, get_next_key,
// lookup_batch; writes are update, delete, update_batch, delete_batch;
// lookup_and_delete (single and batch) is both.
// Contexts: host.
#pragma once

#include <cerrno>

#include "maps/map.h"

namespace userbpf::maps {

// 0 if the host may do an operation that reads and/or writes map, else -EPERM.
inline int map_host_access(const Map* map, bool read, bool write) {
  uint32_t flags = map->attr.map_flags;
  if (read && (flags & kBpfFWronly)) return -EPERM;
  if (write && ((flags & kBpfFRdonly) || map->frozen.load(std::memory_order_acquire)))
    return -EPERM;
  return 0;
}

}  // namespace userbpf::maps
