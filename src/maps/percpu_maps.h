// Per-CPU maps (BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH,
// BPF_MAP_TYPE_LRU_PERCPU_HASH): their ops tables, and what they share: which
// copy a caller uses and the host's view of all copies (SPEC.md section 3).
//
// A per-CPU value has one copy per normal CPU slot of the map's domain
// (mem/cpu_slots.h): N = SlotTable::num_slots(), what the runtime reports as
// possible CPUs. A program sees the copy of the slot its run holds, which it
// owns alone while it runs: increments need no atomics and are exact.
// Sleepable runs hold slots [N, 2N) and use copy slot % N, the CPU
// bpf_get_smp_processor_id reports to them; like the kernel's sleepable
// programs (migrate_disable, not preempt_disable) they share that copy with
// whatever else runs on that CPU.
//
// Host view: round_up(value_size, 8) * N bytes, CPU i at offset
// i * round_up(value_size, 8), each copy copied whole in relaxed atomic
// 8-byte words (copy_map_value_in/out), so a host read racing with programs
// never sees a torn aligned 8-byte counter. As in the kernel
// (copy_map_value_long), the padding after value_size travels with the copy:
// it reads back what a host update in this layout wrote there (programs
// cannot reach it; copies a program created read 0 there).
// With BPF_F_CPU the host buffer is one value (value_size bytes) of CPU
// flags >> 32; BPF_F_ALL_CPUS writes one value (value_size bytes) to every
// copy.
//
// Contexts: percpu_this_cpu and the copies run anywhere a map operation runs
// (programs, signal handlers, host).
#pragma once

#include <cstdint>

#include "maps/map.h"
#include "maps/special_fields.h"
#include "mem/cpu_slots.h"

namespace userbpf::maps {

extern const MapOps kPercpuArrayMapOps;
extern const MapOps kPercpuHashMapOps;
extern const MapOps kLruPercpuHashMapOps;

// The kernel's PCPU_MIN_UNIT_SIZE: a per-CPU value may not exceed it
// (round_up(value_size, 8) > 32 KiB is E2BIG at creation).
inline constexpr uint32_t kPcpuMinUnitSize = 32 << 10;

// percpu_this_cpu's rare cases, out of line so the common one needs no
// saved registers.
[[gnu::cold, gnu::noinline]] inline uint32_t percpu_this_cpu_slow(int slot, uint32_t n) {
  uint32_t c = slot >= 0 ? static_cast<uint32_t>(slot) : mem::current_cpu_id();
  return c % n;
}

// The copy (a normal slot index < n) the calling thread uses: the slot it
// holds in slots (a sleepable slot s >= n maps to s % n), else, outside any
// run (a host thread calling a program-side op directly), the CPU it runs on.
[[gnu::always_inline]] inline uint32_t percpu_this_cpu(const mem::SlotTable& slots, uint32_t n) {
  int s = slots.held_slot();
  if (static_cast<uint32_t>(s) < n) [[likely]]
    return static_cast<uint32_t>(s);
  return percpu_this_cpu_slow(s, n);
}

// The copies of one value: copy c at first + c * stride, n copies.
struct PercpuCopies {
  unsigned char* first;
  uint64_t stride;
  uint32_t n;
  unsigned char* copy(uint32_t c) const { return first + stride * c; }
};

// Host lookup: every copy into dst in the host layout, or with BPF_F_CPU in
// flags (already checked) only that CPU's copy (value_size bytes).
inline void percpu_copy_out(const Map* m, void* dst, const PercpuCopies& v, uint64_t flags) {
  const uint32_t size = m->attr.value_size;
  auto* d = static_cast<unsigned char*>(dst);
  if (flags & kBpfFCpu) {
    copy_map_value_out(m, d, v.copy(static_cast<uint32_t>(flags >> 32)), size);
    return;
  }
  const uint32_t pcpu = (size + 7) & ~7u;
  for (uint32_t c = 0; c < v.n; c++) copy_map_value_out(m, d + uint64_t{pcpu} * c, v.copy(c), pcpu);
}

// Host update of existing copies: every copy from src in the host layout,
// one CPU's (BPF_F_CPU) or every copy from one value (BPF_F_ALL_CPUS).
// What the overwritten copies' special fields held is released.
inline void percpu_copy_in(Map* m, const PercpuCopies& v, const void* src, uint64_t flags) {
  const uint32_t size = m->attr.value_size;
  const auto* s = static_cast<const unsigned char*>(src);
  if (flags & kBpfFCpu) {
    unsigned char* d = v.copy(static_cast<uint32_t>(flags >> 32));
    copy_map_value_in(m, d, s, size);
    map_release_fields(m, d);
    return;
  }
  const uint64_t pcpu = (size + 7) & ~7u;
  for (uint32_t c = 0; c < v.n; c++) {
    if (flags & kBpfFAllCpus)
      copy_map_value_in(m, v.copy(c), s, size);
    else
      copy_map_value_in(m, v.copy(c), s + pcpu * c, pcpu);
    map_release_fields(m, v.copy(c));
  }
}

}  // namespace userbpf::maps
