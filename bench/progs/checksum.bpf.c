// Benchmark: Internet checksum (ones' complement sum, csum_partial style:
// 32-bit words into a 64-bit accumulator, folded to 16 bits) over a 4 KiB
// buffer in .bss. One op is one byte. The first run fills the buffer.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <userbpf/bpf/userbpf_bpf.h>

#define BYTES 4096
USERBPF_BENCH_OPS(BYTES);

__u32 buf[BYTES / 4];
__u32 filled;

SEC("xdp")
int checksum(struct xdp_md *ctx) {
  if (!filled) {
    for (__u32 i = 0; i < BYTES / 4; i++) buf[i] = i * 0x9e3779b1u + 7;
    filled = 1;
  }
  __u64 sum = 0;
  for (__u32 i = 0; i < BYTES / 4; i++) sum += buf[i];
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return sum ? BYTES : 0;
}

char LICENSE[] SEC("license") = "GPL";
