// Loader error object: key_size contradicts the key type's size.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(key_size, 8);
  __type(key, __u32);
  __type(value, __u32);
  __uint(max_entries, 4);
} conflicting SEC(".maps");

SEC("syscall")
int prog(void *ctx) { return bpf_map_lookup_elem(&conflicting, &(__u32){0}) != 0; }

char LICENSE[] SEC("license") = "GPL";
