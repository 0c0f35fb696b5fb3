// Benchmark: bpf_obj_new + bpf_obj_drop of a 16-byte object (the kernel's
// bpf_mem_alloc fast path from a program).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define OPS 1024
USERBPF_BENCH_OPS(OPS);

// Declared here: Debian's libbpf 1.1 has no bpf_experimental.h.
extern void* bpf_obj_new_impl(__u64 local_type_id__k, void* meta__ign) __ksym;
extern void bpf_obj_drop_impl(void* kptr, void* meta__ign) __ksym;

struct node {
  __u64 a;
  __u64 b;
};

SEC("xdp")
int obj_new_drop(struct xdp_md* ctx) {
  __u32 done = 0;
  for (__u32 i = 0; i < OPS; i++) {
    struct node* n = bpf_obj_new_impl(bpf_core_type_id_local(struct node), 0);
    if (!n) continue;
    n->a = i;
    bpf_obj_drop_impl(n, 0);
    done++;
  }
  return done;
}

char LICENSE[] SEC("license") = "GPL";
