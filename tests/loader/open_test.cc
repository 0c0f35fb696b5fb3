// open_object() on well-formed objects: maps from BTF and global data,
// programs and subprograms, relocations, license, and the error objects
// whose constructs userbpf refuses (unknown sections, CO-RE, arena, externs).
#include <gtest/gtest.h>

#include "loader/btf.h"
#include "loader_test_util.h"

namespace userbpf::loader {
namespace {

using testing::expect_error;
using testing::find_map;
using testing::find_prog;
using testing::open_prog;
using Kind = RelocSpec::Kind;

const RelocSpec* reloc_at(const ProgSpec& p, uint32_t insn) {
  for (const RelocSpec& r : p.relocs)
    if (r.insn_idx == insn) return &r;
  return nullptr;
}

std::string btf_type_name(const ObjectSpec& spec, uint32_t id) {
  auto btf = Btf::parse(spec.btf);
  EXPECT_TRUE(btf.ok());
  auto skipped = btf->skip_mods_and_typedefs(id);
  return std::string(btf->type_name(id)) + "/" + std::string(btf->type_name(*skipped));
}

TEST(OpenObject, MainObjectMaps) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  EXPECT_EQ(spec->name, "loader_main");
  EXPECT_EQ(spec->license, "GPL");
  EXPECT_FALSE(spec->btf.empty());

  // BTF maps first (DATASEC order), then global data in section order.
  std::vector<std::string> names;
  for (const MapSpec& m : spec->maps) names.push_back(m.attr.name);
  EXPECT_EQ(names, (std::vector<std::string>{"counts", "arr", ".data", ".rodata", ".data.names",
                                             ".bss", ".rodata.str1.1"}));

  const MapSpec& counts = spec->maps[0];
  EXPECT_EQ(counts.section, ".maps");
  EXPECT_FALSE(counts.is_global_data);
  EXPECT_EQ(counts.attr.type, 1u);  // HASH
  EXPECT_EQ(counts.attr.key_size, 4u);
  EXPECT_EQ(counts.attr.value_size, 8u);
  EXPECT_EQ(counts.attr.max_entries, 64u);
  EXPECT_EQ(btf_type_name(*spec, counts.btf_key_type_id), "__u32/unsigned int");
  EXPECT_EQ(btf_type_name(*spec, counts.btf_value_type_id), "__u64/unsigned long long");

  const MapSpec& arr = spec->maps[1];
  EXPECT_EQ(arr.attr.type, 2u);  // ARRAY
  EXPECT_EQ(arr.attr.key_size, 4u);
  EXPECT_EQ(arr.attr.value_size, 16u);  // struct val with padding
  EXPECT_EQ(arr.attr.max_entries, 8u);
  EXPECT_EQ(arr.btf_key_type_id, 0u);  // from __uint(key_size, 4): no type
  EXPECT_EQ(btf_type_name(*spec, arr.btf_value_type_id), "val/val");

  const MapSpec& data = spec->maps[2];
  EXPECT_TRUE(data.is_global_data);
  EXPECT_FALSE(data.readonly);
  EXPECT_EQ(data.section, ".data");
  EXPECT_EQ(data.attr.type, 2u);
  EXPECT_EQ(data.attr.key_size, 4u);
  EXPECT_EQ(data.attr.max_entries, 1u);
  EXPECT_EQ(data.attr.value_size, 16u);
  EXPECT_EQ(data.attr.map_flags, 0u);
  std::vector<uint8_t> want_data = {42, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(data.init, want_data);
  EXPECT_EQ(btf_type_name(*spec, data.btf_value_type_id), ".data/.data");

  const MapSpec& ro = spec->maps[3];
  EXPECT_TRUE(ro.readonly);
  EXPECT_EQ(ro.attr.map_flags, maps::kBpfFRdonlyProg);
  ASSERT_EQ(ro.init.size(), 10u);  // ro_var (4) + "tc %d\0"
  EXPECT_EQ(ro.init[0], 5);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&ro.init[4])), "tc %d");

  const MapSpec& names_sec = spec->maps[4];
  EXPECT_FALSE(names_sec.readonly);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(names_sec.init.data())), "hello");

  const MapSpec& bss = spec->maps[5];
  EXPECT_EQ(bss.attr.value_size, 16u);
  EXPECT_EQ(bss.init, std::vector<uint8_t>(16, 0));
  EXPECT_FALSE(bss.readonly);

  const MapSpec& str = spec->maps[6];
  EXPECT_TRUE(str.readonly);
  EXPECT_EQ(str.attr.value_size, 12u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(str.init.data())), "literal %s\n");
  EXPECT_EQ(str.btf_value_type_id, 0u);  // string sections have no DATASEC
}

TEST(OpenObject, MainObjectPrograms) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  // Section order, then offset within the section.
  std::vector<std::string> names;
  for (const ProgSpec& p : spec->progs) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"global_helper", "static_helper", "loop_cb",
                                             "xdp_prog", "tc_prog", "sys_prog"}));

  const ProgSpec* xdp = find_prog(*spec, "xdp_prog");
  ASSERT_NE(xdp, nullptr);
  EXPECT_EQ(xdp->section, "xdp");
  EXPECT_EQ(xdp->type, vm::ProgType::kXDP);
  EXPECT_FALSE(xdp->sleepable);
  EXPECT_FALSE(xdp->is_subprog);
  EXPECT_EQ(xdp->insns.size(), 32u);

  const ProgSpec* tc = find_prog(*spec, "tc_prog");
  EXPECT_EQ(tc->type, vm::ProgType::kSCHED_CLS);
  const ProgSpec* sys = find_prog(*spec, "sys_prog");
  EXPECT_EQ(sys->type, vm::ProgType::kSYSCALL);
  EXPECT_TRUE(sys->sleepable);

  for (const char* sub : {"global_helper", "static_helper", "loop_cb"}) {
    const ProgSpec* p = find_prog(*spec, sub);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(p->is_subprog) << sub;
    EXPECT_EQ(p->section, ".text");
    EXPECT_EQ(p->type, vm::ProgType::kUNSPEC);
  }
  EXPECT_EQ(find_prog(*spec, "global_helper")->section_insn_off, 0u);
  EXPECT_EQ(find_prog(*spec, "static_helper")->section_insn_off, 19u);
  EXPECT_EQ(find_prog(*spec, "loop_cb")->section_insn_off, 26u);
}

TEST(OpenObject, MainObjectRelocations) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  int counts = find_map(*spec, "counts"), arr = find_map(*spec, "arr");
  int data = find_map(*spec, ".data"), rodata = find_map(*spec, ".rodata");
  int bss = find_map(*spec, ".bss"), names = find_map(*spec, ".data.names");
  int str = find_map(*spec, ".rodata.str1.1");

  const ProgSpec* xdp = find_prog(*spec, "xdp_prog");
  ASSERT_EQ(xdp->relocs.size(), 4u);
  const RelocSpec* r = reloc_at(*xdp, 4);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->kind, Kind::kMap);
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(counts));
  r = reloc_at(*xdp, 15);  // bpf_loop callback: .text section symbol + imm 0xd0
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->kind, Kind::kFunc);
  EXPECT_EQ(r->symbol, "loop_cb");
  EXPECT_EQ(r->target_section, ".text");
  EXPECT_EQ(r->target_insn, 26u);
  r = reloc_at(*xdp, 19);
  EXPECT_EQ(r->kind, Kind::kMapValue);
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(data));
  EXPECT_EQ(r->offset, 0u);
  r = reloc_at(*xdp, 26);  // global function: symbol value, imm -1
  EXPECT_EQ(r->kind, Kind::kCall);
  EXPECT_EQ(r->symbol, "global_helper");
  EXPECT_EQ(r->target_insn, 0u);

  const ProgSpec* tc = find_prog(*spec, "tc_prog");
  ASSERT_EQ(tc->relocs.size(), 6u);
  EXPECT_EQ(reloc_at(*tc, 4)->map_idx, static_cast<uint32_t>(arr));
  EXPECT_EQ(reloc_at(*tc, 9)->kind, Kind::kKfunc);
  EXPECT_EQ(reloc_at(*tc, 9)->symbol, "bpf_rcu_read_lock");
  EXPECT_EQ(reloc_at(*tc, 12)->symbol, "bpf_rcu_read_unlock");
  r = reloc_at(*tc, 14);  // bpf_printk format: .rodata section symbol + imm 4
  EXPECT_EQ(r->kind, Kind::kMapValue);
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(rodata));
  EXPECT_EQ(r->offset, 4u);
  r = reloc_at(*tc, 19);  // static function: .text section symbol, imm = index - 1
  EXPECT_EQ(r->kind, Kind::kCall);
  EXPECT_EQ(r->symbol, "static_helper");
  EXPECT_EQ(r->target_insn, 19u);
  EXPECT_EQ(reloc_at(*tc, 20)->map_idx, static_cast<uint32_t>(names));

  const ProgSpec* sys = find_prog(*spec, "sys_prog");
  r = reloc_at(*sys, 5);
  EXPECT_EQ(r->kind, Kind::kMapValue);
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(str));

  const ProgSpec* gh = find_prog(*spec, "global_helper");
  ASSERT_EQ(gh->relocs.size(), 4u);
  r = reloc_at(*gh, 0);  // static_bss: .bss section symbol + imm 8
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(bss));
  EXPECT_EQ(r->offset, 8u);
  EXPECT_EQ(reloc_at(*gh, 7)->offset, 0u);  // bss_var
  r = reloc_at(*gh, 12);  // call to static_helper in the same section: no ELF relocation
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->kind, Kind::kCall);
  EXPECT_EQ(r->symbol, "static_helper");
  EXPECT_EQ(reloc_at(*gh, 13)->map_idx, static_cast<uint32_t>(rodata));

  const ProgSpec* sh = find_prog(*spec, "static_helper");
  r = reloc_at(*sh, 2);  // data_var2 at .data+8, insn 21 of .text
  EXPECT_EQ(r->map_idx, static_cast<uint32_t>(data));
  EXPECT_EQ(r->offset, 8u);

  // Relocations are sorted by instruction.
  for (const ProgSpec& p : spec->progs)
    for (size_t i = 1; i < p.relocs.size(); i++)
      EXPECT_LT(p.relocs[i - 1].insn_idx, p.relocs[i].insn_idx);
}

TEST(OpenObject, MapDefinitionAttributes) {
  auto spec = open_prog("loader_mapdefs.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  int bloom = find_map(*spec, "bloom"), lru = find_map(*spec, "lru"),
      pcpu = find_map(*spec, "static_pcpu");
  ASSERT_GE(bloom, 0);
  ASSERT_GE(lru, 0);
  ASSERT_GE(pcpu, 0);
  const maps::MapAttr& b = spec->maps[bloom].attr;
  EXPECT_EQ(b.type, 30u);  // BLOOM_FILTER
  EXPECT_EQ(b.key_size, 0u);
  EXPECT_EQ(b.value_size, 8u);
  EXPECT_EQ(b.max_entries, 100u);
  EXPECT_EQ(b.map_extra, 3u);

  const MapSpec& l = spec->maps[lru];
  EXPECT_EQ(l.attr.type, 9u);  // LRU_HASH
  EXPECT_EQ(l.attr.key_size, 4u);
  EXPECT_EQ(l.attr.value_size, 48u);
  EXPECT_EQ(l.attr.map_flags, 2u);  // BPF_F_NO_COMMON_LRU
  EXPECT_EQ(btf_type_name(*spec, l.btf_key_type_id), "key_t/unsigned int");

  const maps::MapAttr& p = spec->maps[pcpu].attr;
  EXPECT_EQ(p.type, 6u);         // PERCPU_ARRAY
  EXPECT_EQ(p.value_size, 15u);  // char[3][5]

  int bss = find_map(*spec, ".bss.extra");
  ASSERT_GE(bss, 0);
  EXPECT_TRUE(spec->maps[bss].is_global_data);
  EXPECT_FALSE(spec->maps[bss].readonly);
  EXPECT_EQ(spec->maps[bss].init, std::vector<uint8_t>(24, 0));
  EXPECT_EQ(spec->license, "Dual BSD/GPL");
  EXPECT_EQ(spec->kern_version, 0x060c00u);
}

TEST(OpenObject, LinkOrderObjectReferences) {
  auto spec = open_prog("loader_order.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  const ProgSpec* a = find_prog(*spec, "a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->relocs.size(), 1u);  // a -> c, pc-relative, no ELF relocation
  EXPECT_EQ(a->relocs[0].symbol, "c");
  const ProgSpec* e2 = find_prog(*spec, "entry2");
  EXPECT_EQ(e2->type, vm::ProgType::kTRACEPOINT);
  ASSERT_EQ(e2->relocs.size(), 2u);
  EXPECT_EQ(e2->relocs[0].kind, Kind::kFunc);
  EXPECT_EQ(e2->relocs[0].symbol, "cb");
  EXPECT_EQ(e2->relocs[1].kind, Kind::kCall);
  EXPECT_EQ(e2->relocs[1].symbol, "b");
}

TEST(OpenObject, NameStripsDirectoryAndSuffix) {
  auto bytes = testing::read_prog("loader_order.bpf.o");
  EXPECT_EQ(open_object(bytes.data(), bytes.size(), "/x/y/prog.bpf.o")->name, "prog");
  EXPECT_EQ(open_object(bytes.data(), bytes.size(), "plain.o")->name, "plain");
  EXPECT_EQ(open_object(bytes.data(), bytes.size(), "noext")->name, "noext");
}

TEST(OpenObject, UnknownSectionName) {
  expect_error(open_prog("loader_bad_section.bpf.o"), EINVAL,
               {"'bogus/section'", "unknown program section"});
}

TEST(OpenObject, CoreRelocationsRejected) {
  expect_error(open_prog("loader_bad_core.bpf.o"), ENOTSUP,
               {"program 'core_prog'", "kprobe/do_nothing", "CO-RE", "task_like", "0:1"});
}

TEST(OpenObject, ArenaGlobalsNotSupportedYet) {
  expect_error(open_prog("loader_bad_arena.bpf.o"), ENOTSUP, {".addr_space.1", "arena"});
}

TEST(OpenObject, ConflictingKeySize) {
  expect_error(open_prog("loader_bad_mapdef.bpf.o"), EINVAL,
               {"map 'conflicting'", "conflicting key size 8 != 4"});
}

TEST(OpenObject, UnknownMapField) {
  expect_error(open_prog("loader_bad_mapfield.bpf.o"), ENOTSUP,
               {"map 'odd'", "unknown field 'colour'"});
}

TEST(OpenObject, ExternVariableRejected) {
  expect_error(open_prog("loader_bad_extern.bpf.o"), ENOTSUP,
               {"LINUX_KERNEL_VERSION", "program 'prog'", "extern"});
}

TEST(OpenObject, UnknownKfuncStillOpens) {
  // Kfuncs resolve at load; open only records the name.
  auto spec = open_prog("loader_bad_kfunc.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  const ProgSpec* p = find_prog(*spec, "prog");
  ASSERT_EQ(p->relocs.size(), 1u);
  EXPECT_EQ(p->relocs[0].kind, Kind::kKfunc);
  EXPECT_EQ(p->relocs[0].symbol, "userbpf_no_such_kfunc");
}

}  // namespace
}  // namespace userbpf::loader
