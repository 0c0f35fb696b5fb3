// The one list of helpers (by kernel id, enum bpf_func_id) and kfuncs (by
// name) with their argument and return kinds; the id-indexed table and the
// look-ups are derived from it at compile time.
//
// Argument kinds follow the kernel's bpf_func_proto (kernel/bpf/helpers.c,
// kernel/trace/bpf_trace.c, net/core/filter.c) so the engine checks the same
// pointers the verifier would before the call. Where the kernel allows NULL
// with a zero size (ARG_PTR_TO_MEM | PTR_MAYBE_NULL + ARG_CONST_SIZE_OR_ZERO:
// csum_diff, snprintf, trace_vprintk) the pair is kMem/kUninitMem +
// kConstSizeOrZero.
#include "helpers/registry.h"

#include <array>
#include <initializer_list>

#include "helpers/helper_fns.h"

namespace userbpf::helpers {
namespace {

using vm::ArgKind;
using vm::HelperProto;
using vm::RetKind;
using enum vm::ArgKind;

struct HelperEntry {
  uint32_t id;
  HelperProto proto;
};

constexpr HelperEntry def(uint32_t id, const char* name, vm::HelperFn fn, RetKind ret,
                          std::initializer_list<ArgKind> args) {
  HelperEntry e{id, {}};
  e.proto.name = name;
  e.proto.fn = fn;
  e.proto.ret = ret;
  int i = 0;
  for (ArgKind a : args) e.proto.args[i++] = a;
  return e;
}

// A helper that may change the packet bounds (HelperProto::moves_packet).
constexpr HelperEntry moving_packet(HelperEntry e) {
  e.proto.moves_packet = true;
  return e;
}

// A kFixedSizeMem argument's size.
constexpr HelperEntry with_arg_size(HelperEntry e, int arg, uint32_t size) {
  e.proto.arg_size[arg] = size;
  return e;
}

#define USERBPF_HELPER(id, fn, ret, ...) def(id, #fn, &fn, RetKind::ret, {__VA_ARGS__})

// Sorted by id. Name = the kernel's helper name (bpf_ + FN() name).
constexpr HelperEntry kHelpers[] = {
    USERBPF_HELPER(1, bpf_map_lookup_elem, kMapValueOrNull, kConstMapPtr, kMapKey),
    USERBPF_HELPER(2, bpf_map_update_elem, kInteger, kConstMapPtr, kMapKey, kMapValue, kAnything),
    USERBPF_HELPER(3, bpf_map_delete_elem, kInteger, kConstMapPtr, kMapKey),
    USERBPF_HELPER(4, bpf_probe_read, kInteger, kUninitMem, kConstSizeOrZero, kAnything),
    USERBPF_HELPER(5, bpf_ktime_get_ns, kInteger),
    USERBPF_HELPER(6, bpf_trace_printk, kInteger, kMem, kConstSize, kAnything, kAnything,
                   kAnything),
    USERBPF_HELPER(7, bpf_get_prandom_u32, kInteger),
    USERBPF_HELPER(8, bpf_get_smp_processor_id, kInteger),
    USERBPF_HELPER(9, bpf_skb_store_bytes, kInteger, kCtx, kAnything, kMem, kConstSize, kAnything),
    USERBPF_HELPER(10, bpf_l3_csum_replace, kInteger, kCtx, kAnything, kAnything, kAnything,
                   kAnything),
    USERBPF_HELPER(11, bpf_l4_csum_replace, kInteger, kCtx, kAnything, kAnything, kAnything,
                   kAnything),
    USERBPF_HELPER(14, bpf_get_current_pid_tgid, kInteger),
    USERBPF_HELPER(15, bpf_get_current_uid_gid, kInteger),
    USERBPF_HELPER(16, bpf_get_current_comm, kInteger, kUninitMem, kConstSize),
    USERBPF_HELPER(26, bpf_skb_load_bytes, kInteger, kCtx, kAnything, kUninitMem, kConstSize),
    USERBPF_HELPER(28, bpf_csum_diff, kInteger, kMem, kConstSizeOrZero, kMem, kConstSizeOrZero,
                   kAnything),
    USERBPF_HELPER(42, bpf_get_numa_node_id, kInteger),
    moving_packet(USERBPF_HELPER(44, bpf_xdp_adjust_head, kInteger, kCtx, kAnything)),
    USERBPF_HELPER(45, bpf_probe_read_str, kInteger, kUninitMem, kConstSizeOrZero, kAnything),
    moving_packet(USERBPF_HELPER(54, bpf_xdp_adjust_meta, kInteger, kCtx, kAnything)),
    moving_packet(USERBPF_HELPER(65, bpf_xdp_adjust_tail, kInteger, kCtx, kAnything)),
    // The lock (ARG_PTR_TO_SPIN_LOCK) is checked by the helper.
    USERBPF_HELPER(93, bpf_spin_lock, kVoid, kAnything),
    USERBPF_HELPER(94, bpf_spin_unlock, kVoid, kAnything),
    with_arg_size(
        USERBPF_HELPER(105, bpf_strtol, kInteger, kMem, kConstSize, kAnything, kFixedSizeMem), 3,
        sizeof(int64_t)),
    with_arg_size(
        USERBPF_HELPER(106, bpf_strtoul, kInteger, kMem, kConstSize, kAnything, kFixedSizeMem), 3,
        sizeof(uint64_t)),
    USERBPF_HELPER(112, bpf_probe_read_user, kInteger, kUninitMem, kConstSizeOrZero, kAnything),
    USERBPF_HELPER(113, bpf_probe_read_kernel, kInteger, kUninitMem, kConstSizeOrZero, kAnything),
    USERBPF_HELPER(114, bpf_probe_read_user_str, kInteger, kUninitMem, kConstSizeOrZero, kAnything),
    USERBPF_HELPER(115, bpf_probe_read_kernel_str, kInteger, kUninitMem, kConstSizeOrZero,
                   kAnything),
    USERBPF_HELPER(118, bpf_jiffies64, kInteger),
    USERBPF_HELPER(125, bpf_ktime_get_boot_ns, kInteger),
    // Per-CPU objects from bpf_percpu_obj_new: checked by the helper itself.
    USERBPF_HELPER(153, bpf_per_cpu_ptr, kInteger, kAnything, kAnything),
    USERBPF_HELPER(154, bpf_this_cpu_ptr, kInteger, kAnything),
    USERBPF_HELPER(160, bpf_ktime_get_coarse_ns, kInteger),
    // callback_ctx is a stack pointer or NULL the helper only passes on.
    USERBPF_HELPER(164, bpf_for_each_map_elem, kInteger, kConstMapPtr, kFunc, kAnything, kAnything),
    USERBPF_HELPER(165, bpf_snprintf, kInteger, kUninitMem, kConstSizeOrZero, kConstStr, kMem,
                   kConstSizeOrZero),
    USERBPF_HELPER(177, bpf_trace_vprintk, kInteger, kMem, kConstSize, kMem, kConstSizeOrZero),
    USERBPF_HELPER(181, bpf_loop, kInteger, kAnything, kFunc, kAnything, kAnything),
    USERBPF_HELPER(182, bpf_strncmp, kInteger, kMem, kConstSize, kConstStr),
    // The field and object are checked by the helper (helpers_obj.cc).
    USERBPF_HELPER(194, bpf_kptr_xchg, kInteger, kAnything, kAnything),
    USERBPF_HELPER(195, bpf_map_lookup_percpu_elem, kMapValueOrNull, kConstMapPtr, kMapKey,
                   kAnything),
    USERBPF_HELPER(208, bpf_ktime_get_tai_ns, kInteger),
};

#undef USERBPF_HELPER

constexpr bool helpers_well_formed() {
  uint32_t prev = 0;
  bool first = true;
  for (const HelperEntry& e : kHelpers) {
    if (e.id >= vm::kMaxHelperId || e.id == 0) return false;
    if (!first && e.id <= prev) return false;  // sorted, so ids are unique
    if (!e.proto.name || !e.proto.fn) return false;
    for (int i = 0; i < 5; i++)
      if (e.proto.args[i] == kFixedSizeMem && e.proto.arg_size[i] == 0) return false;
    prev = e.id;
    first = false;
  }
  return true;
}
static_assert(helpers_well_formed(), "helper list: ids sorted, unique, in range, with fn");

constexpr std::array<const HelperProto*, vm::kMaxHelperId> kHelperTable = [] {
  std::array<const HelperProto*, vm::kMaxHelperId> table{};
  for (const HelperEntry& e : kHelpers) table[e.id] = &e.proto;
  return table;
}();

// kfuncs by name, resolved by the loader from extern symbols. Later issues
// add bpf_arena_alloc_pages, ... here.
constexpr HelperEntry kKfuncEntries[] = {
    // A program run is already an RCU read-side section: explicit nested
    // sections need no work (the RCU issue revisits them for sleepable runs).
    def(0, "bpf_rcu_read_lock", &bpf_rcu_read_lock, RetKind::kVoid, {}),
    def(0, "bpf_rcu_read_unlock", &bpf_rcu_read_unlock, RetKind::kVoid, {}),
    // The loader gives each bpf_obj_new call a copy of this proto returning
    // kMemOrNull of its type's size (object_link_obj.cc).
    def(0, "bpf_obj_new_impl", &bpf_obj_new_impl, RetKind::kInteger, {kAnything, kAnything}),
    def(0, "bpf_obj_drop_impl", &bpf_obj_drop_impl, RetKind::kVoid, {kAnything, kAnything}),
    def(0, "bpf_percpu_obj_new_impl", &bpf_percpu_obj_new_impl, RetKind::kInteger,
        {kAnything, kAnything}),
    def(0, "bpf_percpu_obj_drop_impl", &bpf_percpu_obj_drop_impl, RetKind::kVoid,
        {kAnything, kAnything}),
};
constexpr std::array<HelperProto, std::size(kKfuncEntries)> kKfuncs = [] {
  std::array<HelperProto, std::size(kKfuncEntries)> out{};
  for (size_t i = 0; i < out.size(); i++) out[i] = kKfuncEntries[i].proto;
  return out;
}();

}  // namespace

vm::HelperTable helper_table() {
  return kHelperTable.data();
}

const vm::HelperProto* find_helper(uint32_t id) {
  return id < vm::kMaxHelperId ? kHelperTable[id] : nullptr;
}

const vm::HelperProto* find_kfunc(std::string_view name) {
  for (const HelperProto& k : kKfuncs)
    if (name == k.name) return &k;
  return nullptr;
}

}  // namespace userbpf::helpers
