// Differential test program: arithmetic over packet bytes (checksums, FNV-1a,
// signed division, shifts, byte swaps) whose results go to an array map and r0,
// compared between the Linux kernel and userbpf.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 16);
  __type(key, __u32);
  __type(value, __u64);
} results SEC(".maps");

static __always_inline void put(__u32 idx, __u64 v) {
  __u64 *slot = bpf_map_lookup_elem(&results, &idx);
  if (slot) *slot = v;
}

SEC("xdp")
int packet_math(struct xdp_md *ctx) {
  unsigned char *data = (void *)(long)ctx->data;
  unsigned char *end = (void *)(long)ctx->data_end;
  __u64 fnv = 0xcbf29ce484222325ull;
  __u32 sum = 0;
  __s64 acc = 0;
  for (int i = 0; i < 256; i++) {
    if (data + i + 1 > end) break;
    __u8 b = data[i];
    fnv = (fnv ^ b) * 0x100000001b3ull;
    sum += (i & 1) ? b : ((__u32)b << 8);
    acc = acc * 31 - (__s64)b * 7;
  }
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  put(0, fnv);
  put(1, sum);
  put(2, (__u64)acc);
  put(3, (__u64)(acc / -7));
  put(4, (__u64)(acc % 1000));
  put(5, __builtin_bswap64(fnv));
  put(6, (__u32)(fnv >> 7) ^ (__u32)(fnv << 3));
  put(7, (__u64)((__s32)sum >> 3));
  put(8, end - data);
  if (data + 4 <= end) {
    data[0] ^= 0xff;  // the packet written back is compared too
    data[3] = (unsigned char)sum;
  }
  return (fnv & 1) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
