// XDP program for the flowcount example: per-flow packet and byte counts in a
// hash map, keyed by the IPv4 5-tuple; other traffic is counted in globals.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct flow_key {
  __u32 saddr;
  __u32 daddr;
  __u16 sport;
  __u16 dport;
  __u8 proto;
  __u8 pad[3];
};

struct flow_stats {
  __u64 packets;
  __u64 bytes;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct flow_key);
  __type(value, struct flow_stats);
} flows SEC(".maps");

// Global counters in .bss, read by the host: one struct so the layout is fixed.
struct {
  __u64 non_ip_packets;
  __u64 table_full_drops;
} counters = {};

SEC("xdp")
int count_flows(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return XDP_ABORTED;
  if (eth->h_proto != bpf_htons(ETH_P_IP)) {
    __sync_fetch_and_add(&counters.non_ip_packets, 1);
    return XDP_PASS;
  }
  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > data_end) return XDP_ABORTED;

  struct flow_key key = {};
  key.saddr = ip->saddr;
  key.daddr = ip->daddr;
  key.proto = ip->protocol;
  void *l4 = (void *)ip + ip->ihl * 4;
  if (ip->protocol == IPPROTO_TCP) {
    struct tcphdr *tcp = l4;
    if ((void *)(tcp + 1) > data_end) return XDP_ABORTED;
    key.sport = bpf_ntohs(tcp->source);
    key.dport = bpf_ntohs(tcp->dest);
  } else if (ip->protocol == IPPROTO_UDP) {
    struct udphdr *udp = l4;
    if ((void *)(udp + 1) > data_end) return XDP_ABORTED;
    key.sport = bpf_ntohs(udp->source);
    key.dport = bpf_ntohs(udp->dest);
  }

  __u64 len = data_end - data;
  struct flow_stats *st = bpf_map_lookup_elem(&flows, &key);
  if (st) {
    __sync_fetch_and_add(&st->packets, 1);
    __sync_fetch_and_add(&st->bytes, len);
  } else {
    struct flow_stats init = {1, len};
    long err = bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST);
    if (err == -17 /* EEXIST: another CPU inserted it first */) {
      st = bpf_map_lookup_elem(&flows, &key);
      if (st) {
        __sync_fetch_and_add(&st->packets, 1);
        __sync_fetch_and_add(&st->bytes, len);
      }
    } else if (err) {
      __sync_fetch_and_add(&counters.table_full_drops, 1);
    }
  }
  return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
