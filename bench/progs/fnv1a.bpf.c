// Benchmark: 64-bit FNV-1a hash over a 4 KiB buffer in .bss, byte by byte.
// One op is one byte. The first run fills the buffer.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define BYTES 4096
USERBPF_BENCH_OPS(BYTES);

__u8 buf[BYTES];
__u32 filled;

SEC("xdp")
int fnv1a(struct xdp_md *ctx) {
  if (!filled) {
    for (__u32 i = 0; i < BYTES; i++) buf[i] = (__u8)(i * 31 + 7);
    filled = 1;
  }
  __u64 h = 0xcbf29ce484222325ull;
  for (__u32 i = 0; i < BYTES; i++) {
    h ^= buf[i];
    h *= 0x100000001b3ull;
  }
  return h ? BYTES : 0;
}

char LICENSE[] SEC("license") = "GPL";
