// Helpers shared by the map families: value/key copies that never tear an
// aligned 8-byte word, memory charging against MapAttr::memory_limit, and the
// reasons alloc_check gives for rejecting attributes.
//
// Contexts: copies and charging may run anywhere (programs, signal handlers);
// reject_attr only on the host thread creating a map.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "maps/map.h"
#include "maps/special_fields.h"
#include "maps/spin_lock.h"

namespace userbpf::mem {
struct MemDomain;
}

namespace userbpf::maps {

// The kernel's internal ENOTSUPP (524), which bpf(2) returns to user space for
// operations a map type lacks (e.g. lookup_and_delete on an array). It is not
// in <errno.h>; userbpf returns the same number so errno matches the kernel.
inline constexpr int kEnotsupp = 524;

// Copies between map memory and caller memory. Map memory is accessed with
// relaxed 8-byte atomic words (plain moves on x86-64), so a concurrent reader
// never sees half of an aligned 8-byte word (no torn counters), and the
// deliberate races with programs writing values in place are visible to TSan
// as atomics rather than undefined behaviour. map_mem must be 8-byte aligned;
// the caller's buffer may have any alignment. The tail (size % 8) is copied
// byte by byte.
inline void copy_to_map(void* map_mem, const void* src, size_t size) {
  auto* d = static_cast<uint64_t*>(map_mem);
  const auto* s = static_cast<const unsigned char*>(src);
  size_t words = size / 8;
  for (size_t i = 0; i < words; i++) {
    uint64_t w;
    std::memcpy(&w, s + i * 8, 8);
    __atomic_store_n(&d[i], w, __ATOMIC_RELAXED);
  }
  auto* dt = reinterpret_cast<unsigned char*>(d + words);
  for (size_t i = words * 8; i < size; i++)
    __atomic_store_n(&dt[i - words * 8], s[i], __ATOMIC_RELAXED);
}

inline void copy_from_map(void* dst, const void* map_mem, size_t size) {
  const auto* s = static_cast<const uint64_t*>(map_mem);
  auto* d = static_cast<unsigned char*>(dst);
  size_t words = size / 8;
  for (size_t i = 0; i < words; i++) {
    uint64_t w = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
    std::memcpy(d + i * 8, &w, 8);
  }
  const auto* st = reinterpret_cast<const unsigned char*>(s + words);
  for (size_t i = words * 8; i < size; i++)
    d[i] = __atomic_load_n(&st[i - words * 8], __ATOMIC_RELAXED);
}

// Loads the i-th 8-byte word of a caller buffer of size bytes, zero-padded
// past its end (keys are compared and stored as zero-padded words).
// Fixed-size pieces only, so the compiler emits plain loads, no memcpy call.
inline uint64_t load_padded_word(const void* buf, size_t size, size_t i) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "word layout assumes little endian");
  const auto* p = static_cast<const unsigned char*>(buf) + i * 8;
  size_t rem = size - i * 8;
  uint64_t w = 0;
  if (rem >= 8) {
    std::memcpy(&w, p, 8);
    return w;
  }
  size_t pos = 0;
  if (rem & 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    w = v;
    pos = 4;
  }
  if (rem & 2) {
    uint16_t v;
    std::memcpy(&v, p + pos, 2);
    w |= static_cast<uint64_t>(v) << (pos * 8);
    pos += 2;
  }
  if (rem & 1) w |= static_cast<uint64_t>(p[pos]) << (pos * 8);
  return w;
}

// Stores a caller buffer into 8-aligned map memory as round_up(size, 8)
// bytes, zero-padding the last word.
inline void store_padded(void* map_mem, const void* src, size_t size) {
  auto* d = static_cast<uint64_t*>(map_mem);
  for (size_t i = 0; i * 8 < size; i++)
    __atomic_store_n(&d[i], load_padded_word(src, size, i), __ATOMIC_RELAXED);
}

// Whether zero-padded map memory (written by store_padded) holds the caller's
// key of size bytes.
inline bool equal_padded(const void* map_mem, const void* key, size_t size) {
  const auto* s = static_cast<const uint64_t*>(map_mem);
  for (size_t i = 0; i * 8 < size; i++)
    if (__atomic_load_n(&s[i], __ATOMIC_RELAXED) != load_padded_word(key, size, i)) return false;
  return true;
}

// Whether values of this map hold a bpf_spin_lock (BPF_F_LOCK is allowed
// only then): the kernel's btf_record_has_field(map->record, BPF_SPIN_LOCK).
inline bool map_has_spin_lock(const Map* map) {
  const FieldTable* ft = map->attr.fields.get();
  return ft != nullptr && ft->has(FieldKind::kSpinLock);
}

// The BPF_F_LOCK part of a host or program operation's flags, checked where
// the kernel checks it: -EINVAL when the value has no bpf_spin_lock;
// -EDEADLK when this thread holds or is taking a bpf_spin_lock (a signal
// handler interrupted a critical section or a BPF_F_LOCK copy), since the
// operation could then wait, possibly under a bucket lock, for a lock its
// own thread holds (spin_lock.h). 0 otherwise or without BPF_F_LOCK.
inline int map_check_lock_flag(const Map* map, uint64_t flags) {
  if (!(flags & kBpfFLock)) [[likely]]
    return 0;
  if (!map_has_spin_lock(map)) return -EINVAL;
  if (spin_lock_thread_busy()) return -EDEADLK;
  return 0;
}

// The memory domain a map works with: MapAttr::domain, or the process-wide
// default (mem::default_mem_domain()) for maps made without a runtime.
mem::MemDomain* map_domain(const MapAttr& attr);

// Per-CPU map types (PERCPU_ARRAY, PERCPU_HASH, LRU_PERCPU_HASH): the kernel's
// bpf_map_supports_cpu_flags.
bool map_type_is_percpu(uint32_t type);
// Copies of a value: the normal CPU slots of the map's domain for per-CPU
// maps (what the runtime reports as possible CPUs), else 1.
uint32_t map_num_cpus(const Map* map);

// The kernel's bpf_map_check_op_flags for host lookup/update and their batch
// forms: bits of the low half outside `allowed`, BPF_F_LOCK without a spin
// lock, a high half without BPF_F_CPU, BPF_F_CPU/BPF_F_ALL_CPUS on a map
// that is not per-CPU or both at once: -EINVAL; BPF_F_CPU naming a CPU past
// the map's last: -ERANGE; BPF_F_LOCK on a thread inside a critical
// section: -EDEADLK (map_check_lock_flag). 0 if the flags may go on to the
// map type.
int map_check_op_flags(const Map* map, uint64_t flags, uint64_t allowed);

// Charges bytes to map->memory_used. False (nothing charged) if that would
// pass attr.memory_limit; callers then fail with ENOMEM.
bool map_charge(Map* map, uint64_t bytes);
void map_uncharge(Map* map, uint64_t bytes);
// map_charge against an explicit limit (0: none), for charging from other
// threads (allocator workers) that must not read map->attr, which
// create_map rewrites after the family's alloc returns.
bool map_charge_limited(Map* map, uint64_t bytes, uint64_t limit);

// For alloc_check implementations: records why the attributes were rejected
// (create_map puts it in its error message) and returns -err.
int reject_attr(int err, const char* why);
// The reason recorded by the last reject_attr on this thread (then cleared).
const char* take_reject_reason();

// Checks shared by every map type before its own alloc_check, as the
// kernel's map_create does: map_extra only for types that use it, not both
// BPF_F_RDONLY and BPF_F_WRONLY. 0 or negative errno (reason recorded).
int map_create_check(const MapAttr& attr);

// The kernel's map_check_btf rules for special fields, after the type's
// alloc_check: any special field with BPF_F_RDONLY_PROG/WRONLY_PROG is
// -EACCES; a field in a map type that cannot hold it is -EOPNOTSUPP
// (bpf_spin_lock: HASH and ARRAY only, of the types userbpf has; bpf_timer
// and bpf_wq: HASH, LRU_HASH, ARRAY; kptrs: the hash and array families).
// 0 or negative errno (reason recorded).
int map_check_fields(const MapAttr& attr);

}  // namespace userbpf::maps
