// Interpreter speed benchmark: prints ns per instruction for CPU-bound loops
// of simple ALU/branch instructions and of stack/map accesses (the result of
// each run is checked). Built by bench/CMakeLists.txt, run by make bench.
#include <chrono>
#include <cstdio>

#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

TEST(InterpSpeed, AluBranchLoop) {
  // r0 = 0; r1 = N; loop: r0 += r1; r0 ^= 0x5a; r2 = r0; r2 &= 7; r0 -= r2;
  // r1 -= 1; if r1 != 0 goto loop; exit   -> 7 instructions per iteration.
  constexpr int32_t kIters = 20'000'000;
  Asm a;
  a.mov64_imm(0, 0).mov64_imm(1, kIters);
  a.label("loop")
      .alu64_reg(kAluAdd, 0, 1)
      .alu64_imm(kAluXor, 0, 0x5a)
      .mov64_reg(2, 0)
      .alu64_imm(kAluAnd, 2, 7)
      .alu64_reg(kAluSub, 0, 2)
      .alu64_imm(kAluSub, 1, 1)
      .jmp_imm(kJmpJne, 1, 0, "loop")
      .exit();
  uint64_t want = 0;
  for (uint64_t r1 = kIters; r1 != 0; --r1) {
    want += r1;
    want ^= 0x5a;
    want -= want & 7;
  }
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  double best = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    RunOutcome o = p.run();
    const auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(o.ok) << o.error.message;
    EXPECT_EQ(o.r0, want);
    const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
    best = std::min(best, ns / (7.0 * kIters + 3));
  }
  std::printf("interpreter: %.3f ns per instruction (ALU/branch loop, best of 3)\n", best);
}

TEST(InterpSpeed, StackAndMapAccessLoop) {
  // Per iteration: a stack load/add/store, a map-value load/add/store (the
  // region cache path), loop control -> 8 instructions.
  constexpr int32_t kIters = 5'000'000;
  auto map = make_fake_map(8, 1);
  Asm a;
  a.ld_map_value(6, 0, 0).mov64_imm(1, kIters).st(kSizeDw, 10, -8, 0);
  a.label("loop")
      .ldx(kSizeDw, 2, 10, -8)
      .alu64_reg(kAluAdd, 2, 1)
      .stx(kSizeDw, 10, 2, -8)
      .ldx(kSizeDw, 3, 6, 0)
      .alu64_imm(kAluAdd, 3, 1)
      .stx(kSizeDw, 6, 3, 0)
      .alu64_imm(kAluSub, 1, 1)
      .jmp_imm(kJmpJne, 1, 0, "loop")
      .ldx(kSizeDw, 0, 10, -8)
      .exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  double best = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    RunOutcome o = p.run();
    const auto t1 = std::chrono::steady_clock::now();
    ASSERT_TRUE(o.ok) << o.error.message;
    EXPECT_EQ(o.r0, static_cast<uint64_t>(kIters) * (kIters + 1) / 2);
    best =
        std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / (8.0 * kIters));
  }
  std::printf("interpreter: %.3f ns per instruction (stack + map access loop, best of 3)\n", best);
}

}  // namespace
}  // namespace userbpf::test
