// Differential test program: per-CPU map operations from a program with every
// flag and error case of SPEC.md sections 2-3 (PERCPU_ARRAY, PERCPU_HASH,
// bpf_map_lookup_percpu_elem), each return code recorded in an array map so
// the kernel's and userbpf's answers can be compared one by one. The host
// side of the test drives the same maps through bpf(2) and the userbpf API.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} pcpu_array SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} pcpu_hash SEC(".maps");

// Host-side tests only: 12-byte values (padding in the per-CPU layout).
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 8);
  __type(key, __u64);
  __type(value, char[12]);
} pcpu_hash12 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 32);
  __type(key, __u32);
  __type(value, __s64);
} codes SEC(".maps");

static __always_inline void record(__u32 idx, __s64 v) {
  __s64 *slot = bpf_map_lookup_elem(&codes, &idx);
  if (slot) *slot = v;
}

SEC("xdp")
int percpu_errnos(struct xdp_md *ctx) {
  __u64 val = 7;
  __u32 k, n = 0;
  k = 1;
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_ANY));
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_NOEXIST));
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_EXIST));
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, 3));
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_F_LOCK));
  k = 4;
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_ANY));
  record(n++, bpf_map_delete_elem(&pcpu_array, &k));
  record(n++, bpf_map_lookup_elem(&pcpu_array, &k) ? 1 : 0);
  k = 1;
  __u64 *p = bpf_map_lookup_elem(&pcpu_array, &k);
  record(n++, p ? (__s64)*p : -1);
  record(n++, bpf_map_lookup_percpu_elem(&pcpu_array, &k, 1u << 20) ? 1 : 0);
  record(n++, bpf_map_lookup_percpu_elem(&pcpu_array, &k, 0) ? 1 : 0);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    k = 10 + i;
    record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_NOEXIST));
  }
  k = 20;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_ANY));
  k = 11;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_NOEXIST));
  val = 9;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_EXIST));
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_F_LOCK));
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, 3));
  p = bpf_map_lookup_elem(&pcpu_hash, &k);
  record(n++, p ? (__s64)*p : -1);
  k = 30;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_EXIST));
  record(n++, bpf_map_delete_elem(&pcpu_hash, &k));
  k = 12;
  record(n++, bpf_map_delete_elem(&pcpu_hash, &k));
  record(n++, bpf_map_lookup_elem(&pcpu_hash, &k) ? 1 : 0);
  k = 13;
  record(n++, bpf_map_lookup_percpu_elem(&pcpu_hash, &k, 1u << 20) ? 1 : 0);
  return n;
}

char LICENSE[] SEC("license") = "GPL";
