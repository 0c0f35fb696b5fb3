/* Header for BPF program authors targeting userbpf: the constants, kfunc
 * declarations and macros userbpf supports that Debian 12's kernel UAPI
 * headers (6.1) predate. Include after <linux/bpf.h> and <bpf/bpf_helpers.h>. */
#ifndef USERBPF_BPF_H
#define USERBPF_BPF_H

#ifndef BPF_F_CPU
#define BPF_F_CPU 8
#endif
#ifndef BPF_F_ALL_CPUS
#define BPF_F_ALL_CPUS 16
#endif

/* Number of operations one run of a benchmark program performs (read by
 * `userbpf bench` to report ns per operation):
 *   USERBPF_BENCH_OPS(1000); */
#define USERBPF_BENCH_OPS(n) const volatile unsigned long long userbpf_bench_ops = (n)

#endif /* USERBPF_BPF_H */
