// The loader's bpf_obj_new / bpf_obj_drop fixup (loader/object_link_obj.cc):
// instructions inserted before the calls (loader/insn_patch.h), with every
// jump, call and function address moved so that no path reaches a rewritten
// call without its argument setup; and what the rewritten calls look like in
// a loaded program.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "loader/insn_patch.h"
#include "loader/object.h"
#include "mem/domain.h"

namespace userbpf {
namespace {

using isa::Insn;
using loader::InsnPatch;

Insn mov(uint8_t dst, int32_t imm) {
  return Insn{static_cast<uint8_t>(isa::kClassAlu64 | isa::kAluMov | isa::kSrcK), dst, 0, 0, imm};
}
Insn jeq(uint8_t dst, int32_t imm, int16_t off) {
  return Insn{static_cast<uint8_t>(isa::kClassJmp | isa::kJmpJeq | isa::kSrcK), dst, 0, off, imm};
}
Insn ja(int16_t off) {
  return Insn{static_cast<uint8_t>(isa::kClassJmp | isa::kJmpJa), 0, 0, off, 0};
}
Insn gotol(int32_t imm) {
  return Insn{static_cast<uint8_t>(isa::kClassJmp32 | isa::kJmpJa), 0, 0, 0, imm};
}
Insn kfunc_call(int32_t idx) {
  return Insn{isa::kCall, 0, isa::kPseudoKfuncCall, 0, idx};
}
Insn local_call(int32_t rel) {
  return Insn{isa::kCall, 0, isa::kPseudoCall, 0, rel};
}
Insn exit_insn() {
  return Insn{static_cast<uint8_t>(isa::kClassJmp | isa::kJmpExit), 0, 0, 0, 0};
}
// Marker instructions a patch consists of (r9 = tag).
Insn mark(int32_t tag) {
  return mov(9, tag);
}

bool same(const Insn& a, const Insn& b) {
  return std::memcmp(&a, &b, sizeof(Insn)) == 0;
}

TEST(InsnPatch, JumpsToAPatchedInstructionLandOnThePatch) {
  std::vector<Insn> insns = {
      jeq(1, 0, 2),   // 0: -> 3 (the call)
      mov(0, 1),      // 1
      ja(0),          // 2: -> 3
      kfunc_call(0),  // 3: patched with two instructions
      jeq(0, 0, -5),  // 4: -> 0
      ja(-3),         // 5: -> 3
      exit_insn(),    // 6
  };
  ASSERT_TRUE(loader::insert_patches(insns, {InsnPatch{3, {mark(1), mark(2)}}}).ok());
  ASSERT_EQ(insns.size(), 9u);
  EXPECT_TRUE(same(insns[3], mark(1)));
  EXPECT_TRUE(same(insns[4], mark(2)));
  EXPECT_TRUE(same(insns[5], kfunc_call(0)));
  EXPECT_EQ(insns[0].off, 2);   // 0 -> 3: the patch
  EXPECT_EQ(insns[2].off, 0);   // 2 -> 3: the patch
  EXPECT_EQ(insns[6].off, -7);  // 6 -> 0
  EXPECT_EQ(insns[7].off, -5);  // 7 -> 3: the patch, from behind
}

TEST(InsnPatch, ReferencesAcrossPatchesMove) {
  std::vector<Insn> insns = {
      local_call(6),                                   // 0: -> 7
      gotol(3),                                        // 1: -> 5
      kfunc_call(0),                                   // 2: patched (1 insn)
      Insn{isa::kLdImm64, 2, isa::kPseudoFunc, 0, 3},  // 3: address of 7
      Insn{0, 0, 0, 0, 0},
      kfunc_call(1),  // 5: patched (2 insns)
      exit_insn(),    // 6
      mov(0, 0),      // 7: subprogram
      exit_insn(),    // 8
  };
  ASSERT_TRUE(
      loader::insert_patches(insns, {InsnPatch{2, {mark(1)}}, InsnPatch{5, {mark(2), mark(3)}}})
          .ok());
  ASSERT_EQ(insns.size(), 12u);
  EXPECT_EQ(insns[0].imm, 9);  // -> 10 (subprogram moved by 3)
  EXPECT_EQ(insns[1].imm, 4);  // -> 6: the second patch
  EXPECT_TRUE(same(insns[2], mark(1)));
  EXPECT_TRUE(same(insns[3], kfunc_call(0)));
  EXPECT_EQ(insns[4].code, isa::kLdImm64);
  EXPECT_EQ(insns[4].imm, 5);  // 4 -> 10
  EXPECT_EQ(insns[5].imm, 0);  // second half untouched
  EXPECT_TRUE(same(insns[6], mark(2)));
  EXPECT_TRUE(same(insns[7], mark(3)));
  EXPECT_TRUE(same(insns[8], kfunc_call(1)));
  EXPECT_TRUE(same(insns[10], mov(0, 0)));
}

TEST(InsnPatch, OffsetThatNoLongerFitsIsE2big) {
  // A forward jump of the largest 16-bit offset over a patched call.
  std::vector<Insn> insns(INT16_MAX + 2, mov(0, 0));
  insns[0] = ja(INT16_MAX);
  insns[1] = kfunc_call(0);
  insns.push_back(exit_insn());
  const std::vector<Insn> before = insns;
  Status st = loader::insert_patches(insns, {InsnPatch{1, {mark(1)}}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, E2BIG);
  ASSERT_EQ(insns.size(), before.size());  // unchanged
  EXPECT_TRUE(same(insns[0], before[0]));
}

TEST(InsnPatch, TargetsOutsideTheProgramStayForPrepareToReject) {
  std::vector<Insn> insns = {ja(100), kfunc_call(0), exit_insn()};
  ASSERT_TRUE(loader::insert_patches(insns, {InsnPatch{1, {mark(1)}}}).ok());
  EXPECT_EQ(insns[0].off, 100);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Each bpf_obj_new call of a loaded program follows `r1 = size; r2 =
// domain` and each bpf_obj_drop call `r2 = domain`, like the kernel's
// fixup_kfunc_call; the calls run the loader's protos.
TEST(ObjFixup, CallsGetSizeAndDomainArguments) {
  mem::MemDomain dom;
  const std::vector<char> bytes =
      read_file(std::string(USERBPF_TEST_PROGS_DIR) + "/kptr_obj.bpf.o");
  auto spec = loader::open_object(bytes.data(), bytes.size(), "kptr_obj.bpf.o");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  auto obj = loader::load_object(*spec, &dom);
  ASSERT_TRUE(obj.ok()) << obj.error().message;
  const auto dom_lo =
      static_cast<int32_t>(static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&dom)));
  const auto dom_hi =
      static_cast<int32_t>(static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&dom) >> 32));
  int news = 0, drops = 0, bigs = 0;
  for (const auto& p : (*obj)->programs) {
    const std::vector<Insn>& in = p->insns;
    for (size_t pc = 0; pc < in.size(); pc++) {
      if (in[pc].code == isa::kLdImm64) {
        pc++;
        continue;
      }
      if (in[pc].code != isa::kCall || in[pc].src != isa::kPseudoKfuncCall) continue;
      const vm::HelperProto* k = p->kfuncs[static_cast<size_t>(in[pc].imm)];
      const bool is_new = std::strcmp(k->name, "bpf_obj_new_impl") == 0;
      const bool is_drop = std::strcmp(k->name, "bpf_obj_drop_impl") == 0;
      if (!is_new && !is_drop) continue;
      SCOPED_TRACE(p->name + " pc " + std::to_string(pc));
      ASSERT_GE(pc, is_new ? 3u : 2u);
      const Insn& ld = in[pc - 2];
      EXPECT_EQ(ld.code, isa::kLdImm64);
      EXPECT_EQ(ld.dst, 2);
      EXPECT_EQ(ld.src, 0);
      EXPECT_EQ(ld.imm, dom_lo);
      EXPECT_EQ(in[pc - 1].imm, dom_hi);
      if (is_new) {
        // struct node, or struct big (leak_many)
        const int32_t size = p->name == "leak_many" && k->ret_size == 200 ? 200 : 16;
        EXPECT_TRUE(same(in[pc - 3], mov(1, size)));
        EXPECT_EQ(k->ret, vm::RetKind::kMemOrNull);
        EXPECT_EQ(k->ret_size, static_cast<uint32_t>(size));
        news++;
        bigs += size == 200;
      } else {
        drops++;
      }
    }
  }
  EXPECT_GE(news, 5);
  EXPECT_GE(drops, 5);
  EXPECT_EQ(bigs, 1);
}

}  // namespace
}  // namespace userbpf
