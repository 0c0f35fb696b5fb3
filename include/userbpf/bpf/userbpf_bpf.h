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

/* Program-allocated objects and kptr fields (the kernel's
 * bpf_experimental.h, which Debian's libbpf 1.1 lacks). A map value field
 *   struct node __kptr *p;
 * holds an object from bpf_obj_new, exchanged with bpf_kptr_xchg and dropped
 * when its element is deleted or overwritten or the map is freed. */
#ifndef __kptr
#define __kptr __attribute__((btf_type_tag("kptr")))
#endif
#ifndef __percpu_kptr
#define __percpu_kptr __attribute__((btf_type_tag("percpu_kptr")))
#endif

/* Define USERBPF_NO_OBJ_KFUNCS to declare the kfuncs yourself. */
#ifndef USERBPF_NO_OBJ_KFUNCS
extern void* bpf_obj_new_impl(__u64 local_type_id__k, void* meta__ign) __ksym;
extern void bpf_obj_drop_impl(void* kptr, void* meta__ign) __ksym;
extern void* bpf_percpu_obj_new_impl(__u64 local_type_id__k, void* meta__ign) __ksym;
extern void bpf_percpu_obj_drop_impl(void* kptr, void* meta__ign) __ksym;
#endif

/* BPF_TYPE_ID_LOCAL is 0: bpf_core_type_id_local() without bpf_core_read.h. */
#ifndef bpf_obj_new
#define bpf_obj_new(type) ((type*)bpf_obj_new_impl(__builtin_btf_type_id(*(type*)0, 0), (void*)0))
#endif
#ifndef bpf_obj_drop
#define bpf_obj_drop(kptr) bpf_obj_drop_impl(kptr, (void*)0)
#endif
#ifndef bpf_percpu_obj_new
#define bpf_percpu_obj_new(type) \
  ((type __percpu_kptr*)bpf_percpu_obj_new_impl(__builtin_btf_type_id(*(type*)0, 0), (void*)0))
#endif
#ifndef bpf_percpu_obj_drop
#define bpf_percpu_obj_drop(kptr) bpf_percpu_obj_drop_impl(kptr, (void*)0)
#endif

/* can_loop: true while the run's loop budget lasts (one may_goto
 * instruction, kernel 6.9 and newer), so a loop whose bound the verifier
 * cannot see still loads:
 *   for (j = p * p; j < N && can_loop; j += p) ...
 * The loop ends early, as if its condition failed, once the budget is gone. */
#ifndef can_loop
#define can_loop                                                              \
  ({                                                                          \
    __label__ userbpf_loop_out, userbpf_loop_on;                              \
    int userbpf_loop_ok = 1;                                                  \
    asm volatile goto("may_goto %l[userbpf_loop_out]" :: ::userbpf_loop_out); \
    goto userbpf_loop_on;                                                     \
  userbpf_loop_out:                                                           \
    userbpf_loop_ok = 0;                                                      \
  userbpf_loop_on:                                                            \
    userbpf_loop_ok;                                                          \
  })
#endif

#endif /* USERBPF_BPF_H */
