// find_section_def(): libbpf's SEC() names -> program type and sleepability,
// with libbpf 1.x matching (exact names, "type" or "type/extra" forms).
#include <gtest/gtest.h>

#include "loader/object.h"

namespace userbpf::loader {
namespace {

using vm::ProgType;

struct Case {
  const char* name;
  ProgType type;
  bool sleepable;
};

TEST(SectionTable, KnownNames) {
  const Case cases[] = {
      {"xdp", ProgType::kXDP, false},
      {"xdp.frags", ProgType::kXDP, false},
      {"xdp/devmap", ProgType::kXDP, false},
      {"xdp.frags/cpumap", ProgType::kXDP, false},
      {"tc", ProgType::kSCHED_CLS, false},
      {"tc/ingress", ProgType::kSCHED_CLS, false},
      {"tcx/ingress", ProgType::kSCHED_CLS, false},
      {"tcx/egress", ProgType::kSCHED_CLS, false},
      {"classifier", ProgType::kSCHED_CLS, false},
      {"action", ProgType::kSCHED_ACT, false},
      {"socket", ProgType::kSOCKET_FILTER, false},
      {"sk_skb", ProgType::kSK_SKB, false},
      {"sk_skb/stream_parser", ProgType::kSK_SKB, false},
      {"sk_skb/stream_verdict", ProgType::kSK_SKB, false},
      {"sk_msg", ProgType::kSK_MSG, false},
      {"kprobe/do_sys_open", ProgType::kKPROBE, false},
      {"kprobe", ProgType::kKPROBE, false},
      {"kretprobe/do_sys_open", ProgType::kKPROBE, false},
      {"uprobe//bin/bash:readline", ProgType::kKPROBE, false},
      {"uretprobe/libc.so.6:malloc", ProgType::kKPROBE, false},
      {"uprobe.s/libc.so.6:malloc", ProgType::kKPROBE, true},
      {"uretprobe.s/libc.so.6:free", ProgType::kKPROBE, true},
      {"usdt/libc:probe", ProgType::kKPROBE, false},
      {"tp/syscalls/sys_enter_openat", ProgType::kTRACEPOINT, false},
      {"tracepoint/sched/sched_switch", ProgType::kTRACEPOINT, false},
      {"raw_tp/sys_enter", ProgType::kRAW_TRACEPOINT, false},
      {"raw_tracepoint/sys_enter", ProgType::kRAW_TRACEPOINT, false},
      {"raw_tp.w/sys_enter", ProgType::kRAW_TRACEPOINT_WRITABLE, false},
      {"tp_btf/sched_switch", ProgType::kTRACING, false},
      {"fentry/do_unlinkat", ProgType::kTRACING, false},
      {"fexit/do_unlinkat", ProgType::kTRACING, false},
      {"fentry.s/do_unlinkat", ProgType::kTRACING, true},
      {"fexit.s/do_unlinkat", ProgType::kTRACING, true},
      {"fmod_ret/security_x", ProgType::kTRACING, false},
      {"lsm/file_open", ProgType::kLSM, false},
      {"lsm.s/file_open", ProgType::kLSM, true},
      {"iter/task", ProgType::kTRACING, false},
      {"iter.s/task", ProgType::kTRACING, true},
      {"syscall", ProgType::kSYSCALL, true},
      {"struct_ops/tcp_init", ProgType::kSTRUCT_OPS, false},
      {"struct_ops.s/tcp_init", ProgType::kSTRUCT_OPS, true},
      {"perf_event", ProgType::kPERF_EVENT, false},
      {"cgroup_skb/ingress", ProgType::kCGROUP_SKB, false},
      {"cgroup_skb/egress", ProgType::kCGROUP_SKB, false},
      {"cgroup/skb", ProgType::kCGROUP_SKB, false},
      {"cgroup/sock_create", ProgType::kCGROUP_SOCK, false},
      {"cgroup/connect4", ProgType::kCGROUP_SOCK_ADDR, false},
      {"cgroup/sysctl", ProgType::kCGROUP_SYSCTL, false},
      {"cgroup/getsockopt", ProgType::kCGROUP_SOCKOPT, false},
      {"cgroup/dev", ProgType::kCGROUP_DEVICE, false},
      {"sockops", ProgType::kSOCK_OPS, false},
      {"flow_dissector", ProgType::kFLOW_DISSECTOR, false},
      {"sk_lookup", ProgType::kSK_LOOKUP, false},
      {"sk_reuseport", ProgType::kSK_REUSEPORT, false},
      {"netfilter", ProgType::kNETFILTER, false},
      {"lwt_in", ProgType::kLWT_IN, false},
      {"freplace/target", ProgType::kEXT, false},
  };
  for (const Case& c : cases) {
    const SectionDef* def = find_section_def(c.name);
    ASSERT_NE(def, nullptr) << c.name;
    EXPECT_EQ(def->type, c.type) << c.name;
    EXPECT_EQ(def->sleepable, c.sleepable) << c.name;
  }
}

TEST(SectionTable, UnknownNames) {
  // Exact names take no suffix; "type+" names need a '/' separator.
  for (const char* name :
       {"", ".text", "bogus", "xdp/foo", "xdpfoo", "tc/foo", "tcx", "syscall/x", "kprobefoo",
        "kprobe.", "tp_btfx/y", "fentry.sx/f", "socket1", "cgroup_skb", "struct_opsx", "XDP"})
    EXPECT_EQ(find_section_def(name), nullptr) << name;
}

}  // namespace
}  // namespace userbpf::loader
