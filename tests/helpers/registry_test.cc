// The helper registry: kernel ids and names, the id-indexed table agreeing
// with find_helper, argument kinds of the pointer-taking helpers, kfuncs.
#include <gtest/gtest.h>
#include <linux/bpf.h>

#include <cstring>
#include <set>
#include <string>

#include "helpers/registry.h"

namespace userbpf::helpers {
namespace {

using vm::ArgKind;
using vm::RetKind;

TEST(Registry, TableAndFindHelperAgree) {
  vm::HelperTable table = helper_table();
  ASSERT_NE(table, nullptr);
  std::set<std::string> names;
  int count = 0;
  for (uint32_t id = 0; id < vm::kMaxHelperId; id++) {
    EXPECT_EQ(table[id], find_helper(id)) << id;
    if (!table[id]) continue;
    count++;
    ASSERT_NE(table[id]->name, nullptr) << id;
    EXPECT_NE(table[id]->fn, nullptr) << table[id]->name;
    EXPECT_EQ(std::strncmp(table[id]->name, "bpf_", 4), 0) << table[id]->name;
    EXPECT_TRUE(names.insert(table[id]->name).second) << "duplicate " << table[id]->name;
    EXPECT_FALSE(table[id]->sleepable_only) << table[id]->name;
  }
  EXPECT_EQ(count, 42);          // Registry.KernelIdsAndNames lists them all
  EXPECT_EQ(table[0], nullptr);  // BPF_FUNC_unspec
}

TEST(Registry, UnknownIdsGiveNull) {
  EXPECT_EQ(find_helper(0), nullptr);
  EXPECT_EQ(find_helper(12), nullptr);  // bpf_tail_call: the engine's business
  EXPECT_EQ(find_helper(vm::kMaxHelperId), nullptr);
  EXPECT_EQ(find_helper(~0u), nullptr);
}

// Ids come from the kernel's enum bpf_func_id.
TEST(Registry, KernelIdsAndNames) {
  struct {
    int id;
    const char* name;
  } expected[] = {
      {BPF_FUNC_map_lookup_elem, "bpf_map_lookup_elem"},
      {BPF_FUNC_map_update_elem, "bpf_map_update_elem"},
      {BPF_FUNC_map_delete_elem, "bpf_map_delete_elem"},
      {BPF_FUNC_probe_read, "bpf_probe_read"},
      {BPF_FUNC_ktime_get_ns, "bpf_ktime_get_ns"},
      {BPF_FUNC_trace_printk, "bpf_trace_printk"},
      {BPF_FUNC_get_prandom_u32, "bpf_get_prandom_u32"},
      {BPF_FUNC_get_smp_processor_id, "bpf_get_smp_processor_id"},
      {BPF_FUNC_skb_store_bytes, "bpf_skb_store_bytes"},
      {BPF_FUNC_l3_csum_replace, "bpf_l3_csum_replace"},
      {BPF_FUNC_l4_csum_replace, "bpf_l4_csum_replace"},
      {BPF_FUNC_get_current_pid_tgid, "bpf_get_current_pid_tgid"},
      {BPF_FUNC_get_current_uid_gid, "bpf_get_current_uid_gid"},
      {BPF_FUNC_get_current_comm, "bpf_get_current_comm"},
      {BPF_FUNC_skb_load_bytes, "bpf_skb_load_bytes"},
      {BPF_FUNC_csum_diff, "bpf_csum_diff"},
      {BPF_FUNC_get_numa_node_id, "bpf_get_numa_node_id"},
      {BPF_FUNC_xdp_adjust_head, "bpf_xdp_adjust_head"},
      {BPF_FUNC_probe_read_str, "bpf_probe_read_str"},
      {BPF_FUNC_xdp_adjust_meta, "bpf_xdp_adjust_meta"},
      {BPF_FUNC_xdp_adjust_tail, "bpf_xdp_adjust_tail"},
      {BPF_FUNC_spin_lock, "bpf_spin_lock"},
      {BPF_FUNC_spin_unlock, "bpf_spin_unlock"},
      {BPF_FUNC_strtol, "bpf_strtol"},
      {BPF_FUNC_strtoul, "bpf_strtoul"},
      {BPF_FUNC_probe_read_user, "bpf_probe_read_user"},
      {BPF_FUNC_probe_read_kernel, "bpf_probe_read_kernel"},
      {BPF_FUNC_probe_read_user_str, "bpf_probe_read_user_str"},
      {BPF_FUNC_probe_read_kernel_str, "bpf_probe_read_kernel_str"},
      {BPF_FUNC_jiffies64, "bpf_jiffies64"},
      {BPF_FUNC_ktime_get_boot_ns, "bpf_ktime_get_boot_ns"},
      {BPF_FUNC_per_cpu_ptr, "bpf_per_cpu_ptr"},
      {BPF_FUNC_this_cpu_ptr, "bpf_this_cpu_ptr"},
      {BPF_FUNC_ktime_get_coarse_ns, "bpf_ktime_get_coarse_ns"},
      {BPF_FUNC_for_each_map_elem, "bpf_for_each_map_elem"},
      {BPF_FUNC_snprintf, "bpf_snprintf"},
      {BPF_FUNC_trace_vprintk, "bpf_trace_vprintk"},
      {BPF_FUNC_loop, "bpf_loop"},
      {BPF_FUNC_strncmp, "bpf_strncmp"},
      {BPF_FUNC_kptr_xchg, "bpf_kptr_xchg"},
      {BPF_FUNC_map_lookup_percpu_elem, "bpf_map_lookup_percpu_elem"},
      {BPF_FUNC_ktime_get_tai_ns, "bpf_ktime_get_tai_ns"},
  };
  for (const auto& e : expected) {
    const vm::HelperProto* p = find_helper(static_cast<uint32_t>(e.id));
    ASSERT_NE(p, nullptr) << e.name;
    EXPECT_STREQ(p->name, e.name);
  }
}

TEST(Registry, PointerArgumentsAreDeclared) {
  const vm::HelperProto* lookup = find_helper(BPF_FUNC_map_lookup_elem);
  EXPECT_EQ(lookup->args[0], ArgKind::kConstMapPtr);
  EXPECT_EQ(lookup->args[1], ArgKind::kMapKey);
  EXPECT_EQ(lookup->args[2], ArgKind::kNone);
  EXPECT_EQ(lookup->ret, RetKind::kMapValueOrNull);

  const vm::HelperProto* update = find_helper(BPF_FUNC_map_update_elem);
  EXPECT_EQ(update->args[2], ArgKind::kMapValue);
  EXPECT_EQ(update->args[3], ArgKind::kAnything);
  EXPECT_EQ(update->ret, RetKind::kInteger);

  const vm::HelperProto* probe = find_helper(BPF_FUNC_probe_read_kernel);
  EXPECT_EQ(probe->args[0], ArgKind::kUninitMem);
  EXPECT_EQ(probe->args[1], ArgKind::kConstSizeOrZero);
  EXPECT_EQ(probe->args[2], ArgKind::kAnything);

  const vm::HelperProto* printk = find_helper(BPF_FUNC_trace_printk);
  EXPECT_EQ(printk->args[0], ArgKind::kMem);
  EXPECT_EQ(printk->args[1], ArgKind::kConstSize);

  const vm::HelperProto* strncmp_p = find_helper(BPF_FUNC_strncmp);
  EXPECT_EQ(strncmp_p->args[2], ArgKind::kConstStr);

  const vm::HelperProto* loop = find_helper(BPF_FUNC_loop);
  EXPECT_EQ(loop->args[1], ArgKind::kFunc);
  EXPECT_EQ(find_helper(BPF_FUNC_for_each_map_elem)->args[1], ArgKind::kFunc);
  EXPECT_EQ(find_helper(BPF_FUNC_xdp_adjust_head)->args[0], ArgKind::kCtx);

  const vm::HelperProto* strtol_p = find_helper(BPF_FUNC_strtol);
  EXPECT_EQ(strtol_p->args[3], ArgKind::kFixedSizeMem);
  EXPECT_EQ(strtol_p->arg_size[3], 8u);
}

// Every memory argument is followed by its size argument.
TEST(Registry, MemoryArgumentsHaveSizes) {
  for (uint32_t id = 0; id < vm::kMaxHelperId; id++) {
    const vm::HelperProto* p = find_helper(id);
    if (!p) continue;
    for (int i = 0; i < 5; i++) {
      if (p->args[i] != ArgKind::kMem && p->args[i] != ArgKind::kUninitMem) continue;
      ASSERT_LT(i, 4) << p->name;
      EXPECT_TRUE(p->args[i + 1] == ArgKind::kConstSize ||
                  p->args[i + 1] == ArgKind::kConstSizeOrZero)
          << p->name << " arg " << i;
    }
  }
}

TEST(Registry, KfuncsByName) {
  for (const char* name : {"bpf_obj_new_impl", "bpf_obj_drop_impl", "bpf_percpu_obj_new_impl",
                           "bpf_percpu_obj_drop_impl"}) {
    const vm::HelperProto* k = find_kfunc(name);
    ASSERT_NE(k, nullptr) << name;
    EXPECT_STREQ(k->name, name);
  }
  EXPECT_EQ(find_kfunc("bpf_no_such_kfunc"), nullptr);
  EXPECT_EQ(find_kfunc(""), nullptr);
}

}  // namespace
}  // namespace userbpf::helpers
