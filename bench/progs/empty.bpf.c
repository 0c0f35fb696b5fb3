// Benchmark: an empty run (returns at once): the cost of one run itself
// (context set-up, entry and exit), the floor under every other row.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

USERBPF_BENCH_OPS(1);

SEC("xdp")
int empty(struct xdp_md *ctx) {
  return 1;
}

char LICENSE[] SEC("license") = "GPL";
