// Benchmark: a CPU-bound loop of simple ALU and branch instructions (an
// xorshift-multiply mix). Returns the number of loop iterations, so
// ns/iteration = ns per run / r0; the instructions per iteration are counted
// from the disassembly by bench/run_bench.sh.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ITERATIONS 100000

SEC("syscall")
int alu_loop(void *ctx) {
  __u64 x = 0x9e3779b97f4a7c15ull, acc = 0;
  for (__u32 i = 0; i < ITERATIONS; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    acc += x & 0xff;
  }
  return acc ? ITERATIONS : 0;
}

char LICENSE[] SEC("license") = "GPL";
