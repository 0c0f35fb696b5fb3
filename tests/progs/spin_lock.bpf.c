// Programs for the bpf_spin_lock tests (tests/api/spin_lock_test.cc):
// counters whose two halves are only changed together under the value's
// lock, a critical section that waits for the host (to interrupt holders
// with signals), and the misuses the kernel's verifier would refuse, which
// userbpf stops at run time. raw_tp programs take a struct args context, so
// this object is for userbpf only (the kernel refuses spin locks in tracing
// programs); diff_spin_lock.bpf.c is the kernel-loadable one.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
  struct bpf_spin_lock lock;
  __u32 tag;
  __u64 a;
  __u64 b;
};

struct args {
  __u32 key;
  __u32 which;  // 0: lock_array, 1: lock_hash
  __u64 n;      // iterations
  __u64 out;
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, struct val);
} lock_array SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16);
  __type(key, __u32);
  __type(value, struct val);
} lock_hash SEC(".maps");

// ctl[0] != 0 lets hold() leave its critical section.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} ctl SEC(".maps");

#define MAX_ITERS (1 << 24)

static __always_inline struct val *pick(struct args *a) {
  __u32 key = a->key;
  if (a->which) return bpf_map_lookup_elem(&lock_hash, &key);
  return bpf_map_lookup_elem(&lock_array, &key);
}

// n times: lock; a++; b++; unlock. Returns 0, or -1 without a value.
SEC("raw_tp")
int bump(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  for (__u64 i = 0; i < MAX_ITERS && i < a->n; i++) {
    bpf_spin_lock(&v->lock);
    v->a++;
    v->b++;
    bpf_spin_unlock(&v->lock);
  }
  return 0;
}

// Reads both halves under the lock: 1 if they differ.
SEC("raw_tp")
int torn(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_lock(&v->lock);
  __u64 x = v->a, y = v->b;
  bpf_spin_unlock(&v->lock);
  a->out = x;
  return x != y;
}

// Takes the lock and keeps it until the host sets ctl[0], then bumps.
SEC("raw_tp")
int hold(struct args *a) {
  __u32 zero = 0;
  __u64 *go = bpf_map_lookup_elem(&ctl, &zero);
  struct val *v = pick(a);
  if (!v || !go) return -1;
  bpf_spin_lock(&v->lock);
  __u64 i = 0;
  // An atomic read: the host sets ctl[0] concurrently.
  while (__sync_fetch_and_add(go, 0) == 0 && i < (1ull << 40)) i++;
  v->a++;
  v->b++;
  bpf_spin_unlock(&v->lock);
  return 0;
}

// ---- misuses: the kernel's verifier refuses these; userbpf stops the run.

SEC("raw_tp")
int lock_twice(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_lock(&v->lock);
  bpf_spin_lock(&v->lock);
  bpf_spin_unlock(&v->lock);
  return 0;
}

SEC("raw_tp")
int lock_two(struct args *a) {
  __u32 k0 = 0, k1 = 1;
  struct val *v = bpf_map_lookup_elem(&lock_array, &k0);
  struct val *w = bpf_map_lookup_elem(&lock_array, &k1);
  if (!v || !w) return -1;
  bpf_spin_lock(&v->lock);
  bpf_spin_lock(&w->lock);
  bpf_spin_unlock(&w->lock);
  bpf_spin_unlock(&v->lock);
  return 0;
}

// Returns holding the lock.
SEC("raw_tp")
int no_unlock(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_lock(&v->lock);
  v->a++;
  v->b++;
  return 0;
}

SEC("raw_tp")
int unlock_only(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_unlock(&v->lock);
  return 0;
}

SEC("raw_tp")
int unlock_other(struct args *a) {
  __u32 k0 = 0, k1 = 1;
  struct val *v = bpf_map_lookup_elem(&lock_array, &k0);
  struct val *w = bpf_map_lookup_elem(&lock_array, &k1);
  if (!v || !w) return -1;
  bpf_spin_lock(&v->lock);
  bpf_spin_unlock(&w->lock);
  return 0;
}

SEC("raw_tp")
int lock_stack(struct args *a) {
  struct bpf_spin_lock l = {};
  bpf_spin_lock(&l);
  bpf_spin_unlock(&l);
  return 0;
}

// A pointer into the value that is not its lock.
SEC("raw_tp")
int lock_not_field(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_lock((struct bpf_spin_lock *)&v->a);
  bpf_spin_unlock((struct bpf_spin_lock *)&v->a);
  return 0;
}

// A map update inside the critical section.
SEC("raw_tp")
int update_under_lock(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  struct val nv = {};
  __u32 key = 2;
  bpf_spin_lock(&v->lock);
  long r = bpf_map_update_elem(&lock_array, &key, &nv, BPF_ANY);
  bpf_spin_unlock(&v->lock);
  return r;
}

// A bad access inside the critical section: the run faults holding the lock.
// The address is in the never-mapped first page: one relative to v (v + 1
// MiB once) can land in another map's memory, which the run may read.
SEC("raw_tp")
int fault_under_lock(struct args *a) {
  struct val *v = pick(a);
  if (!v) return -1;
  bpf_spin_lock(&v->lock);
  v->a++;
  v->b += *(volatile __u64 *)8ul;
  bpf_spin_unlock(&v->lock);
  return 0;
}

// Program-side BPF_F_LOCK update of the value (a = b = n, out = result).
SEC("raw_tp")
int locked_update(struct args *a) {
  struct val nv = {};
  __u32 key = a->key;
  nv.a = a->n;
  nv.b = a->n;
  nv.tag = 7;
  if (a->which)
    a->out = bpf_map_update_elem(&lock_hash, &key, &nv, BPF_F_LOCK);
  else
    a->out = bpf_map_update_elem(&lock_array, &key, &nv, BPF_F_LOCK);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
