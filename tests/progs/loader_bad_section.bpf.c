// Loader error object: a program in a section name libbpf does not know.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("bogus/section")
int prog(void *ctx) { return 0; }

char LICENSE[] SEC("license") = "GPL";
