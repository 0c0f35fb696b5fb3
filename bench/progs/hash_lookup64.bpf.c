// Benchmark: HASH map lookups with 64-byte keys (1,024 entries, all
// present): the cost of hashing and comparing a long key. The first run
// fills the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ENTRIES 1024
#define OPS 1024
USERBPF_BENCH_OPS(OPS);

struct key64 {
  __u32 w[16];
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, ENTRIES);
  __type(key, struct key64);
  __type(value, __u64);
} table SEC(".maps");

__u32 filled;

static void init_key(struct key64 *k) {
  for (int j = 0; j < 16; j++) k->w[j] = 0x01010101u * j;
}

static int fill(__u32 i, void *ctx) {
  struct key64 k;
  __u64 v = i;
  init_key(&k);
  k.w[0] = i;
  bpf_map_update_elem(&table, &k, &v, BPF_ANY);
  return 0;
}

SEC("xdp")
int hash_lookup64(struct xdp_md *ctx) {
  if (!filled) {
    bpf_loop(ENTRIES, fill, 0, 0);
    filled = 1;
  }
  struct key64 k;
  init_key(&k);
  __u32 hits = 0;
  for (__u32 i = 0; i < OPS; i++) {
    k.w[0] = (i * 0x9e3779b1u) & (ENTRIES - 1);
    if (bpf_map_lookup_elem(&table, &k)) hits++;
  }
  return hits;
}

char LICENSE[] SEC("license") = "GPL";
