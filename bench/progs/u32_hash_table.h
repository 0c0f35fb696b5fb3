/* Shared by the HASH and PERCPU_HASH benchmarks: a u32 -> u64 map of ENTRIES
 * elements (define ENTRIES before including; TABLE_TYPE picks the map type,
 * HASH by default), filled with key i -> value i by the first
 * run, and the scattered key order every benchmark walks. */
#ifndef USERBPF_BENCH_U32_HASH_TABLE_H
#define USERBPF_BENCH_U32_HASH_TABLE_H

#ifndef TABLE_TYPE
#define TABLE_TYPE BPF_MAP_TYPE_HASH
#endif

struct {
  __uint(type, TABLE_TYPE);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} table SEC(".maps");

__u32 filled;

static int fill(__u32 i, void* ctx) {
  __u64 v = i;
  bpf_map_update_elem(&table, &i, &v, BPF_ANY);
  return 0;
}

/* Fills the table on the first run only: later runs measure the operation. */
static __always_inline void fill_once(void) {
  if (!filled) {
    bpf_loop(ENTRIES, fill, 0, 0);
    filled = 1;
  }
}

/* The i-th key of the walk: every key once per ENTRIES steps, scattered. */
static __always_inline __u32 scattered_key(__u32 i) {
  return (i * 0x9e3779b1u) & (ENTRIES - 1);
}

#endif
