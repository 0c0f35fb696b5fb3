// Differential test program: map operations with every flag and error case
// the kernel defines, recording each return code (errno) in an array map so
// the kernel's and userbpf's answers can be compared one by one.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} small_hash SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} small_array SEC(".maps");

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
int map_errnos(struct xdp_md *ctx) {
  __u64 val = 7;
  __u32 k;
  __u32 n = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    k = i;
    record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_NOEXIST));
  }
  k = 4;
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_ANY));      /* full: E2BIG */
  k = 1;
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_NOEXIST));  /* EEXIST */
  k = 9;
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_EXIST));    /* ENOENT */
  record(n++, bpf_map_delete_elem(&small_hash, &k));                     /* ENOENT */
  k = 2;
  record(n++, bpf_map_delete_elem(&small_hash, &k));                     /* 0 */
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, 5));            /* bad flags: EINVAL */
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_EXIST));    /* deleted: ENOENT */
  val = 11;
  k = 3;
  record(n++, bpf_map_update_elem(&small_hash, &k, &val, BPF_EXIST));    /* 0 */
  __u64 *p = bpf_map_lookup_elem(&small_hash, &k);
  record(n++, p ? (__s64)*p : -1);
  k = 2;
  record(n++, bpf_map_lookup_elem(&small_hash, &k) ? 1 : 0);

  k = 1;
  record(n++, bpf_map_update_elem(&small_array, &k, &val, BPF_NOEXIST)); /* EEXIST */
  record(n++, bpf_map_update_elem(&small_array, &k, &val, BPF_EXIST));   /* 0 */
  k = 4;
  record(n++, bpf_map_update_elem(&small_array, &k, &val, BPF_ANY));     /* E2BIG */
  record(n++, bpf_map_delete_elem(&small_array, &k));                    /* EINVAL */
  k = 0;
  record(n++, bpf_map_delete_elem(&small_array, &k));                    /* EINVAL */
  record(n++, bpf_map_lookup_elem(&small_array, &k) ? 1 : 0);
  k = 100;
  record(n++, bpf_map_lookup_elem(&small_array, &k) ? 1 : 0);
  return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
