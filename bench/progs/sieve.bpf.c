// Benchmark: sieve of Eratosthenes over 0..8191 in .bss, the same loops as
// the native baseline (bench/native): clear, cross out multiples, count the
// primes. The loops whose bounds the verifier cannot follow (the stride is
// only known at run time) end with can_loop (may_goto), their indexes masked. One op is one number
// sieved; the run checks the count (1,028 primes). sieve_bpf_loop.bpf.c is
// the same sieve with bpf_loop callbacks.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define N 8192
#define PRIMES_BELOW_N 1028
USERBPF_BENCH_OPS(N);

__u8 composite[N];

// i & (N - 1) for the verifier, which loses the loop bounds of can_loop
// loops; barrier_var hides from clang that i < N already, so the mask stays.
static __always_inline __u32 bounded(__u32 i) {
  barrier_var(i);
  return i & (N - 1);
}

SEC("xdp")
int sieve(struct xdp_md *ctx) {
  volatile __u64 *words = (volatile __u64 *)composite;  // volatile: no memset call
  for (__u32 i = 0; i < N / 8; i++) words[i] = 0;
  for (__u32 p = 2; p * p < N && can_loop; p++) {
    if (composite[bounded(p)]) continue;
    for (__u32 j = p * p; j < N && can_loop; j += p) composite[bounded(j)] = 1;
  }
  // Branch-free (composite holds 0 or 1): a bounded loop the verifier walks
  // once, not once per combination of a per-number branch.
  __u32 primes = 0;
  for (__u32 i = 2; i < N; i++) primes += 1 - composite[i];
  return primes == PRIMES_BELOW_N ? N : 0;
}

char LICENSE[] SEC("license") = "GPL";
