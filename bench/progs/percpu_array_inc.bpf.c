// Benchmark: PERCPU_ARRAY lookup and increment (64 u64 counters), the
// per-CPU statistics pattern.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 64
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int percpu_array_inc(struct xdp_md *ctx) {
  __u32 done = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = i & (ENTRIES - 1);
    __u64 *v = bpf_map_lookup_elem(&counters, &key);
    if (v) {
      *v += 1;
      done++;
    }
  }
  return done;
}

char LICENSE[] SEC("license") = "GPL";
