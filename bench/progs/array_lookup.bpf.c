// Benchmark: ARRAY map lookups (u32 key, u64 value, 1,024 entries), keys in
// a scattered order (an odd multiplier permutes 0..1023).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} table SEC(".maps");

SEC("xdp")
int array_lookup(struct xdp_md *ctx) {
  __u32 hits = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = (i * 0x9e3779b1u) & (ENTRIES - 1);
    __u64 *v = bpf_map_lookup_elem(&table, &key);
    if (v) {
      *v += 1;
      hits++;
    }
  }
  return hits;
}

char LICENSE[] SEC("license") = "GPL";
