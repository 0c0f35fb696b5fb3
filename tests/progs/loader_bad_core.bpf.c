// Loader error object: a CO-RE field access (.BTF.ext core_relo record).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct task_like {
  int pid;
  int tgid;
} __attribute__((preserve_access_index));

SEC("kprobe/do_nothing")
int core_prog(struct task_like *t) { return __builtin_preserve_access_index(t->tgid); }

char LICENSE[] SEC("license") = "GPL";
