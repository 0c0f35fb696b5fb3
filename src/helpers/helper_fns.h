// Native implementations of the BPF helpers, one group per family file
// (helpers_<family>.cc), with the kernel's names, ids (enum bpf_func_id, in
// registry.cc) and semantics: pointers or 0, 0 or a negative errno, as u64.
//
// Contexts: every helper may run inside a program on any thread, including a
// signal handler, so none of them allocates, takes a lock or uses stdio; the
// run they belong to is vm::current_run(). Pointer arguments were checked by
// the engine against the helper's ArgKinds before the call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace userbpf::helpers {

using u64 = uint64_t;

// --- maps (helpers_map.cc) -------------------------------------------------
u64 bpf_map_lookup_elem(u64 map, u64 key, u64, u64, u64);
u64 bpf_map_update_elem(u64 map, u64 key, u64 value, u64 flags, u64);
u64 bpf_map_delete_elem(u64 map, u64 key, u64, u64, u64);
u64 bpf_map_lookup_percpu_elem(u64 map, u64 key, u64 cpu, u64, u64);
// callback_fn(map, key, value, callback_ctx) through RunContext::call_fn.
u64 bpf_for_each_map_elem(u64 map, u64 callback_fn, u64 callback_ctx, u64 flags, u64);

// --- bpf_spin_lock (helpers_spin_lock.cc) -----------------------------------
u64 bpf_spin_lock(u64 lock, u64, u64, u64, u64);
u64 bpf_spin_unlock(u64 lock, u64, u64, u64, u64);
// What a map update/delete helper returns when this thread holds or is
// taking a bpf_spin_lock (maps::spin_lock_thread_busy()): the run holding
// it is stopped (EINVAL, the verifier's "function calls are not allowed
// while holding a lock"); a run that interrupted the holder on the same
// thread gets -EBUSY instead of waiting for a bucket lock whose holder may
// wait for that spin lock.
u64 map_write_on_locked_thread(const char* helper);

// --- time (helpers_time.cc) ------------------------------------------------
// jiffies count at the Debian kernel's CONFIG_HZ, starting from the kernel's
// INITIAL_JIFFIES offset so wrap-sensitive programs see kernel-like values.
inline constexpr uint64_t kJiffiesHz = 250;
u64 bpf_ktime_get_ns(u64, u64, u64, u64, u64);
u64 bpf_ktime_get_boot_ns(u64, u64, u64, u64, u64);
u64 bpf_ktime_get_coarse_ns(u64, u64, u64, u64, u64);
u64 bpf_ktime_get_tai_ns(u64, u64, u64, u64, u64);
u64 bpf_rcu_read_lock(u64, u64, u64, u64, u64);    // kfunc
u64 bpf_rcu_read_unlock(u64, u64, u64, u64, u64);  // kfunc
u64 bpf_jiffies64(u64, u64, u64, u64, u64);

// --- misc (helpers_misc.cc) ------------------------------------------------
inline constexpr uint32_t kBpfMaxLoops = 1u << 23;  // bpf_loop's nr_loops limit
u64 bpf_get_prandom_u32(u64, u64, u64, u64, u64);
u64 bpf_get_smp_processor_id(u64, u64, u64, u64, u64);
u64 bpf_get_numa_node_id(u64, u64, u64, u64, u64);
u64 bpf_get_current_pid_tgid(u64, u64, u64, u64, u64);
u64 bpf_get_current_uid_gid(u64, u64, u64, u64, u64);
u64 bpf_get_current_comm(u64 buf, u64 size, u64, u64, u64);
u64 bpf_loop(u64 nr_loops, u64 callback_fn, u64 callback_ctx, u64 flags, u64);
u64 bpf_strncmp(u64 s1, u64 s1_sz, u64 s2, u64, u64);
u64 bpf_strtol(u64 buf, u64 buf_len, u64 flags, u64 res, u64);
u64 bpf_strtoul(u64 buf, u64 buf_len, u64 flags, u64 res, u64);

// --- trace output (helpers_trace.cc) -----------------------------------------
u64 bpf_trace_printk(u64 fmt, u64 fmt_size, u64 arg1, u64 arg2, u64 arg3);
u64 bpf_trace_vprintk(u64 fmt, u64 fmt_size, u64 data, u64 data_len, u64);
u64 bpf_snprintf(u64 str, u64 str_size, u64 fmt, u64 data, u64 data_len);

// --- memory probes (helpers_probe.cc) ----------------------------------------
u64 bpf_probe_read(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);
u64 bpf_probe_read_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);
u64 bpf_probe_read_user(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);
u64 bpf_probe_read_kernel(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);
u64 bpf_probe_read_user_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);
u64 bpf_probe_read_kernel_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64);

// --- packets (helpers_net.cc) ------------------------------------------------
// The kernel keeps a struct xdp_frame at the start of the XDP buffer, so
// data_meta/data can move down to pkt_buf_start + kXdpFrameSize at most.
inline constexpr size_t kXdpPacketHeadroom = 256;  // XDP_PACKET_HEADROOM
inline constexpr size_t kXdpFrameSize = 40;        // sizeof(struct xdp_frame), 6.12
inline constexpr size_t kXdpMetaMax = 255;         // skb_shared_info::meta_len is a u8
inline constexpr size_t kEthHlen = 14;
u64 bpf_xdp_adjust_head(u64 xdp_md, u64 offset, u64, u64, u64);
u64 bpf_xdp_adjust_meta(u64 xdp_md, u64 offset, u64, u64, u64);
u64 bpf_xdp_adjust_tail(u64 xdp_md, u64 offset, u64, u64, u64);
u64 bpf_csum_diff(u64 from, u64 from_size, u64 to, u64 to_size, u64 seed);
u64 bpf_skb_load_bytes(u64 skb, u64 offset, u64 to, u64 len, u64);
u64 bpf_skb_store_bytes(u64 skb, u64 offset, u64 from, u64 len, u64 flags);
u64 bpf_l3_csum_replace(u64 skb, u64 offset, u64 from, u64 to, u64 flags);
u64 bpf_l4_csum_replace(u64 skb, u64 offset, u64 from, u64 to, u64 flags);

// --- program-allocated objects (helpers_obj.cc) ----------------------------
u64 bpf_obj_new_impl(u64 type_id, u64 meta, u64, u64, u64);         // kfunc
u64 bpf_obj_drop_impl(u64 p, u64 meta, u64, u64, u64);              // kfunc
u64 bpf_percpu_obj_new_impl(u64 type_id, u64 meta, u64, u64, u64);  // kfunc
u64 bpf_percpu_obj_drop_impl(u64 p, u64 meta, u64, u64, u64);       // kfunc
u64 bpf_kptr_xchg(u64 map_value_field, u64 ptr, u64, u64, u64);
u64 bpf_per_cpu_ptr(u64 percpu_ptr, u64 cpu, u64, u64, u64);
u64 bpf_this_cpu_ptr(u64 percpu_ptr, u64, u64, u64, u64);

}  // namespace userbpf::helpers
