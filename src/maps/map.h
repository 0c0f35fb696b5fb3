// The map abstraction: attributes, the common Map header every map family
// embeds, and the MapOps function table (the kernel's bpf_map_ops), grouped by
// who may call each entry.
//
// Contexts: "host" entries run on host API threads only (may allocate, may
// take sleeping locks). "host+program" entries also run inside a program (any
// thread, possibly a signal handler): they never block on a lock a host path
// can hold across an allocation, and they report errors as negative errno.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"

namespace userbpf::mem {
struct MemDomain;
}

namespace userbpf::maps {

struct FieldTable;

// Kernel UAPI map type numbers (enum bpf_map_type); objects need no translation.
#define USERBPF_MAP_TYPE_NUMBERS(X) \
  X(UNSPEC, 0)                      \
  X(HASH, 1)                        \
  X(ARRAY, 2)                       \
  X(PROG_ARRAY, 3)                  \
  X(PERF_EVENT_ARRAY, 4)            \
  X(PERCPU_HASH, 5)                 \
  X(PERCPU_ARRAY, 6)                \
  X(STACK_TRACE, 7)                 \
  X(CGROUP_ARRAY, 8)                \
  X(LRU_HASH, 9)                    \
  X(LRU_PERCPU_HASH, 10)            \
  X(LPM_TRIE, 11)                   \
  X(ARRAY_OF_MAPS, 12)              \
  X(HASH_OF_MAPS, 13)               \
  X(DEVMAP, 14)                     \
  X(SOCKMAP, 15)                    \
  X(CPUMAP, 16)                     \
  X(XSKMAP, 17)                     \
  X(SOCKHASH, 18)                   \
  X(CGROUP_STORAGE, 19)             \
  X(REUSEPORT_SOCKARRAY, 20)        \
  X(PERCPU_CGROUP_STORAGE, 21)      \
  X(QUEUE, 22)                      \
  X(STACK, 23)                      \
  X(SK_STORAGE, 24)                 \
  X(DEVMAP_HASH, 25)                \
  X(STRUCT_OPS, 26)                 \
  X(RINGBUF, 27)                    \
  X(INODE_STORAGE, 28)              \
  X(TASK_STORAGE, 29)               \
  X(BLOOM_FILTER, 30)               \
  X(USER_RINGBUF, 31)               \
  X(CGRP_STORAGE, 32)               \
  X(ARENA, 33)

enum class MapType : uint32_t {
#define USERBPF_X(name, num) k##name = num,
  USERBPF_MAP_TYPE_NUMBERS(USERBPF_X)
#undef USERBPF_X
};

// Name of a map type number ("hash", "array", ...) or "unknown".
const char* map_type_name(uint32_t type);

// Update flags (SPEC.md section 2).
inline constexpr uint64_t kBpfAny = 0;
inline constexpr uint64_t kBpfNoexist = 1;
inline constexpr uint64_t kBpfExist = 2;
inline constexpr uint64_t kBpfFLock = 4;
// Per-CPU maps (SPEC.md section 3, kernel 7.0): one CPU's copy, the CPU
// number in flags >> 32 (host lookup, update and their batches); one value
// written to every CPU (host update and update_batch).
inline constexpr uint64_t kBpfFCpu = 8;
inline constexpr uint64_t kBpfFAllCpus = 16;

// map_flags at creation.
inline constexpr uint32_t kBpfFNoPrealloc = 1u << 0;
inline constexpr uint32_t kBpfFNoCommonLru = 1u << 1;
inline constexpr uint32_t kBpfFNumaNode = 1u << 2;
inline constexpr uint32_t kBpfFRdonly = 1u << 3;
inline constexpr uint32_t kBpfFWronly = 1u << 4;
inline constexpr uint32_t kBpfFZeroSeed = 1u << 6;
inline constexpr uint32_t kBpfFRdonlyProg = 1u << 7;
inline constexpr uint32_t kBpfFWronlyProg = 1u << 8;
inline constexpr uint32_t kBpfFMmapable = 1u << 10;
inline constexpr uint32_t kBpfFInnerMap = 1u << 12;

// What a map is created from: the BTF-defined map in .maps, a global data
// section, or a host API call.
struct MapAttr {
  uint32_t type = 0;
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t max_entries = 0;
  uint32_t map_flags = 0;
  uint64_t map_extra = 0;
  std::string name;
  // Memory limit in bytes charged to this map (0: unlimited); ENOMEM past it.
  uint64_t memory_limit = 0;
  // The slots, RCU domain and allocator the map works with: its runtime's
  // (set by the loader), or mem::default_mem_domain() when nullptr.
  mem::MemDomain* domain = nullptr;
  // Special fields of the value (kptrs, spin lock, timers) found in its BTF
  // by the loader (special_fields.h); nullptr: none.
  std::shared_ptr<const FieldTable> fields;
};

struct MapOps;

// Common header of every map. Map families derive from it (struct ArrayMap :
// Map) and recover their type with static_cast in their ops.
struct Map {
  const MapOps* ops = nullptr;
  MapAttr attr;
  // Set when the map was made read-only to the host (.rodata after load):
  // host updates fail with EPERM; programs may not write either.
  std::atomic<bool> frozen{false};
  // Bytes of memory this map owns (elements, tables), for `userbpf map show`.
  std::atomic<uint64_t> memory_used{0};
};

// Arguments of the batch operations (kernel's union bpf_attr batch part).
// in_batch/out_batch are opaque cursors of key_size bytes (hash: a u32 bucket
// index; array: a u32 index). count is in/out: room in keys/values on entry,
// elements processed on return.
struct BatchArgs {
  const void* in_batch = nullptr;  // nullptr: start from the beginning
  void* out_batch = nullptr;
  void* keys = nullptr;
  void* values = nullptr;
  uint32_t count = 0;
  uint64_t elem_flags = 0;
  uint64_t flags = 0;
};

// The value layout of a map whose program lookup is plain array indexing, for
// engines that inline it (the kernel's map_gen_lookup): the value of key
// i < max_entries is at base + i * elem_size; other keys have none. Fixed
// for the map's whole life. Per-CPU arrays (gen_lookup_percpu) add
// cpu * cpu_stride for the copy of CPU slot `cpu`; plain arrays have
// cpu_stride 0.
struct ArrayLayout {
  uintptr_t base = 0;
  uint32_t elem_size = 0;
  uint32_t max_entries = 0;
  uint64_t cpu_stride = 0;
};

// Callback of for_each_map_elem: returns 0 to continue, 1 to stop.
using ForEachCallback = uint64_t (*)(void* cb_ctx, Map* map, const void* key, void* value);

struct MapOps {
  // --- host only -----------------------------------------------------------
  // Attribute checks before any allocation; 0 or negative errno.
  int (*alloc_check)(const MapAttr& attr) = nullptr;
  // Creates the map (attributes already checked).
  Result<Map*> (*alloc)(const MapAttr& attr) = nullptr;
  void (*free)(Map* map) = nullptr;
  // key nullptr: first key. 0 or negative errno (ENOENT after the last key).
  int (*get_next_key)(Map* map, const void* key, void* next_key) = nullptr;
  // Host lookup: copies the value out (per-CPU maps: every CPU's copy, or
  // one with BPF_F_CPU).
  int (*lookup_elem_copy)(Map* map, const void* key, void* value, uint64_t flags) = nullptr;
  // Host update from a host buffer, for maps whose host value differs from
  // a program's (per-CPU maps: every CPU's copy, BPF_F_CPU, BPF_F_ALL_CPUS).
  // nullptr: update_elem serves the host too.
  long (*update_elem_copy)(Map* map, const void* key, const void* value, uint64_t flags) = nullptr;
  int (*lookup_and_delete_elem)(Map* map, const void* key, void* value, uint64_t flags) = nullptr;
  int (*lookup_batch)(Map* map, BatchArgs& args) = nullptr;
  int (*lookup_and_delete_batch)(Map* map, BatchArgs& args) = nullptr;
  int (*update_batch)(Map* map, BatchArgs& args) = nullptr;
  int (*delete_batch)(Map* map, BatchArgs& args) = nullptr;
  // Size in bytes of the value buffer the host passes (per-CPU: every CPU).
  uint32_t (*host_value_size)(const Map* map) = nullptr;

  // --- host and program ----------------------------------------------------
  // Pointer to the value inside the map, nullptr if missing. Valid until the
  // program returns (host callers copy under a read-side section). Per-CPU
  // maps: the copy of the CPU slot the caller holds (mem::SlotTable).
  void* (*lookup_elem)(Map* map, const void* key) = nullptr;
  // Per-CPU maps: the copy of CPU slot cpu (bpf_map_lookup_percpu_elem);
  // nullptr for cpu >= the map's CPUs. nullptr entry: not a per-CPU map.
  void* (*lookup_percpu_elem)(Map* map, const void* key, uint32_t cpu) = nullptr;
  // Per-CPU maps: value is one value for the caller's CPU slot's copy.
  long (*update_elem)(Map* map, const void* key, const void* value, uint64_t flags) = nullptr;
  long (*delete_elem)(Map* map, const void* key) = nullptr;
  // Calls cb for each element; returns the number of elements visited or a
  // negative errno.
  long (*for_each_elem)(Map* map, ForEachCallback cb, void* cb_ctx, uint64_t flags) = nullptr;
  // Whether [addr, addr + size) lies inside memory a program may access
  // through a pointer this map handed out (values), and writably if write.
  // Used by the interpreter's memory checks; must be cheap and lock-free.
  bool (*access_ok)(const Map* map, uintptr_t addr, size_t size, bool write) = nullptr;
  // The start of the value (per-CPU maps: of the copy) holding addr, or 0:
  // the interpreter's memory checks cache a whole value once one access
  // found it, so values need no grant slot (a map with value_at whose
  // lookup_elem returns only such values). nullptr: values are granted.
  uintptr_t (*value_at)(const Map* map, uintptr_t addr) = nullptr;
  // Address of the value of a single-entry array (global data) for
  // BPF_PSEUDO_MAP_VALUE relocations; nullptr if the map has none.
  void* (*direct_value_addr)(Map* map) = nullptr;
  // Whether lookup_elem of this map (u32 key) is exactly ArrayLayout
  // indexing with no other effect; fills *out if so (cpu_stride 0).
  // nullptr: never.
  bool (*gen_lookup)(const Map* map, ArrayLayout* out) = nullptr;
  // The same for per-CPU arrays, whose lookup_elem from a run on CPU slot
  // c is ArrayLayout indexing plus c * cpu_stride (c = the run's
  // RunContext::cpu). Separate from gen_lookup so an engine that does not
  // add the CPU term never inlines these maps. nullptr: never.
  bool (*gen_lookup_percpu)(const Map* map, ArrayLayout* out) = nullptr;
};

}  // namespace userbpf::maps
