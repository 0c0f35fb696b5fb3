// Loader error object: a call to a kfunc no runtime provides (load: ENOENT).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int userbpf_no_such_kfunc(int x) __ksym;

SEC("syscall")
int prog(void *ctx) { return userbpf_no_such_kfunc(3); }

char LICENSE[] SEC("license") = "GPL";
