// bpf_obj_new / bpf_obj_drop, kptr fields exchanged with bpf_kptr_xchg in a
// hash and an array map value, per-CPU objects, and the misuses the kernel's
// verifier would reject (which userbpf stops at run time).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

struct node {
  __u64 a;
  __u64 b;
};

struct val {
  __u64 x;
  struct node __kptr* ptr;
  __u64 y;
};

struct pcnode {
  __u64 cnt;
};

struct big {
  __u64 w[25];  // 200 bytes: the 256-byte class
};

struct pval {
  struct pcnode __percpu_kptr* pc;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, struct val);
} kptr_hash SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, struct val);
} kptr_array SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct pval);
} pcpu_array SEC(".maps");

struct args {
  __u32 key;
  __u32 pad;
  __u64 val;
  __u64 out;
};

static struct val* hash_val(__u32 key) {
  struct val zero = {};
  struct val* v = bpf_map_lookup_elem(&kptr_hash, &key);
  if (v) return v;
  bpf_map_update_elem(&kptr_hash, &key, &zero, BPF_NOEXIST);
  return bpf_map_lookup_elem(&kptr_hash, &key);
}

// A new object, written and read back through its pointer, then dropped.
SEC("syscall")
int new_drop(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return 1;
  if (n->a != 0 || n->b != 0) return 3;  // objects start zeroed
  n->a = a->val;
  n->b = n->a + 1;
  a->out = n->b;
  bpf_obj_drop(n);
  return 0;
}

// First HELD objects at once (the slot's list runs dry and takes the
// worker's refill, so it ends above its low watermark), then pairs of
// objects allocated, written, read back and dropped (the JIT inlines both
// calls when no call separates them, which it does only above the low
// watermark): every new object starts zeroed even when its memory was just
// dropped dirty. out = the sum of 3 * i over the iterations; r0 -1 on NULL,
// -3 on a dirty object.
#define HELD 40
SEC("syscall")
int new_drop_many(struct args* a) {
  struct node* held[HELD];
  __u32 got = 0;
  for (; got < HELD; got++) {
    held[got] = bpf_obj_new(struct node);
    if (!held[got]) break;
  }
  for (__u32 i = 0; i < HELD; i++)
    if (i < got) bpf_obj_drop(held[i]);
  if (got < HELD) return -1;
  __u64 sum = 0;
  for (__u32 i = 0; i < 64; i++) {
    struct node* n = bpf_obj_new(struct node);
    if (!n) return -1;
    struct node* m = bpf_obj_new(struct node);
    if (!m) {
      bpf_obj_drop(n);
      return -1;
    }
    int dirty = (n->a | n->b | m->a | m->b) != 0;
    n->a = i;
    m->b = 2 * i;
    sum += n->a + m->b;
    n->b = 7;
    m->a = 9;
    bpf_obj_drop(m);
    bpf_obj_drop(n);
    if (dirty) return -3;
  }
  a->out = sum;
  return 0;
}

// Objects allocated and dropped in a loop, no call between: the
// interpreter keeps each dropped one for the next new (run_frames' kept
// object). Each must start zeroed although the last one was dropped dirty.
// r0: -1 on NULL, -3 if one was not zeroed (out: the bits found).
SEC("syscall")
int new_drop_loop(struct args* a) {
  __u64 dirty = 0;
  for (__u32 i = 0; i < 32; i++) {
    struct node* n = bpf_obj_new(struct node);
    if (!n) return -1;
    dirty |= n->a | n->b;
    n->a = a->val + i;
    n->b = ~0ull;
    bpf_obj_drop(n);
  }
  a->out = dirty;
  return dirty ? -3 : 0;
}

// bpf_obj_drop of what bpf_obj_new returned, NULL included (a no-op).
SEC("syscall")
int new_drop_unchecked(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  bpf_obj_drop(n);
  return 0;
}

// Stores a new object holding val in the element's kptr field; the previous
// object (if any) is read into out and dropped. r0: 1 if there was one.
static int stash(struct val* v, struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  n->a = a->val;
  n->b = a->val * 2;
  struct node* old = bpf_kptr_xchg(&v->ptr, n);
  if (!old) return 0;
  a->out = old->a;
  int bad = old->b != old->a * 2;
  bpf_obj_drop(old);
  return bad ? -9 : 1;
}

// The object in the field, read through a plain load of the kptr. r0: 1 if
// there is one (a->out = its a + b).
static int peek(struct val* v, struct args* a) {
  struct node* p = v->ptr;
  if (!p) return 0;
  __u64 x = p->a, y = p->b;
  a->out = x + y;
  return y == x * 2 ? 1 : -9;
}

// Takes the object out (read into out) and drops it. r0: 1 if there was one.
static int take(struct val* v, struct args* a) {
  struct node* old = bpf_kptr_xchg(&v->ptr, 0);
  if (!old) return 0;
  a->out = old->a;
  int bad = old->b != old->a * 2;
  bpf_obj_drop(old);
  return bad ? -9 : 1;
}

SEC("syscall")
int stash_hash(struct args* a) {
  struct val* v = hash_val(a->key);
  return v ? stash(v, a) : -2;
}

SEC("syscall")
int peek_hash(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_hash, &a->key);
  return v ? peek(v, a) : -2;
}

SEC("syscall")
int take_hash(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_hash, &a->key);
  return v ? take(v, a) : -2;
}

SEC("syscall")
int stash_array(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  return v ? stash(v, a) : -2;
}

SEC("syscall")
int peek_array(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  return v ? peek(v, a) : -2;
}

SEC("syscall")
int take_array(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  return v ? take(v, a) : -2;
}

// Misuses: each stops the run.

// Returns holding a new object (the kernel's verifier: unreleased reference).
SEC("syscall")
int new_leak(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  n->a = a->val;
  return 0;
}

// Returns holding the object it took out of the array element.
SEC("syscall")
int take_leak(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  if (!v) return -2;
  struct node* old = bpf_kptr_xchg(&v->ptr, 0);
  return old ? 1 : 0;
}

// Faults (a load at a->val: 8 is a null pointer) while holding a new object.
SEC("syscall")
int new_fault(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  n->a = *(volatile __u64*)(unsigned long)a->val;
  bpf_obj_drop(n);
  return 0;
}

// Holds objects of every kind, then returns (a->val 0) or faults on a load
// at a->val: two new objects of two size classes, a new per-CPU object and
// the object taken out of kptr_array[key] (if any; r0 1 then). r0 -1 if an
// allocation failed (holding nothing).
SEC("syscall")
int leak_many(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  struct big* b = bpf_obj_new(struct big);
  if (!b) {
    bpf_obj_drop(n);
    return -1;
  }
  struct pcnode __percpu_kptr* p = bpf_percpu_obj_new(struct pcnode);
  if (!p) {
    bpf_obj_drop(b);
    bpf_obj_drop(n);
    return -1;
  }
  n->a = 1;
  b->w[24] = 2;
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  struct node* old = v ? bpf_kptr_xchg(&v->ptr, 0) : 0;
  if (a->val) a->out = *(volatile __u64*)(unsigned long)a->val;
  return old ? 1 : 0;
}

SEC("syscall")
int xchg_plain_field(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  if (!v) return -2;
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  struct node* old = bpf_kptr_xchg((struct node**)&v->x, n);  // not a kptr field
  if (old) bpf_obj_drop(old);
  return 0;
}

SEC("syscall")
int xchg_stack(struct args* a) {
  struct node* slot = 0;
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  struct node* old = bpf_kptr_xchg(&slot, n);
  if (old) bpf_obj_drop(old);
  return 0;
}

SEC("syscall")
int double_drop(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  bpf_obj_drop(n);
  bpf_obj_drop(n);
  return 0;
}

SEC("syscall")
int drop_stored(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  if (!v) return -2;
  struct node* p = v->ptr;
  if (!p) return 0;
  bpf_obj_drop(p);  // still in the map: not the program's to drop
  return 1;
}

SEC("syscall")
int drop_forged(struct args* a) {
  bpf_obj_drop((void*)(unsigned long)a->val);
  return 0;
}

SEC("syscall")
int past_object(struct args* a) {
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  volatile __u64* q = (volatile __u64*)n;
  __u64 i = a->val;  // 2: just past the 16 bytes
  q[i] = 1;
  bpf_obj_drop(n);
  return 0;
}

// The object just allocated (the engines know it from the allocation,
// maps::ObjMemo, and skip the page lookup when it is dropped), stored in
// kptr_array[key], then dropped: stored, it is not the program's to drop.
SEC("syscall")
int stash_then_drop(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  if (!v) return -2;
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  n->a = a->val;
  n->b = a->val * 2;
  struct node* old = bpf_kptr_xchg(&v->ptr, n);
  if (old) bpf_obj_drop(old);
  bpf_obj_drop(n);
  return 0;
}

// The object just allocated, stored in kptr_array[key] and taken straight
// back out, then dropped: the program's again, but published (another run
// may have loaded it meanwhile), so it waits for a grace period. r0 -3 if
// what came out is not the object that went in.
SEC("syscall")
int stash_take_drop(struct args* a) {
  struct val* v = bpf_map_lookup_elem(&kptr_array, &a->key);
  if (!v) return -2;
  struct node* n = bpf_obj_new(struct node);
  if (!n) return -1;
  struct node* old = bpf_kptr_xchg(&v->ptr, n);
  if (old) bpf_obj_drop(old);
  old = bpf_kptr_xchg(&v->ptr, 0);
  if (old != n) {
    if (old) bpf_obj_drop(old);
    return -3;
  }
  bpf_obj_drop(n);
  return 0;
}

// Per-CPU objects: a new one with this CPU's copy set to val, stored in
// pcpu_array[0] (the previous one dropped).
SEC("syscall")
int pc_stash(struct args* a) {
  __u32 zero = 0;
  struct pval* v = bpf_map_lookup_elem(&pcpu_array, &zero);
  if (!v) return -2;
  struct pcnode __percpu_kptr* p = bpf_percpu_obj_new(struct pcnode);
  if (!p) return -1;
  struct pcnode* c = bpf_this_cpu_ptr(p);
  c->cnt = a->val;
  p = bpf_kptr_xchg(&v->pc, p);
  if (p) bpf_percpu_obj_drop(p);
  return 0;
}

// Sum over every CPU's copy of the stored per-CPU object.
SEC("syscall")
int pc_sum(struct args* a) {
  __u32 zero = 0;
  struct pval* v = bpf_map_lookup_elem(&pcpu_array, &zero);
  if (!v) return -2;
  struct pcnode __percpu_kptr* p = v->pc;
  if (!p) return 0;
  __u64 sum = 0;
  for (__u32 cpu = 0; cpu < 256; cpu++) {
    struct pcnode* c = bpf_per_cpu_ptr(p, cpu);
    if (!c) break;
    sum += c->cnt;
  }
  a->out = sum;
  return 1;
}

// A per-CPU object allocated and dropped in one run.
SEC("syscall")
int pc_new_drop(struct args* a) {
  struct pcnode __percpu_kptr* p = bpf_percpu_obj_new(struct pcnode);
  if (!p) return -1;
  struct pcnode* c = bpf_this_cpu_ptr(p);
  c->cnt = a->val;
  a->out = c->cnt;
  bpf_percpu_obj_drop(p);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
