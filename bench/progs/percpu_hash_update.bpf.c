// Benchmark: PERCPU_HASH updates of existing keys (u32 -> u64, 1,024 entries,
// BPF_ANY): each writes this CPU's copy in place. The first run fills the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

#define TABLE_TYPE BPF_MAP_TYPE_PERCPU_HASH
#include "u32_hash_table.h"

SEC("xdp")
int percpu_hash_update(struct xdp_md *ctx) {
  fill_once();
  __u32 done = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = scattered_key(i);
    __u64 v = i;
    if (bpf_map_update_elem(&table, &key, &v, BPF_ANY) == 0) done++;
  }
  return done;
}

char LICENSE[] SEC("license") = "GPL";
