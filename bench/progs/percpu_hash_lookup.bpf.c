// Benchmark: PERCPU_HASH lookups (u32 -> u64, 1,024 entries, all present),
// keys in a scattered order. The first run fills the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

#define TABLE_TYPE BPF_MAP_TYPE_PERCPU_HASH
#include "u32_hash_table.h"

SEC("xdp")
int percpu_hash_lookup(struct xdp_md *ctx) {
  fill_once();
  __u32 hits = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = scattered_key(i);
    if (bpf_map_lookup_elem(&table, &key)) hits++;
  }
  return hits;
}

char LICENSE[] SEC("license") = "GPL";
