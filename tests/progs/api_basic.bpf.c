// Programs for the public API tests: a syscall program over a context blob,
// global data of every kind, a hash map the host reads, bpf_loop with a
// callback, and programs that fault or never end (the host must survive).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
  __u32 a;
  __u32 b;
  __u64 out;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 128);
  __type(key, __u32);
  __type(value, __u64);
} squares SEC(".maps");

const volatile __u64 multiplier = 3;   // .rodata
__u64 runs = 0;                        // .bss
__u64 seed = 100;                      // .data
char greeting[16] = "hello";           // .data

static int add_square(__u32 i, void *ctx) {
  __u64 sq = (__u64)i * i;
  bpf_map_update_elem(&squares, &i, &sq, BPF_ANY);
  *(__u64 *)ctx += sq;
  return 0;
}

SEC("syscall")
int compute(struct args *args) {
  __u64 total = 0;
  runs++;
  bpf_loop(args->b, add_square, &total, 0);
  args->out = (args->a * multiplier) + seed + total;
  return greeting[0] == 'h' ? (int)args->a + 1 : -1;
}

SEC("syscall")
int null_deref(void *ctx) {
  volatile __u64 *p = (void *)0x10;
  return (int)*p;
}

SEC("syscall")
int spin_forever(void *ctx) {
  volatile __u32 n = 0;
  for (;;) n++;
  return 0;
}

SEC("xdp")
int xdp_len(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *end = (void *)(long)ctx->data_end;
  if (data + 1 > end) return XDP_DROP;
  *(unsigned char *)data = 0x42;
  return (end - data) >= 60 ? XDP_PASS : XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
