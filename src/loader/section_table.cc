// The one table of program section names: libbpf's SEC() conventions
// (libbpf.c section_defs, 1.x semantics) -> program type and sleepability.
//
// Matching, as libbpf 1.x does it:
//   exact == true:  the section name equals prefix ("xdp", "tc/ingress");
//   exact == false: the name equals prefix or continues with '/' (libbpf's
//                   "kprobe+": SEC("kprobe") and SEC("kprobe/do_sys_open")),
//                   never a bare continuation ("kprobefoo" is unknown).
// Sleepable sections are the ".s" variants and "syscall".
#include <cstring>

#include "loader/object.h"

namespace userbpf::loader {

namespace {

using vm::ProgType;

constexpr SectionDef kSectionDefs[] = {
    {"socket", ProgType::kSOCKET_FILTER, false, true},
    {"sk_reuseport/migrate", ProgType::kSK_REUSEPORT, false, true},
    {"sk_reuseport", ProgType::kSK_REUSEPORT, false, true},
    {"kprobe", ProgType::kKPROBE, false, false},
    {"uprobe", ProgType::kKPROBE, false, false},
    {"uprobe.s", ProgType::kKPROBE, true, false},
    {"kretprobe", ProgType::kKPROBE, false, false},
    {"uretprobe", ProgType::kKPROBE, false, false},
    {"uretprobe.s", ProgType::kKPROBE, true, false},
    {"kprobe.multi", ProgType::kKPROBE, false, false},
    {"kretprobe.multi", ProgType::kKPROBE, false, false},
    {"kprobe.session", ProgType::kKPROBE, false, false},
    {"uprobe.multi", ProgType::kKPROBE, false, false},
    {"uretprobe.multi", ProgType::kKPROBE, false, false},
    {"uprobe.multi.s", ProgType::kKPROBE, true, false},
    {"uretprobe.multi.s", ProgType::kKPROBE, true, false},
    {"ksyscall", ProgType::kKPROBE, false, false},
    {"kretsyscall", ProgType::kKPROBE, false, false},
    {"usdt", ProgType::kKPROBE, false, false},
    {"usdt.s", ProgType::kKPROBE, true, false},
    {"tc/ingress", ProgType::kSCHED_CLS, false, true},
    {"tc/egress", ProgType::kSCHED_CLS, false, true},
    {"tcx/ingress", ProgType::kSCHED_CLS, false, true},
    {"tcx/egress", ProgType::kSCHED_CLS, false, true},
    {"netkit/primary", ProgType::kSCHED_CLS, false, true},
    {"netkit/peer", ProgType::kSCHED_CLS, false, true},
    {"tc", ProgType::kSCHED_CLS, false, true},
    {"classifier", ProgType::kSCHED_CLS, false, true},
    {"action", ProgType::kSCHED_ACT, false, true},
    {"tracepoint", ProgType::kTRACEPOINT, false, false},
    {"tp", ProgType::kTRACEPOINT, false, false},
    {"raw_tracepoint", ProgType::kRAW_TRACEPOINT, false, false},
    {"raw_tp", ProgType::kRAW_TRACEPOINT, false, false},
    {"raw_tracepoint.w", ProgType::kRAW_TRACEPOINT_WRITABLE, false, false},
    {"raw_tp.w", ProgType::kRAW_TRACEPOINT_WRITABLE, false, false},
    {"tp_btf", ProgType::kTRACING, false, false},
    {"fentry", ProgType::kTRACING, false, false},
    {"fmod_ret", ProgType::kTRACING, false, false},
    {"fexit", ProgType::kTRACING, false, false},
    {"fentry.s", ProgType::kTRACING, true, false},
    {"fmod_ret.s", ProgType::kTRACING, true, false},
    {"fexit.s", ProgType::kTRACING, true, false},
    {"freplace", ProgType::kEXT, false, false},
    {"lsm", ProgType::kLSM, false, false},
    {"lsm.s", ProgType::kLSM, true, false},
    {"lsm_cgroup", ProgType::kLSM, false, false},
    {"iter", ProgType::kTRACING, false, false},
    {"iter.s", ProgType::kTRACING, true, false},
    {"syscall", ProgType::kSYSCALL, true, true},
    {"xdp.frags/devmap", ProgType::kXDP, false, true},
    {"xdp/devmap", ProgType::kXDP, false, true},
    {"xdp.frags/cpumap", ProgType::kXDP, false, true},
    {"xdp/cpumap", ProgType::kXDP, false, true},
    {"xdp.frags", ProgType::kXDP, false, true},
    {"xdp", ProgType::kXDP, false, true},
    {"perf_event", ProgType::kPERF_EVENT, false, true},
    {"lwt_in", ProgType::kLWT_IN, false, true},
    {"lwt_out", ProgType::kLWT_OUT, false, true},
    {"lwt_xmit", ProgType::kLWT_XMIT, false, true},
    {"lwt_seg6local", ProgType::kLWT_SEG6LOCAL, false, true},
    {"sockops", ProgType::kSOCK_OPS, false, true},
    {"sk_skb/stream_parser", ProgType::kSK_SKB, false, true},
    {"sk_skb/stream_verdict", ProgType::kSK_SKB, false, true},
    {"sk_skb/verdict", ProgType::kSK_SKB, false, true},
    {"sk_skb", ProgType::kSK_SKB, false, true},
    {"sk_msg", ProgType::kSK_MSG, false, true},
    {"lirc_mode2", ProgType::kLIRC_MODE2, false, true},
    {"flow_dissector", ProgType::kFLOW_DISSECTOR, false, true},
    {"cgroup_skb/ingress", ProgType::kCGROUP_SKB, false, true},
    {"cgroup_skb/egress", ProgType::kCGROUP_SKB, false, true},
    {"cgroup/skb", ProgType::kCGROUP_SKB, false, true},
    {"cgroup/sock_create", ProgType::kCGROUP_SOCK, false, true},
    {"cgroup/sock_release", ProgType::kCGROUP_SOCK, false, true},
    {"cgroup/sock", ProgType::kCGROUP_SOCK, false, true},
    {"cgroup/post_bind4", ProgType::kCGROUP_SOCK, false, true},
    {"cgroup/post_bind6", ProgType::kCGROUP_SOCK, false, true},
    {"cgroup/bind4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/bind6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/connect4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/connect6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/connect_unix", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/sendmsg4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/sendmsg6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/sendmsg_unix", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/recvmsg4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/recvmsg6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/recvmsg_unix", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getpeername4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getpeername6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getpeername_unix", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getsockname4", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getsockname6", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/getsockname_unix", ProgType::kCGROUP_SOCK_ADDR, false, true},
    {"cgroup/sysctl", ProgType::kCGROUP_SYSCTL, false, true},
    {"cgroup/getsockopt", ProgType::kCGROUP_SOCKOPT, false, true},
    {"cgroup/setsockopt", ProgType::kCGROUP_SOCKOPT, false, true},
    {"cgroup/dev", ProgType::kCGROUP_DEVICE, false, true},
    {"struct_ops", ProgType::kSTRUCT_OPS, false, false},
    {"struct_ops.s", ProgType::kSTRUCT_OPS, true, false},
    {"sk_lookup", ProgType::kSK_LOOKUP, false, true},
    {"netfilter", ProgType::kNETFILTER, false, true},
};

bool matches(const SectionDef& def, const std::string& name) {
  size_t len = std::strlen(def.prefix);
  if (def.exact) return name == def.prefix;
  if (name.compare(0, len, def.prefix) != 0) return false;
  return name.size() == len || name[len] == '/';
}

}  // namespace

const SectionDef* find_section_def(const std::string& section) {
  for (const SectionDef& def : kSectionDefs)
    if (matches(def, section)) return &def;
  return nullptr;
}

}  // namespace userbpf::loader
