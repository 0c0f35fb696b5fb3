// Loader error object: an extern __kconfig variable (ld_imm64 of an
// undefined symbol), which needs libbpf's .kconfig map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;

SEC("syscall")
int prog(void *ctx) { return LINUX_KERNEL_VERSION > 0; }

char LICENSE[] SEC("license") = "GPL";
