// Programs for the per-CPU map tests: counting without atomics on the copy
// of the CPU slot a run holds (exactness), counters whose two halves must
// always be equal (torn reads), bpf_map_lookup_percpu_elem and
// bpf_get_smp_processor_id, program updates, for_each on a per-CPU map, and
// the program-side errnos of PERCPU_ARRAY and PERCPU_HASH.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
  __u32 key;
  __u32 cpu;
  __u64 n;    // iterations
  __u64 out;  // result
};

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

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} plain_hash SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 32);
  __type(key, __u32);
  __type(value, __s64);
} codes SEC(".maps");

#define MAX_ITERS (1 << 20)

// args->n increments of key args->key in both maps; returns the CPU slot.
SEC("raw_tp")
int count(struct args *a) {
  __u32 key = a->key;
  for (__u32 i = 0; i < MAX_ITERS && i < a->n; i++) {
    __u64 *v = bpf_map_lookup_elem(&pcpu_array, &key);
    if (v) *v += 1;
    __u64 *h = bpf_map_lookup_elem(&pcpu_hash, &key);
    if (!h) {
      __u64 one = 1;
      if (bpf_map_update_elem(&pcpu_hash, &key, &one, BPF_NOEXIST) == 0) continue;
      h = bpf_map_lookup_elem(&pcpu_hash, &key);
      if (!h) return -1;
    }
    *h += 1;
  }
  return bpf_get_smp_processor_id();
}

// Sleepable: the copy of slot % N (the CPU bpf_get_smp_processor_id reports).
SEC("syscall")
int count_sleepable(struct args *a) {
  __u32 key = a->key;
  __u64 *v = bpf_map_lookup_elem(&pcpu_array, &key);
  if (v) *v += 1;
  a->out = bpf_get_smp_processor_id();
  return 0;
}

// args->n steps of a counter whose high and low 32-bit halves are equal
// after every store: a host read that sees them differ saw a torn word.
SEC("raw_tp")
int paired(struct args *a) {
  __u32 key = a->key;
  for (__u32 i = 0; i < MAX_ITERS && i < a->n; i++) {
    __u64 *v = bpf_map_lookup_elem(&pcpu_array, &key);
    if (!v) return -1;
    __u32 lo = (__u32)*v + 1;
    *v = ((__u64)lo << 32) | lo;
    __u64 *h = bpf_map_lookup_elem(&pcpu_hash, &key);
    if (h) {
      lo = (__u32)*h + 1;
      *h = ((__u64)lo << 32) | lo;
    }
  }
  return 0;
}

// args->out = CPU args->cpu's copy of args->key in both maps (array in the
// low half, hash in the high half), ~0 halves where there is none.
SEC("raw_tp")
int read_cpu(struct args *a) {
  __u32 key = a->key;
  __u64 *v = bpf_map_lookup_percpu_elem(&pcpu_array, &key, a->cpu);
  __u64 *h = bpf_map_lookup_percpu_elem(&pcpu_hash, &key, a->cpu);
  __u64 lo = v ? (__u32)*v : 0xffffffffu;
  __u64 hi = h ? (__u32)*h : 0xffffffffu;
  a->out = (hi << 32) | lo;
  return 0;
}

// Writes args->n into CPU args->cpu's copy of args->key through
// bpf_map_lookup_percpu_elem (another CPU's copy is writable too).
SEC("raw_tp")
int write_cpu(struct args *a) {
  __u32 key = a->key;
  __u64 *v = bpf_map_lookup_percpu_elem(&pcpu_array, &key, a->cpu);
  if (!v) return -1;
  *v = a->n;
  return 0;
}

// A program update of both maps: only this CPU's copy; a new hash element
// reads 0 on the other CPUs. Returns the CPU slot.
SEC("raw_tp")
int update_own(struct args *a) {
  __u32 key = a->key;
  __u64 val = a->n;
  if (bpf_map_update_elem(&pcpu_array, &key, &val, BPF_ANY)) return -1;
  if (bpf_map_update_elem(&pcpu_hash, &key, &val, BPF_ANY)) return -2;
  return bpf_get_smp_processor_id();
}

static long sum_cb(void *map, __u32 *key, __u64 *val, void *ctx) {
  *(__u64 *)ctx += *val;
  return 0;
}

// for_each over both maps: the values this CPU's copies hold, summed.
SEC("raw_tp")
int sum_own(struct args *a) {
  __u64 total = 0;
  bpf_for_each_map_elem(&pcpu_array, sum_cb, &total, 0);
  bpf_for_each_map_elem(&pcpu_hash, sum_cb, &total, 0);
  a->out = total;
  return 0;
}

// bpf_map_lookup_percpu_elem on a map that is not per-CPU (the kernel's
// verifier refuses it): the run stops.
SEC("raw_tp")
int percpu_on_plain(struct args *a) {
  __u32 key = 0;
  return bpf_map_lookup_percpu_elem(&plain_hash, &key, 0) ? 1 : 0;
}

static __always_inline void record(__u32 idx, __s64 v) {
  __s64 *slot = bpf_map_lookup_elem(&codes, &idx);
  if (slot) *slot = v;
}

// Program-side errnos (SPEC.md sections 2-3) in codes[0..].
SEC("raw_tp")
int errnos(struct args *a) {
  __u64 val = 7;
  __u32 k, n = 0;
  k = 1;
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_ANY));      /* 0 */
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_NOEXIST));  /* EEXIST */
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_EXIST));    /* 0 */
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, 3));            /* EINVAL */
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_F_LOCK));   /* EINVAL */
  k = 4;
  record(n++, bpf_map_update_elem(&pcpu_array, &k, &val, BPF_ANY));      /* E2BIG */
  record(n++, bpf_map_delete_elem(&pcpu_array, &k));                     /* EINVAL */
  record(n++, bpf_map_lookup_elem(&pcpu_array, &k) ? 1 : 0);             /* 0 */
  k = 0;
  record(n++, bpf_map_delete_elem(&pcpu_array, &k));                     /* EINVAL */
  record(n++, bpf_map_lookup_percpu_elem(&pcpu_array, &k, 1u << 20) ? 1 : 0); /* 0 */
#pragma unroll
  for (int i = 0; i < 4; i++) {
    k = 10 + i;
    record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_NOEXIST));   /* 0 x4 */
  }
  k = 20;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_ANY));       /* E2BIG */
  k = 11;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_NOEXIST));   /* EEXIST */
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_EXIST));     /* 0 */
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_F_LOCK));    /* EINVAL */
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, 3));             /* EINVAL */
  k = 30;
  record(n++, bpf_map_update_elem(&pcpu_hash, &k, &val, BPF_EXIST));     /* ENOENT */
  record(n++, bpf_map_delete_elem(&pcpu_hash, &k));                      /* ENOENT */
  k = 12;
  record(n++, bpf_map_delete_elem(&pcpu_hash, &k));                      /* 0 */
  record(n++, bpf_map_lookup_elem(&pcpu_hash, &k) ? 1 : 0);              /* 0 */
  k = 13;
  record(n++, bpf_map_lookup_percpu_elem(&pcpu_hash, &k, 1u << 20) ? 1 : 0); /* 0 */
  __u64 *p = bpf_map_lookup_elem(&pcpu_hash, &k);
  record(n++, p ? (__s64)*p : -1);                                       /* 7 */
  return n;
}

char LICENSE[] SEC("license") = "GPL";
