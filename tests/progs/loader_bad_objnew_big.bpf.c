// Loader error object: bpf_obj_new of a struct larger than the biggest size
// class can hold.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

struct big {
  char bytes[5000];
};

SEC("syscall")
int too_big(void* ctx) {
  struct big* p = bpf_obj_new(struct big);
  if (p) bpf_obj_drop(p);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
