// Loader test object for link order: the entry calls a then b, a calls c
// (all in .text); libbpf appends depth-first: entry, a, c, b. A second entry
// in another section calls only b and takes c's address as a callback.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__u64 hits;

static __noinline int c(int x) { return x + 3; }
__noinline int a(int x) { return c(x) * 2; }
__noinline int b(int x) { return x - 1; }

static long cb(__u64 idx, void *ctx) {
  hits += idx;
  return 0;
}

SEC("syscall")
int entry(void *ctx) { return a(1) + b(2); }

SEC("tp/syscalls/sys_enter_getpid")
int entry2(void *ctx) {
  bpf_loop(2, cb, 0, 0);
  return b(5);
}

char LICENSE[] SEC("license") = "GPL";
