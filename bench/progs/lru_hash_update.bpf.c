// Benchmark: LRU_HASH inserts of new keys (u32 -> u64, 1,024 entries,
// BPF_ANY). Keys come from an ever-growing range, so from the second run on
// the map is full and every insert evicts: the LRU hands out an entry (its
// batch eviction unlinking the oldest elements under their bucket locks),
// the bucket is locked, the element linked, and evicted elements freed.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, ENTRIES);
  __type(key, __u32);
  __type(value, __u64);
} table SEC(".maps");

/* The first key of the next run. */
__u32 next_key;

SEC("xdp")
int lru_hash_update(struct xdp_md *ctx) {
  __u32 base = next_key;
  __u32 done = 0;
  for (__u32 i = 0; i < OPS; i++) {
    __u32 key = base + i;
    __u64 v = i;
    if (bpf_map_update_elem(&table, &key, &v, BPF_ANY) == 0) done++;
  }
  next_key = base + OPS;
  return done;
}

char LICENSE[] SEC("license") = "GPL";
