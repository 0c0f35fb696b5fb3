// Loader error object: a map definition with a field libbpf does not know.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, __u32);
  __uint(max_entries, 4);
  __uint(colour, 3);
} odd SEC(".maps");

SEC("syscall")
int prog(void *ctx) { return bpf_map_lookup_elem(&odd, &(__u32){0}) != 0; }

char LICENSE[] SEC("license") = "GPL";
