// Loader test object: BTF-defined hash and array maps, global data of every
// kind (.data, .rodata, .bss, a named .data.* section, .rodata.str1.1
// strings), static and global subprograms in .text called from two sections,
// a bpf_loop callback, an extern kfunc, and xdp, tc and syscall programs.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
  __u64 a;
  __u32 b;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, __u32);
  __type(value, __u64);
  __uint(max_entries, 64);
} counts SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(key_size, 4);
  __type(value, struct val);
  __uint(max_entries, 8);
  __uint(map_flags, 0);
} arr SEC(".maps");

__u64 data_var = 42;                          // .data
__u64 data_var2 = 7;                          // .data, offset 8
const volatile __u32 ro_var = 5;              // .rodata
__u64 bss_var;                                // .bss
static __u64 static_bss;                      // .bss, reached through the section symbol
char name_buf[16] SEC(".data.names") = "hello";

extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

static __noinline int static_helper(int x) { return x * 3 + (int)data_var2; }

__noinline int global_helper(int x) {
  bss_var += x;
  static_bss++;
  return static_helper(x) + ro_var;
}

static long loop_cb(__u64 idx, void *ctx) {
  *(__u64 *)ctx += idx;
  return 0;
}

SEC("xdp")
int xdp_prog(struct xdp_md *ctx) {
  __u32 k = 1;
  __u64 *v = bpf_map_lookup_elem(&counts, &k);
  if (v) *v += 1;
  __u64 sum = 0;
  bpf_loop(10, loop_cb, &sum, 0);
  data_var += sum;
  return global_helper(ctx->ingress_ifindex) > 0 ? XDP_PASS : XDP_DROP;
}

SEC("tc")
int tc_prog(struct __sk_buff *skb) {
  __u32 k = 0;
  struct val *v = bpf_map_lookup_elem(&arr, &k);
  if (v) {
    bpf_rcu_read_lock();
    v->a = skb->len;
    bpf_rcu_read_unlock();
  }
  bpf_printk("tc %d", skb->len);
  return static_helper(skb->len) + name_buf[1];
}

SEC("syscall")
int sys_prog(void *ctx) {
  char buf[8];
  __builtin_memcpy(buf, "syscall", 8);
  bpf_trace_printk("literal %s\n", 12, buf);
  return global_helper(1);
}

char LICENSE[] SEC("license") = "GPL";
