// The JIT's object facts (jit/x86_64/emit_facts.cc): an access the facts
// prove inside an object a bpf_obj_new of the run returned runs unchecked,
// so the facts may take the object's size only from what the code shows.
// Here r1 is not the proto's ret_size at the call (the loader never emits
// that, but the program is valid): both engines check the access past the
// real object's end and fault there, exactly alike. And the usual pair
// (r1 the size, as the loader leaves it) runs the same on both, objects
// balanced.
#include <cerrno>

#include "jit/jit_test_util.h"
#include "vm/obj_test_domain.h"

namespace userbpf::test {
namespace {

using namespace isa;

constexpr int32_t kObjSize = ObjTestDomain::kSize;

TEST(JitObjFacts, SizeComesFromR1) {
  for (int32_t r1 : {8, kObjSize}) {
    SCOPED_TRACE(r1);
    ObjTestDomain o;
    Asm a;
    a.mov64_imm(6, 0);
    a.label("loop");
    a.mov64_imm(1, r1).ld_imm64(2, o.addr()).call_kfunc(ObjTestDomain::kKfNew);
    a.jmp_imm(kJmpJeq, 0, 0, "out");
    const size_t store = a.pc();
    a.st(kSizeDw, 0, 8, 7);  // the object's second word
    a.mov64_reg(1, 0).ld_imm64(2, o.addr()).call_kfunc(ObjTestDomain::kKfDrop);
    a.alu64_imm(kAluAdd, 6, 1).jmp_imm(kJmpJlt, 6, 50, "loop");
    a.label("out").mov64_reg(0, 6).exit();
    auto p = o.prepare(a);
    const uint64_t base = o.in_use();
    const EngineRun j = expect_same(*p, {}, 1ull << 32, "", false);
    if (r1 == kObjSize) {
      EXPECT_TRUE(j.ok) << j.message;
      EXPECT_EQ(j.r0, 50u);
    } else {
      EXPECT_FALSE(j.ok);
      EXPECT_EQ(j.err, EFAULT) << j.message;
      EXPECT_EQ(j.fault.pc, store);
    }
    EXPECT_EQ(o.in_use(), base);  // a stopped run's object is dropped
  }
}

}  // namespace
}  // namespace userbpf::test
