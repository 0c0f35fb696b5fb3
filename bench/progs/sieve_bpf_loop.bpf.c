// Benchmark: sieve of Eratosthenes over 0..8191 in .bss with bpf_loop
// callbacks (sieve.bpf.c: the same with plain loops): clear, cross out
// multiples (nested bpf_loop: the inner stride is only known at run time,
// which a bounded loop cannot express to the verifier), count the primes.
// One op is one number sieved; the run checks the count (1,028 primes).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define N 8192
#define PRIMES_BELOW_N 1028
USERBPF_BENCH_OPS(N);

__u8 composite[N];

static int cross_out(__u32 k, void *ctx) {
  __u32 p = *(__u32 *)ctx;
  __u32 j = p * p + k * p;
  if (j >= N) return 1;
  composite[j] = 1;
  return 0;
}

static int next_prime(__u32 idx, void *ctx) {
  __u32 p = idx + 2;
  if (p * p >= N) return 1;
  if (composite[p & (N - 1)]) return 0;
  bpf_loop(N / p, cross_out, &p, 0);
  return 0;
}

static int count_prime(__u32 idx, void *ctx) {
  if (!composite[(idx + 2) & (N - 1)]) (*(__u32 *)ctx)++;
  return 0;
}

SEC("xdp")
int sieve_bpf_loop(struct xdp_md *ctx) {
  volatile __u64 *words = (volatile __u64 *)composite;  // volatile: no memset call
  for (__u32 i = 0; i < N / 8; i++) words[i] = 0;
  bpf_loop(N, next_prime, 0, 0);
  // Counted in a callback too: in a bounded loop the verifier would walk
  // every combination of the per-number branch.
  __u32 primes = 0;
  bpf_loop(N - 2, count_prime, &primes, 0);
  return primes == PRIMES_BELOW_N ? N : 0;
}

char LICENSE[] SEC("license") = "GPL";
