// Differential test program (KernelDiff.SpinLockMatchesKernel): bpf_spin_lock
// in ARRAY and HASH values, program-side BPF_F_LOCK updates with every flag
// and error case, each return code recorded in an array map, and maps
// without a lock for the host's EINVAL cases. XDP programs, so the kernel's
// verifier accepts the locks (it refuses them in tracing programs).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
  struct bpf_spin_lock lock;
  __u32 tag;
  __u64 a;
  __u64 b;
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, struct val);
} lock_array SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8);
  __type(key, __u32);
  __type(value, struct val);
} lock_hash SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} plain_array SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} plain_hash SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 16);
  __type(key, __u32);
  __type(value, __s64);
} codes SEC(".maps");

static __always_inline void record(__u32 idx, __s64 v) {
  __s64 *slot = bpf_map_lookup_elem(&codes, &idx);
  if (slot) *slot = v;
}

// One lock/increment/unlock of key 0 in each map; XDP_PASS, or XDP_DROP
// when the hash has no key 0 yet.
SEC("xdp")
int bump(struct xdp_md *ctx) {
  __u32 key = 0;
  struct val *v = bpf_map_lookup_elem(&lock_array, &key);
  if (!v) return XDP_ABORTED;
  bpf_spin_lock(&v->lock);
  v->a++;
  v->b += 2;
  bpf_spin_unlock(&v->lock);
  struct val *h = bpf_map_lookup_elem(&lock_hash, &key);
  if (!h) return XDP_DROP;
  bpf_spin_lock(&h->lock);
  h->a += 3;
  h->b += 4;
  bpf_spin_unlock(&h->lock);
  return XDP_PASS;
}

// Program-side updates with BPF_F_LOCK: every code into codes[i].
SEC("xdp")
int lock_updates(struct xdp_md *ctx) {
  struct val nv = {};
  __u64 one = 1;
  __u32 k0 = 0, k1 = 1, k5 = 5, k6 = 6, k9 = 9;
  nv.tag = 0x11;
  nv.a = 100;
  nv.b = 200;
  record(0, bpf_map_update_elem(&lock_array, &k1, &nv, BPF_F_LOCK));
  record(1, bpf_map_update_elem(&lock_array, &k1, &nv, BPF_F_LOCK | BPF_NOEXIST));
  nv.a = 101;
  record(2, bpf_map_update_elem(&lock_array, &k1, &nv, BPF_F_LOCK | BPF_EXIST));
  record(3, bpf_map_update_elem(&lock_array, &k9, &nv, BPF_F_LOCK));
  record(4, bpf_map_update_elem(&plain_array, &k0, &one, BPF_F_LOCK));
  nv.tag = 0x22;
  record(5, bpf_map_update_elem(&lock_hash, &k5, &nv, BPF_F_LOCK));
  nv.b = 202;
  record(6, bpf_map_update_elem(&lock_hash, &k5, &nv, BPF_F_LOCK));
  record(7, bpf_map_update_elem(&lock_hash, &k5, &nv, BPF_F_LOCK | BPF_NOEXIST));
  record(8, bpf_map_update_elem(&lock_hash, &k6, &nv, BPF_F_LOCK | BPF_EXIST));
  record(9, bpf_map_update_elem(&plain_hash, &k1, &one, BPF_F_LOCK));
  record(10, bpf_map_update_elem(&lock_hash, &k5, &nv, 8));
  record(11, bpf_map_update_elem(&lock_array, &k1, &nv, BPF_F_LOCK | 8));
  nv.a = 7;
  record(12, bpf_map_update_elem(&lock_hash, &k6, &nv, BPF_ANY));
  nv.a = 8;
  record(13, bpf_map_update_elem(&lock_hash, &k6, &nv, BPF_F_LOCK | BPF_EXIST));
  return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
