// Loader error object: __arena global variables in section .addr_space.1.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define __arena __attribute__((address_space(1)))

int __arena arena_counter = 1;

SEC("syscall")
int prog(void *ctx) { return arena_counter; }

char LICENSE[] SEC("license") = "GPL";
