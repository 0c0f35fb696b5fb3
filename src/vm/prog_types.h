// Program type numbers (the kernel's enum bpf_prog_type), listed once.
#pragma once

#include <cstdint>

namespace userbpf::vm {

#define USERBPF_PROG_TYPES(X)                               \
  X(UNSPEC, 0, "unspec")                                    \
  X(SOCKET_FILTER, 1, "socket_filter")                      \
  X(KPROBE, 2, "kprobe")                                    \
  X(SCHED_CLS, 3, "sched_cls")                              \
  X(SCHED_ACT, 4, "sched_act")                              \
  X(TRACEPOINT, 5, "tracepoint")                            \
  X(XDP, 6, "xdp")                                          \
  X(PERF_EVENT, 7, "perf_event")                            \
  X(CGROUP_SKB, 8, "cgroup_skb")                            \
  X(CGROUP_SOCK, 9, "cgroup_sock")                          \
  X(LWT_IN, 10, "lwt_in")                                   \
  X(LWT_OUT, 11, "lwt_out")                                 \
  X(LWT_XMIT, 12, "lwt_xmit")                               \
  X(SOCK_OPS, 13, "sock_ops")                               \
  X(SK_SKB, 14, "sk_skb")                                   \
  X(CGROUP_DEVICE, 15, "cgroup_device")                     \
  X(SK_MSG, 16, "sk_msg")                                   \
  X(RAW_TRACEPOINT, 17, "raw_tracepoint")                   \
  X(CGROUP_SOCK_ADDR, 18, "cgroup_sock_addr")               \
  X(LWT_SEG6LOCAL, 19, "lwt_seg6local")                     \
  X(LIRC_MODE2, 20, "lirc_mode2")                           \
  X(SK_REUSEPORT, 21, "sk_reuseport")                       \
  X(FLOW_DISSECTOR, 22, "flow_dissector")                   \
  X(CGROUP_SYSCTL, 23, "cgroup_sysctl")                     \
  X(RAW_TRACEPOINT_WRITABLE, 24, "raw_tracepoint_writable") \
  X(CGROUP_SOCKOPT, 25, "cgroup_sockopt")                   \
  X(TRACING, 26, "tracing")                                 \
  X(STRUCT_OPS, 27, "struct_ops")                           \
  X(EXT, 28, "ext")                                         \
  X(LSM, 29, "lsm")                                         \
  X(SK_LOOKUP, 30, "sk_lookup")                             \
  X(SYSCALL, 31, "syscall")                                 \
  X(NETFILTER, 32, "netfilter")

enum class ProgType : uint32_t {
#define USERBPF_X(name, num, str) k##name = num,
  USERBPF_PROG_TYPES(USERBPF_X)
#undef USERBPF_X
};

// "xdp", "sched_cls", ... or "unknown".
const char* prog_type_name(ProgType type);

}  // namespace userbpf::vm
