// Benchmark: HASH map delete followed by insert of the same key (u32 -> u64,
// 1,024 entries): one op is the pair. The first run fills the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

#include "u32_hash_table.h"

SEC("xdp")
int hash_delete_insert(struct xdp_md *ctx) {
  fill_once();
  __u32 done = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = scattered_key(i);
    __u64 v = i;
    if (bpf_map_delete_elem(&table, &key) == 0 &&
        bpf_map_update_elem(&table, &key, &v, BPF_NOEXIST) == 0)
      done++;
  }
  return done;
}

char LICENSE[] SEC("license") = "GPL";
