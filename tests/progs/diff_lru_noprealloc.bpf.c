// Differential test object: an LRU hash map with BPF_F_NO_PREALLOC, which
// the kernel refuses at creation with ENOTSUPP (524); userbpf's load must
// fail with the same code.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 8);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, __u64);
} lru_noprealloc SEC(".maps");

SEC("xdp")
int lru_noprealloc_prog(struct xdp_md *ctx) {
  __u32 k = 0;
  return bpf_map_lookup_elem(&lru_noprealloc, &k) ? 1 : 2;
}

char LICENSE[] SEC("license") = "GPL";
