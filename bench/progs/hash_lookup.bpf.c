// Benchmark: hash map lookups (u32 key, 1,024 entries) from a program.
// Returns the number of lookups performed (ns/op = ns per run / r0).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ENTRIES 1024
#define LOOKUPS 10000

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} table SEC(".maps");

static int fill(__u32 i, void *ctx) {
  __u64 v = i;
  bpf_map_update_elem(&table, &i, &v, BPF_ANY);
  return 0;
}

SEC("syscall")
int hash_lookup(void *ctx) {
  __u32 first = 0;
  if (!bpf_map_lookup_elem(&table, &first))  // fill once; later runs only look up
    bpf_loop(ENTRIES, fill, 0, 0);
  __u64 sum = 0;
  for (__u32 i = 0; i < LOOKUPS; i++) {
    __u32 key = i & (ENTRIES - 1);
    __u64 *v = bpf_map_lookup_elem(&table, &key);
    if (v) sum += *v;
  }
  return sum ? LOOKUPS : 0;
}

char LICENSE[] SEC("license") = "GPL";
