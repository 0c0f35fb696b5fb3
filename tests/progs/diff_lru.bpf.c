// Differential test program: LRU hash maps (LRU_HASH, LRU_PERCPU_HASH, with
// the common list and with per-CPU lists) driven from programs: the errno
// table of SPEC.md sections 2-3 recorded in an array map, and programs that
// look up (mark) or insert keys the host lists in the packet, so the host
// side of the test can replay one sequence in the kernel and in userbpf and
// compare which keys the LRU kept.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define LRU_MAP(name, map_type, flags) \
  struct {                             \
    __uint(type, map_type);            \
    __uint(max_entries, 8);            \
    __uint(map_flags, flags);          \
    __type(key, __u32);                \
    __type(value, __u64);              \
  } name SEC(".maps")

LRU_MAP(lru_hash, BPF_MAP_TYPE_LRU_HASH, 0);
LRU_MAP(lru_pcpu, BPF_MAP_TYPE_LRU_PERCPU_HASH, 0);
LRU_MAP(lru_hash_nc, BPF_MAP_TYPE_LRU_HASH, BPF_F_NO_COMMON_LRU);
LRU_MAP(lru_pcpu_nc, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_F_NO_COMMON_LRU);

// Host side only: max_entries 5 with per-CPU lists is rounded up to a
// multiple of the CPUs.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 5);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __type(key, __u32);
  __type(value, __u64);
} lru_round SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 48);
  __type(key, __u32);
  __type(value, __s64);
} codes SEC(".maps");

static __always_inline void record(__u32 idx, __s64 v) {
  __s64 *slot = bpf_map_lookup_elem(&codes, &idx);
  if (slot) *slot = v;
}

// The same errno checks on one map, from n on; returns the next index.
static __always_inline __u32 errnos_of(void *map, __u32 n) {
  __u64 val = 7;
  __u32 k = 1;
  record(n++, bpf_map_update_elem(map, &k, &val, BPF_NOEXIST));
  record(n++, bpf_map_update_elem(map, &k, &val, BPF_NOEXIST));
  record(n++, bpf_map_update_elem(map, &k, &val, BPF_EXIST));
  record(n++, bpf_map_update_elem(map, &k, &val, 3));
  record(n++, bpf_map_update_elem(map, &k, &val, BPF_F_LOCK));
  k = 2;
  record(n++, bpf_map_update_elem(map, &k, &val, BPF_EXIST));
  record(n++, bpf_map_delete_elem(map, &k));
  record(n++, bpf_map_lookup_elem(map, &k) ? 1 : 0);
  k = 1;
  __u64 *p = bpf_map_lookup_elem(map, &k);
  record(n++, p ? (__s64)*p : -1);
  record(n++, bpf_map_delete_elem(map, &k));
  record(n++, bpf_map_lookup_elem(map, &k) ? 1 : 0);
  return n;
}

SEC("xdp")
int lru_errnos(struct xdp_md *ctx) {
  __u32 n = 0;
  n = errnos_of(&lru_hash, n);
  n = errnos_of(&lru_pcpu, n);
  __u32 k = 10;
  record(n++, bpf_map_lookup_percpu_elem(&lru_pcpu, &k, 1u << 20) ? 1 : 0);
  return n;
}

// A full map never answers E2BIG: 20 inserts into 8 entries all succeed
// (returns 20, or the return codes or-ed together).
static int fill_one(__u32 i, void *ctx) {
  __s64 *rcs = ctx;
  __u32 k = 10 + i;
  __u64 v = k;
  *rcs |= bpf_map_update_elem(&lru_hash, &k, &v, BPF_ANY);
  *rcs |= bpf_map_update_elem(&lru_pcpu, &k, &v, BPF_ANY);
  return 0;
}

SEC("xdp")
int lru_fill(struct xdp_md *ctx) {
  __s64 rcs = 0;
  bpf_loop(20, fill_one, &rcs, 0);
  return rcs ? (int)rcs : 20;
}

// Packet: u32 map (0 lru_hash, 1 lru_pcpu, 2 lru_hash_nc, 3 lru_pcpu_nc),
// u32 count, count u32 keys (at most 16). lru_touch looks each key up
// (marking it used) and returns the hits; lru_put inserts each key (value =
// key, BPF_ANY) and returns the number of successful updates.
static __always_inline int keys_of(void *map, __u32 *w, void *end, int put) {
  __u32 cnt = w[1];
  int done = 0;
  for (__u32 i = 0; i < 16; i++) {
    if (i >= cnt) break;
    __u32 *kp = w + 2 + i;
    if ((void *)(kp + 1) > end) break;
    __u32 key = *kp;
    if (put) {
      __u64 v = key;
      if (bpf_map_update_elem(map, &key, &v, BPF_ANY) == 0) done++;
    } else if (bpf_map_lookup_elem(map, &key)) {
      done++;
    }
  }
  return done;
}

static __always_inline int for_keys(struct xdp_md *ctx, int put) {
  void *data = (void *)(long)ctx->data;
  void *end = (void *)(long)ctx->data_end;
  __u32 *w = data;
  if ((void *)(w + 2) > end) return -1;
  switch (w[0]) {
    case 0:
      return keys_of(&lru_hash, w, end, put);
    case 1:
      return keys_of(&lru_pcpu, w, end, put);
    case 2:
      return keys_of(&lru_hash_nc, w, end, put);
    default:
      return keys_of(&lru_pcpu_nc, w, end, put);
  }
}

SEC("xdp")
int lru_touch(struct xdp_md *ctx) {
  return for_keys(ctx, 0);
}

SEC("xdp")
int lru_put(struct xdp_md *ctx) {
  return for_keys(ctx, 1);
}

char LICENSE[] SEC("license") = "GPL";
