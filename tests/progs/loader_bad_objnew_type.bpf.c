// Loader error object: bpf_obj_new of a type that is not a struct.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

SEC("syscall")
int not_struct(void* ctx) {
  __u64* p = bpf_obj_new(__u64);
  if (p) bpf_obj_drop(p);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
