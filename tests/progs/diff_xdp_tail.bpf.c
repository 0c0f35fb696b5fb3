// Differential test program: bpf_xdp_adjust_tail by the signed 32-bit delta
// in bytes 14-17 of the packet (after the Ethernet header); r0 is the
// helper's result, the packet comes back grown or shrunk. The kernel's
// BPF_PROG_TEST_RUN lets a linear frame grow to 3520 bytes (a page less
// XDP_PACKET_HEADROOM and the skb_shared_info tailroom).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_tail(struct xdp_md *ctx) {
  unsigned char *data = (void *)(long)ctx->data;
  unsigned char *end = (void *)(long)ctx->data_end;
  if (data + 18 > end) return 1000;
  int delta = (int)((__u32)data[14] | (__u32)data[15] << 8 | (__u32)data[16] << 16 |
                    (__u32)data[17] << 24);
  return bpf_xdp_adjust_tail(ctx, delta);
}

char LICENSE[] SEC("license") = "GPL";
