// Loader error object: bpf_obj_new_impl with a type id that is not a constant.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

SEC("syscall")
int nonconst(__u64* ctx) {
  void* p = bpf_obj_new_impl(*ctx, 0);
  if (p) bpf_obj_drop(p);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
