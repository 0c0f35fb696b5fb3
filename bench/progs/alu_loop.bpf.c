// Benchmark: a CPU-bound loop of ALU and branch instructions (an xorshift
// mix), seeded by the packet length so the compiler cannot fold it. One op
// is one loop iteration.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define ITERATIONS 4096
USERBPF_BENCH_OPS(ITERATIONS);

SEC("xdp")
int alu_loop(struct xdp_md *ctx) {
  __u64 x = 0x9e3779b97f4a7c15ull ^ (__u64)(ctx->data_end - ctx->data), acc = 0;
  for (__u32 i = 0; i < ITERATIONS; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    acc += x & 0xff;
  }
  return acc ? ITERATIONS : 0;
}

char LICENSE[] SEC("license") = "GPL";
