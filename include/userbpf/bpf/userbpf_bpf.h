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
 *   USERBPF_BENCH_OPS(1000);
 * One per object (a u64 named userbpf_bench_ops in .rodata): `userbpf bench`
 * reads it with Object::read_global(), the kernel runner (bench/kernel)
 * through the object's BTF, so both divide by the same n. A benchmark program
 * returns n when every operation succeeded; both runners flag r0 != n. */
#define USERBPF_BENCH_OPS(n) const volatile unsigned long long userbpf_bench_ops = (n)

#endif /* USERBPF_BPF_H */
