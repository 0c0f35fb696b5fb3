// The JIT's object facts (jit/x86_64/emit_facts.cc): an access the facts
// prove inside an object a bpf_obj_new of the run returned runs unchecked,
// so the facts may take the object's size only from what the code shows.
// Here r1 is not the proto's ret_size at the call (the loader never emits
// that, but the program is valid): both engines check the access past the
// real object's end and fault there, exactly alike. And the usual pair
// (r1 the size, as the loader leaves it) runs the same on both, objects
// balanced.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

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

// Random programs around one object, on both engines, compared: the two
// facts analyses (interp_form.cc, emit_facts.cc) are independent, so an
// access one of them wrongly runs unchecked shows as a run that faults on
// one engine and not on the other, or reads differently. Each program: a
// bpf_obj_new (r1 the proto's size, or not), its null test, then random
// copies and constant adds of the object pointer, loads and stores of
// every size at offsets around the object (the state word and past its
// end included), forward jumps (facts end at their targets), a helper call
// (facts end), then the drop of a register that may or may not still hold
// the object, and r0 a sum of what was loaded. Outcomes (result, fault pc
// and kind, objects in use) must match. 1000 programs, or
// USERBPF_JIT_FUZZ_ITERS / 20 when set (the JIT fuzzer runs that many).
TEST(JitObjFacts, RandomObjectProgramsRunAlike) {
  int iters = 1000;
  if (const char* e = std::getenv("USERBPF_JIT_FUZZ_ITERS")) iters = std::max(1, std::atoi(e) / 20);
  std::mt19937_64 rng(0x0b1ec7);
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  constexpr uint8_t kSizes[] = {kSizeB, kSizeH, kSizeW, kSizeDw};
  static const char* const kLabels[] = {"t0", "t1", "t2",  "t3",  "t4",  "t5",  "t6",  "t7",
                                        "t8", "t9", "t10", "t11", "t12", "t13", "t14", "t15"};
  int faulted = 0, clean = 0;
  for (int it = 0; it < iters; it++) {
    ObjTestDomain o;
    Asm a;
    a.mov64_imm(8, 0);  // the sum of loads
    a.mov64_imm(1, pick(4) == 0 ? 8 : kObjSize)
        .ld_imm64(2, o.addr())
        .call_kfunc(ObjTestDomain::kKfNew);
    a.jmp_imm(kJmpJeq, 0, 0, "out");
    a.mov64_reg(6, 0).mov64_reg(3, 0).mov64_reg(4, 0).mov64_reg(7, 0);  // r6: kept for the drop
    const uint8_t ptr_regs[] = {0, 3, 4, 7};
    int label = 0;
    const char* pending = nullptr;  // a forward jump's target, bound a few instructions on
    int pending_in = 0;
    const int n = 4 + static_cast<int>(pick(12));
    for (int k = 0; k < n; k++) {
      if (pending != nullptr && --pending_in <= 0) {
        a.label(pending);
        pending = nullptr;
      }
      const uint8_t r = ptr_regs[pick(4)];
      const uint8_t sz = kSizes[pick(4)];
      // Mostly inside the object as it is, sometimes anywhere around it.
      const int bytes = 1 << (sz == kSizeB ? 0 : sz == kSizeH ? 1 : sz == kSizeW ? 2 : 3);
      const int16_t off = static_cast<int16_t>(pick(4) == 0 ? static_cast<int>(pick(41)) - 12
                                                            : static_cast<int>(pick(17 - bytes)));
      switch (pick(8)) {
        case 0:
          a.mov64_reg(r, ptr_regs[pick(4)]);
          break;
        case 1:
          a.alu64_imm(pick(2) ? kAluAdd : kAluSub, r, pick(2) ? 8 : static_cast<int32_t>(pick(9)));
          break;
        case 2:
          a.st(sz, r, off, static_cast<int32_t>(rng()));
          break;
        case 3:
          a.stx(sz, r, 8, off);
          break;
        case 4:
          a.ldx(sz, 5, r, off).alu64_reg(kAluAdd, 8, 5);
          break;
        case 5:
          a.ldxsx(sz == kSizeDw ? kSizeW : sz, 5, r, off).alu64_reg(kAluAdd, 8, 5);
          break;
        case 6:
          if (pending == nullptr) {
            pending = kLabels[label++];
            pending_in = 1 + static_cast<int>(pick(3));
            a.jmp_imm(kJmpJeq, 8, static_cast<int32_t>(pick(2)), pending);
          }
          break;
        default:
          if (pick(4) == 0) {
            a.mov64_imm(1, 1).mov64_imm(2, 2).mov64_imm(3, 3).mov64_imm(4, 4).mov64_imm(5, 5);
            a.call_helper(kHelperSum5).alu64_reg(kAluAdd, 8, 0).mov64_reg(0, 6);
          } else {
            a.alu64_imm(kAluMul, ptr_regs[pick(4)], 1);  // no longer followed
          }
          break;
      }
    }
    if (pending != nullptr) a.label(pending);
    a.mov64_reg(1, pick(3) == 0 ? ptr_regs[pick(4)] : 6).ld_imm64(2, o.addr());
    a.call_kfunc(ObjTestDomain::kKfDrop);
    a.mov64_reg(0, 8).exit();
    a.label("out").mov64_imm(0, -1).exit();
    auto p = o.prepare(a);
    const uint64_t base = o.in_use();
    const EngineRun j = expect_same(*p, {}, 1ull << 32, "program " + std::to_string(it), false);
    (j.ok ? clean : faulted)++;
    EXPECT_EQ(o.in_use(), base) << "program " << it;
    if (HasFailure()) break;
  }
  // Both kinds of outcome occur (the generator is not degenerate).
  EXPECT_GT(clean, iters / 20);
  EXPECT_GT(faulted, iters / 20);
  std::printf("[ objfuzz ] %d programs: %d ran clean, %d faulted alike\n", iters, clean, faulted);
}

}  // namespace
}  // namespace userbpf::test
