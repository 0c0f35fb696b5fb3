// Benchmark: a memcpy-like loop, 4 KiB copied between two .bss buffers in
// 8-byte words (barrier_var keeps clang from turning the loop into a
// memcpy call, which BPF does not have; the native baseline keeps the same
// loop the same way). One op is one byte; the run checks the last word.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define BYTES 4096
#define WORDS (BYTES / 8)
USERBPF_BENCH_OPS(BYTES);

__u64 src[WORDS];
__u64 dst[WORDS];

SEC("xdp")
int memcopy(struct xdp_md *ctx) {
  src[WORDS - 1] = 0x5eed;
  for (__u32 i = 0; i < WORDS; i++) {
    __u64 v = src[i];
    barrier_var(v);
    dst[i] = v;
  }
  return dst[WORDS - 1] == 0x5eed ? BYTES : 0;
}

char LICENSE[] SEC("license") = "GPL";
