// load_object(): map creation and global data initialization, linking of
// entry programs with their subprograms (libbpf's depth-first order),
// rewriting into the linked form, kfunc and helper resolution, preparation.
#include <gtest/gtest.h>

#include "helpers/registry.h"
#include "loader_test_util.h"

namespace userbpf::loader {
namespace {

using testing::expect_error;
using testing::find_map;
using testing::find_prog;
using testing::open_bytes;
using testing::open_prog;
using testing::RawElf;
using testing::read_prog;

// Function `f` of the spec must appear at `at` in the linked program: same
// instructions except the slots its relocations rewrite.
void expect_copy(const vm::Program& prog, const ProgSpec& f, size_t at) {
  ASSERT_LE(at + f.insns.size(), prog.insns.size()) << f.name;
  std::vector<bool> relocated(f.insns.size(), false);
  for (const RelocSpec& r : f.relocs) {
    relocated[r.insn_idx] = true;
    if (r.kind != RelocSpec::Kind::kCall && r.kind != RelocSpec::Kind::kKfunc)
      relocated[r.insn_idx + 1] = true;
  }
  for (size_t i = 0; i < f.insns.size(); i++) {
    if (relocated[i]) continue;
    EXPECT_EQ(std::memcmp(&prog.insns[at + i], &f.insns[i], sizeof(isa::Insn)), 0)
        << f.name << " insn " << i << " at pc " << at + i;
  }
}

// The pc a call or callback load at `pc` targets.
int64_t target(const vm::Program& prog, size_t pc) {
  return static_cast<int64_t>(pc) + prog.insns[pc].imm + 1;
}

const vm::Program* find_loaded(const LoadedObject& obj, const std::string& name) {
  for (const auto& p : obj.programs)
    if (p->name == name) return p.get();
  return nullptr;
}

TEST(LoadObject, DepthFirstLinkOrder) {
  auto spec = open_prog("loader_order.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  auto obj = load_object(*spec);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  ASSERT_EQ((*obj)->programs.size(), 2u);
  ASSERT_EQ((*obj)->maps.size(), spec->maps.size());

  // entry calls a (which calls c), then b: entry, a, c, b.
  const vm::Program& e = *(*obj)->programs[0];
  EXPECT_EQ(e.name, "entry");
  EXPECT_EQ(e.type, vm::ProgType::kSYSCALL);
  EXPECT_TRUE(e.sleepable);
  EXPECT_TRUE(e.prepared);
  EXPECT_EQ(e.license, "GPL");
  EXPECT_EQ(e.helpers, helpers::helper_table());
  const ProgSpec& entry = *find_prog(*spec, "entry");
  const ProgSpec& a = *find_prog(*spec, "a");
  const ProgSpec& b = *find_prog(*spec, "b");
  const ProgSpec& c = *find_prog(*spec, "c");
  size_t a_at = entry.insns.size(), c_at = a_at + a.insns.size(), b_at = c_at + c.insns.size();
  ASSERT_EQ(e.insns.size(), b_at + b.insns.size());
  expect_copy(e, entry, 0);
  expect_copy(e, a, a_at);
  expect_copy(e, c, c_at);
  expect_copy(e, b, b_at);
  EXPECT_EQ(e.insns[1].src, isa::kPseudoCall);
  EXPECT_EQ(target(e, 1), static_cast<int64_t>(a_at));
  EXPECT_EQ(target(e, 4), static_cast<int64_t>(b_at));
  EXPECT_EQ(target(e, a_at), static_cast<int64_t>(c_at));  // a's pc-relative call, re-based
  EXPECT_EQ(e.func_entries,
            (std::vector<uint32_t>{0, static_cast<uint32_t>(a_at), static_cast<uint32_t>(c_at),
                                   static_cast<uint32_t>(b_at)}));

  // entry2 takes cb's address (bpf_loop), then calls b: entry2, cb, b.
  const vm::Program& e2 = *(*obj)->programs[1];
  EXPECT_EQ(e2.name, "entry2");
  EXPECT_EQ(e2.type, vm::ProgType::kTRACEPOINT);
  EXPECT_FALSE(e2.sleepable);
  const ProgSpec& entry2 = *find_prog(*spec, "entry2");
  const ProgSpec& cb = *find_prog(*spec, "cb");
  size_t cb_at = entry2.insns.size(), b2_at = cb_at + cb.insns.size();
  ASSERT_EQ(e2.insns.size(), b2_at + b.insns.size());
  expect_copy(e2, cb, cb_at);
  expect_copy(e2, b, b2_at);
  EXPECT_EQ(e2.insns[1].code, isa::kLdImm64);
  EXPECT_EQ(e2.insns[1].src, isa::kPseudoFunc);
  EXPECT_EQ(target(e2, 1), static_cast<int64_t>(cb_at));
  EXPECT_EQ(e2.insns[2].imm, 0);
  EXPECT_EQ(target(e2, 7), static_cast<int64_t>(b2_at));
  // cb's global variable: .bss as MAP_IDX_VALUE.
  int bss = find_map(*spec, ".bss");
  ASSERT_GE(bss, 0);
  EXPECT_EQ(e2.insns[cb_at].src, isa::kPseudoMapIdxValue);
  EXPECT_EQ(e2.insns[cb_at].imm, bss);
  EXPECT_EQ(e2.insns[cb_at + 1].imm, 0);
  EXPECT_EQ(e2.maps.size(), spec->maps.size());
  EXPECT_EQ(e2.maps[bss], (*obj)->maps[bss].get());
}

// The main object calls kfuncs; without them in the registry the load fails
// naming the kfunc, and with the calls replaced by a helper it loads.
TEST(LoadObject, MainObject) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  ProgSpec& tc = const_cast<ProgSpec&>(*find_prog(*spec, "tc_prog"));
  if (helpers::find_kfunc("bpf_rcu_read_lock") == nullptr) {
    expect_error(load_object(*spec), ENOENT,
                 {"program 'tc_prog'", "unknown kfunc 'bpf_rcu_read_lock'"});
    // bpf_get_prandom_u32 (7) takes no arguments, like the kfuncs.
    std::vector<RelocSpec> kept;
    for (const RelocSpec& r : tc.relocs) {
      if (r.kind == RelocSpec::Kind::kKfunc)
        tc.insns[r.insn_idx] = isa::Insn{isa::kCall, 0, 0, 0, 7};
      else
        kept.push_back(r);
    }
    tc.relocs = kept;
  }
  auto loaded = load_object(*spec);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const LoadedObject& obj = **loaded;

  // Global data created with its initial bytes; .rodata frozen.
  ASSERT_EQ(obj.maps.size(), 7u);
  for (size_t i = 0; i < obj.maps.size(); i++)
    EXPECT_EQ(obj.maps[i]->attr.name, spec->maps[i].attr.name);
  auto value = [&](const char* name) {
    maps::Map* m = obj.maps[find_map(*spec, name)].get();
    return static_cast<const uint8_t*>(m->ops->direct_value_addr(m));
  };
  EXPECT_EQ(value(".data")[0], 42);
  EXPECT_EQ(value(".data")[8], 7);
  EXPECT_STREQ(reinterpret_cast<const char*>(value(".data.names")), "hello");
  EXPECT_STREQ(reinterpret_cast<const char*>(value(".rodata.str1.1")), "literal %s\n");
  EXPECT_EQ(value(".rodata")[0], 5);
  for (int i = 0; i < 16; i++) EXPECT_EQ(value(".bss")[i], 0);
  EXPECT_TRUE(obj.maps[find_map(*spec, ".rodata")]->frozen.load());
  EXPECT_TRUE(obj.maps[find_map(*spec, ".rodata.str1.1")]->frozen.load());
  EXPECT_FALSE(obj.maps[find_map(*spec, ".data")]->frozen.load());
  EXPECT_FALSE(obj.maps[find_map(*spec, ".bss")]->frozen.load());
  EXPECT_EQ(obj.maps[find_map(*spec, "counts")]->attr.type, 1u);

  ASSERT_EQ(obj.programs.size(), 3u);
  const vm::Program& xdp = *find_loaded(obj, "xdp_prog");
  const vm::Program& tcp = *find_loaded(obj, "tc_prog");
  const vm::Program& sys = *find_loaded(obj, "sys_prog");
  EXPECT_EQ(xdp.type, vm::ProgType::kXDP);
  EXPECT_EQ(tcp.type, vm::ProgType::kSCHED_CLS);
  EXPECT_TRUE(sys.sleepable);
  for (const vm::Program* p : {&xdp, &tcp, &sys}) EXPECT_TRUE(p->prepared) << p->name;

  // xdp: loop_cb (callback) first, then global_helper, then static_helper
  // (reached through global_helper).
  const ProgSpec& gh = *find_prog(*spec, "global_helper");
  const ProgSpec& sh = *find_prog(*spec, "static_helper");
  const ProgSpec& cb = *find_prog(*spec, "loop_cb");
  size_t cb_at = 32, gh_at = cb_at + cb.insns.size(), sh_at = gh_at + gh.insns.size();
  ASSERT_EQ(xdp.insns.size(), sh_at + sh.insns.size());
  expect_copy(xdp, *find_prog(*spec, "xdp_prog"), 0);
  expect_copy(xdp, cb, cb_at);
  expect_copy(xdp, gh, gh_at);
  expect_copy(xdp, sh, sh_at);
  EXPECT_EQ(xdp.insns[4].src, isa::kPseudoMapIdx);
  EXPECT_EQ(xdp.insns[4].imm, find_map(*spec, "counts"));
  EXPECT_EQ(xdp.insns[5].imm, 0);
  EXPECT_EQ(xdp.insns[15].src, isa::kPseudoFunc);
  EXPECT_EQ(target(xdp, 15), static_cast<int64_t>(cb_at));
  EXPECT_EQ(xdp.insns[19].src, isa::kPseudoMapIdxValue);
  EXPECT_EQ(xdp.insns[19].imm, find_map(*spec, ".data"));
  EXPECT_EQ(target(xdp, 26), static_cast<int64_t>(gh_at));
  EXPECT_EQ(target(xdp, gh_at + 12), static_cast<int64_t>(sh_at));
  EXPECT_EQ(xdp.insns[gh_at].imm, find_map(*spec, ".bss"));  // static_bss: .bss + 8
  EXPECT_EQ(xdp.insns[gh_at + 1].imm, 8);
  EXPECT_EQ(xdp.insns[sh_at + 3].imm, 8);  // data_var2: .data + 8

  // tc: only static_helper; sys: global_helper then static_helper.
  EXPECT_EQ(tcp.insns.size(), find_prog(*spec, "tc_prog")->insns.size() + sh.insns.size());
  EXPECT_EQ(target(tcp, 19), static_cast<int64_t>(find_prog(*spec, "tc_prog")->insns.size()));
  EXPECT_EQ(tcp.insns[14].imm, find_map(*spec, ".rodata"));
  EXPECT_EQ(tcp.insns[15].imm, 4);
  size_t sys_n = find_prog(*spec, "sys_prog")->insns.size();
  EXPECT_EQ(sys.insns.size(), sys_n + gh.insns.size() + sh.insns.size());
  EXPECT_EQ(target(sys, 10), static_cast<int64_t>(sys_n));
  EXPECT_EQ(sys.insns[5].imm, find_map(*spec, ".rodata.str1.1"));

  if (helpers::find_kfunc("bpf_rcu_read_lock") != nullptr) {
    ASSERT_EQ(tcp.kfuncs.size(), 2u);
    EXPECT_EQ(tcp.insns[9].src, isa::kPseudoKfuncCall);
    EXPECT_EQ(tcp.insns[9].imm, 0);
    EXPECT_EQ(tcp.insns[12].imm, 1);
    EXPECT_EQ(tcp.kfuncs[0], helpers::find_kfunc("bpf_rcu_read_lock"));
  }
}

TEST(LoadObject, HostAdjustsGlobalDataBetweenOpenAndLoad) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok());
  // Drop the programs: only maps are created.
  spec->progs.clear();
  MapSpec& ro = spec->maps[find_map(*spec, ".rodata")];
  ro.init[0] = 99;  // const volatile ro_var, as a skeleton would set it
  auto obj = load_object(*spec);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  maps::Map* m = (*obj)->maps[find_map(*spec, ".rodata")].get();
  EXPECT_EQ(static_cast<const uint8_t*>(m->ops->direct_value_addr(m))[0], 99);
  EXPECT_TRUE(m->frozen.load());

  ro.init.push_back(0);
  expect_error(load_object(*spec), EINVAL, {"map '.rodata'", "11 bytes", "value_size is 10"});
}

TEST(LoadObject, MapCreationErrorNamesTheMap) {
  auto spec = open_prog("loader_main.bpf.o");
  ASSERT_TRUE(spec.ok());
  spec->maps[find_map(*spec, "counts")].attr.max_entries = 0;
  auto r = load_object(*spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("'counts'"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("section '.maps'"), std::string::npos) << r.error().message;
}

TEST(LoadObject, UnknownKfunc) {
  expect_error(load_object(*open_prog("loader_bad_kfunc.bpf.o")), ENOENT,
               {"program 'prog'", "unknown kfunc 'userbpf_no_such_kfunc'"});
}

TEST(LoadObject, UnknownHelperIdFromPatchedBytes) {
  std::vector<uint8_t> bytes = read_prog("loader_order.bpf.o");
  RawElf elf(bytes);
  const std::string sec = "tp/syscalls/sys_enter_getpid";
  size_t off = elf.insn_off(sec, 5);  // call bpf_loop (181)
  auto call = elf.get<isa::Insn>(off);
  ASSERT_EQ(call.code, isa::kCall);
  ASSERT_EQ(call.imm, 181);
  call.imm = 250;
  elf.put(off, call);
  auto spec = open_bytes(bytes);
  ASSERT_TRUE(spec.ok()) << spec.error().message;  // helper ids are checked at load
  expect_error(load_object(*spec), EINVAL, {"program 'entry2'", "unknown helper id 250", "insn 5"});
  call.imm = -1;
  elf.put(off, call);
  expect_error(load_object(*open_bytes(bytes)), EINVAL,
               {"program 'entry2'", "unknown helper id -1"});
}

TEST(LoadObject, InconsistentSpecIsAnError) {
  auto spec = open_prog("loader_order.bpf.o");
  ASSERT_TRUE(spec.ok());
  ProgSpec& e2 = const_cast<ProgSpec&>(*find_prog(*spec, "entry2"));
  ASSERT_EQ(e2.relocs[1].kind, RelocSpec::Kind::kCall);
  e2.relocs[1].target_insn += 1;  // not the start of a function any more
  expect_error(load_object(*spec), EINVAL, {"program 'entry2'", "no function 'b'"});

  spec = open_prog("loader_order.bpf.o");
  ProgSpec& cb = const_cast<ProgSpec&>(*find_prog(*spec, "cb"));
  ASSERT_EQ(cb.relocs[0].kind, RelocSpec::Kind::kMapValue);
  cb.relocs[0].map_idx = 50;
  expect_error(load_object(*spec), EINVAL, {"program 'entry2'", "map index 50 out of range"});

  spec = open_prog("loader_order.bpf.o");
  ProgSpec& cb2 = const_cast<ProgSpec&>(*find_prog(*spec, "cb"));
  cb2.relocs[0].offset = 8;  // .bss holds one u64
  expect_error(load_object(*spec), EINVAL, {"offset 8 outside map '.bss'"});
}

}  // namespace
}  // namespace userbpf::loader
