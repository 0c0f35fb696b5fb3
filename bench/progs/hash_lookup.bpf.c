// Benchmark: HASH map lookups with 4-byte keys (u32 -> u64, 1,024 entries,
// all present), keys in a scattered order. The first run fills the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} table SEC(".maps");

__u32 filled;

static int fill(__u32 i, void *ctx) {
  __u64 v = i;
  bpf_map_update_elem(&table, &i, &v, BPF_ANY);
  return 0;
}

SEC("xdp")
int hash_lookup(struct xdp_md *ctx) {
  if (!filled) {
    bpf_loop(ENTRIES, fill, 0, 0);
    filled = 1;
  }
  __u32 hits = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = (i * 0x9e3779b1u) & (ENTRIES - 1);
    if (bpf_map_lookup_elem(&table, &key)) hits++;
  }
  return hits;
}

char LICENSE[] SEC("license") = "GPL";
