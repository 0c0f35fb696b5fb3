// Interpreter ALU semantics: every operation in 32 and 64 bits, immediate and
// register forms, with the kernel's edge cases (zero extension, masked shifts,
// division by zero, INT_MIN / -1, sign extension, byte swaps).
#include <climits>

#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

// r0 = a (64-bit via ld_imm64); r1 = b; r0 <op>= r1 (or imm b); exit.
uint64_t alu_reg(bool wide, uint8_t op, uint64_t a, uint64_t b, int16_t off = 0) {
  Asm p;
  p.ld_imm64(0, a).ld_imm64(1, b);
  if (wide) {
    p.alu64_reg(op, 0, 1, off);
  } else {
    p.alu32_reg(op, 0, 1, off);
  }
  return run_r0(p.exit());
}
uint64_t alu_imm(bool wide, uint8_t op, uint64_t a, int32_t imm, int16_t off = 0) {
  Asm p;
  p.ld_imm64(0, a);
  if (wide) {
    p.alu64_imm(op, 0, imm, off);
  } else {
    p.alu32_imm(op, 0, imm, off);
  }
  return run_r0(p.exit());
}

constexpr uint64_t kHi = 0xffffffff00000000ull;

TEST(InterpAlu, AddSubMul) {
  EXPECT_EQ(alu_reg(true, kAluAdd, 5, 7), 12u);
  EXPECT_EQ(alu_reg(true, kAluAdd, ~0ull, 2), 1u);
  EXPECT_EQ(alu_imm(true, kAluAdd, 5, -7), static_cast<uint64_t>(-2));  // imm sign-extends
  EXPECT_EQ(alu_reg(false, kAluAdd, kHi | 0xffffffff, 2), 1u);          // wraps, zero-extends
  EXPECT_EQ(alu_imm(false, kAluAdd, kHi | 5, -7), 0xfffffffeu);
  EXPECT_EQ(alu_reg(true, kAluSub, 5, 7), static_cast<uint64_t>(-2));
  EXPECT_EQ(alu_reg(false, kAluSub, 5, 7), 0xfffffffeu);
  EXPECT_EQ(alu_imm(true, kAluSub, 0, 1), ~0ull);
  EXPECT_EQ(alu_reg(true, kAluMul, 0x100000000ull, 0x100000000ull), 0u);
  EXPECT_EQ(alu_reg(true, kAluMul, 3, ~0ull), static_cast<uint64_t>(-3));
  EXPECT_EQ(alu_imm(false, kAluMul, kHi | 0x10000, 0x10000), 0u);
  EXPECT_EQ(alu_imm(false, kAluMul, 3, -1), 0xfffffffdu);
}

TEST(InterpAlu, Bitwise) {
  EXPECT_EQ(alu_reg(true, kAluOr, 0xf0, 0x0f), 0xffu);
  EXPECT_EQ(alu_imm(true, kAluOr, 0, -1), ~0ull);
  EXPECT_EQ(alu_imm(false, kAluOr, kHi, -1), 0xffffffffu);
  EXPECT_EQ(alu_reg(true, kAluAnd, 0xff00ff00ff00ff00ull, 0x0ff00ff00ff00ff0ull),
            0x0f000f000f000f00ull);
  EXPECT_EQ(alu_imm(true, kAluAnd, ~0ull, -2), ~1ull);
  EXPECT_EQ(alu_imm(false, kAluAnd, ~0ull, -2), 0xfffffffeu);
  EXPECT_EQ(alu_reg(true, kAluXor, 0xff, 0x0f), 0xf0u);
  EXPECT_EQ(alu_reg(false, kAluXor, kHi | 1, kHi | 3), 2u);
}

TEST(InterpAlu, ShiftsAreMasked) {
  EXPECT_EQ(alu_imm(true, kAluLsh, 1, 63), 1ull << 63);
  EXPECT_EQ(alu_reg(true, kAluLsh, 1, 64), 1u);  // 64 & 63 = 0
  EXPECT_EQ(alu_reg(true, kAluLsh, 1, 65), 2u);
  EXPECT_EQ(alu_imm(false, kAluLsh, 1, 31), 0x80000000u);
  EXPECT_EQ(alu_imm(false, kAluLsh, 1, 33), 2u);  // 33 & 31 = 1
  EXPECT_EQ(alu_reg(false, kAluLsh, kHi | 3, 32), 3u);
  EXPECT_EQ(alu_imm(true, kAluRsh, 1ull << 63, 63), 1u);
  EXPECT_EQ(alu_reg(true, kAluRsh, 8, 67), 1u);
  EXPECT_EQ(alu_imm(false, kAluRsh, kHi | 0x80000000, 31), 1u);  // high half ignored
  EXPECT_EQ(alu_reg(false, kAluRsh, 0x80000000, 36), 0x08000000u);
  EXPECT_EQ(alu_imm(true, kAluArsh, 1ull << 63, 63), ~0ull);
  EXPECT_EQ(alu_reg(true, kAluArsh, 1ull << 63, 127), ~0ull);
  EXPECT_EQ(alu_imm(false, kAluArsh, 0x80000000, 31), 0xffffffffu);  // zero-extended
  EXPECT_EQ(alu_imm(false, kAluArsh, 0x80000000, 48), 0xffff8000u);  // conformance arsh32-imm-high
  EXPECT_EQ(alu_reg(false, kAluArsh, kHi | 0x40000000, 33), 0x20000000u);
}

TEST(InterpAlu, UnsignedDivMod) {
  EXPECT_EQ(alu_reg(true, kAluDiv, 100, 7), 14u);
  EXPECT_EQ(alu_reg(true, kAluDiv, 100, 0), 0u);  // div by zero -> 0
  EXPECT_EQ(alu_imm(true, kAluDiv, 100, 0), 0u);
  EXPECT_EQ(alu_imm(true, kAluDiv, ~0ull, -1), 1u);  // imm sign-extended, unsigned divide
  EXPECT_EQ(alu_reg(false, kAluDiv, kHi | 100, kHi | 7), 14u);
  EXPECT_EQ(alu_reg(false, kAluDiv, kHi | 100, kHi), 0u);  // low half of divisor is 0
  EXPECT_EQ(alu_imm(false, kAluDiv, 0xffffffff, -1), 1u);
  EXPECT_EQ(alu_reg(true, kAluMod, 100, 7), 2u);
  EXPECT_EQ(alu_reg(true, kAluMod, kHi | 100, 0), kHi | 100);  // mod by zero: dst unchanged
  EXPECT_EQ(alu_imm(true, kAluMod, kHi | 100, 0), kHi | 100);
  EXPECT_EQ(alu_reg(false, kAluMod, kHi | 100, 0), 100u);  // 32-bit: zero-extended
  EXPECT_EQ(alu_imm(false, kAluMod, kHi | 100, 0), 100u);
  EXPECT_EQ(alu_reg(false, kAluMod, kHi | 100, kHi | 7), 2u);
}

TEST(InterpAlu, SignedDivMod) {
  const uint64_t min64 = 1ull << 63;
  EXPECT_EQ(alu_reg(true, kAluDiv, static_cast<uint64_t>(-100), 7, 1), static_cast<uint64_t>(-14));
  EXPECT_EQ(alu_imm(true, kAluDiv, 100, -7, 1), static_cast<uint64_t>(-14));
  EXPECT_EQ(alu_reg(true, kAluDiv, min64, ~0ull, 1), min64);  // INT64_MIN / -1, no SIGFPE
  EXPECT_EQ(alu_imm(true, kAluDiv, min64, -1, 1), min64);
  EXPECT_EQ(alu_reg(true, kAluDiv, 5, 0, 1), 0u);
  EXPECT_EQ(alu_reg(true, kAluMod, static_cast<uint64_t>(-100), 7, 1), static_cast<uint64_t>(-2));
  EXPECT_EQ(alu_imm(true, kAluMod, 100, -7, 1), 2u);
  EXPECT_EQ(alu_reg(true, kAluMod, min64, ~0ull, 1), 0u);
  EXPECT_EQ(alu_reg(true, kAluMod, min64 | 5, 0, 1), min64 | 5);
  EXPECT_EQ(alu_reg(false, kAluDiv, static_cast<uint32_t>(-100), 7, 1), static_cast<uint32_t>(-14));
  EXPECT_EQ(alu_reg(false, kAluDiv, kHi | 0x80000000, 0xffffffff, 1), 0x80000000u);
  EXPECT_EQ(alu_imm(false, kAluDiv, 0x80000000, -1, 1), 0x80000000u);
  EXPECT_EQ(alu_reg(false, kAluDiv, kHi | 9, 0, 1), 0u);
  EXPECT_EQ(alu_reg(false, kAluMod, static_cast<uint32_t>(-100), 7, 1), static_cast<uint32_t>(-2));
  EXPECT_EQ(alu_reg(false, kAluMod, 0x80000000, 0xffffffff, 1), 0u);
  EXPECT_EQ(alu_reg(false, kAluMod, kHi | 9, 0, 1), 9u);  // zero-extended dst
  EXPECT_EQ(alu_imm(false, kAluMod, kHi | 9, 0, 1), 9u);
  // Only the low 32 bits of a 32-bit operand count: 0x1_00000002 is 2.
  EXPECT_EQ(alu_reg(false, kAluDiv, 10, 0x100000002ull, 1), 5u);
}

TEST(InterpAlu, MovAndMovsx) {
  EXPECT_EQ(alu_imm(true, kAluMov, 123, -1), ~0ull);
  EXPECT_EQ(alu_imm(false, kAluMov, 123, -1), 0xffffffffu);
  EXPECT_EQ(alu_reg(true, kAluMov, 0, kHi | 7), kHi | 7);
  EXPECT_EQ(alu_reg(false, kAluMov, 0, kHi | 7), 7u);
  EXPECT_EQ(alu_reg(true, kAluMov, 0, 0x80, 8), ~0ull << 7);
  EXPECT_EQ(alu_reg(true, kAluMov, 0, 0x7f, 8), 0x7fu);
  EXPECT_EQ(alu_reg(true, kAluMov, 0, 0x12348000, 16), 0xffffffffffff8000ull);
  EXPECT_EQ(alu_reg(true, kAluMov, 0, 0x180000000ull, 32), 0xffffffff80000000ull);
  EXPECT_EQ(alu_reg(false, kAluMov, 0, 0x80, 8), 0xffffff80u);  // 32-bit movsx zero-extends
  EXPECT_EQ(alu_reg(false, kAluMov, 0, kHi | 0x8000, 16), 0xffff8000u);
  EXPECT_EQ(alu_reg(false, kAluMov, 0, 0x7fff, 16), 0x7fffu);
}

TEST(InterpAlu, Neg) {
  Asm a;
  a.mov64_imm(0, 5).neg64(0).exit();
  EXPECT_EQ(run_r0(a), static_cast<uint64_t>(-5));
  Asm b;
  b.mov64_imm(0, 5).neg32(0).exit();
  EXPECT_EQ(run_r0(b), 0xfffffffbu);
  Asm c;
  c.ld_imm64(0, 1ull << 63).neg64(0).exit();
  EXPECT_EQ(run_r0(c), 1ull << 63);
  Asm d;
  d.ld_imm64(0, kHi).neg32(0).exit();
  EXPECT_EQ(run_r0(d), 0u);
}

uint64_t end_op(int kind, int width, uint64_t v) {
  Asm a;
  a.ld_imm64(0, v);
  if (kind == 0) a.le(0, width);
  if (kind == 1) a.be(0, width);
  if (kind == 2) a.bswap(0, width);
  return run_r0(a.exit());
}

TEST(InterpAlu, ByteSwaps) {
  const uint64_t v = 0x0123456789abcdefull;
  EXPECT_EQ(end_op(0, 16, v), 0xcdefu);  // le on a little-endian host: truncate
  EXPECT_EQ(end_op(0, 32, v), 0x89abcdefu);
  EXPECT_EQ(end_op(0, 64, v), v);
  EXPECT_EQ(end_op(1, 16, v), 0xefcdu);  // be: swap and zero-extend
  EXPECT_EQ(end_op(1, 32, v), 0xefcdab89u);
  EXPECT_EQ(end_op(1, 64, v), 0xefcdab8967452301ull);
  EXPECT_EQ(end_op(2, 16, v), 0xefcdu);  // bswap (ALU64): unconditional swap
  EXPECT_EQ(end_op(2, 32, v), 0xefcdab89u);
  EXPECT_EQ(end_op(2, 64, v), 0xefcdab8967452301ull);
}

TEST(InterpAlu, LdImm64AndAddrSpaceCast) {
  Asm a;
  a.ld_imm64(0, 0x8000000000000001ull).exit();
  EXPECT_EQ(run_r0(a), 0x8000000000000001ull);
  Asm b;
  b.ld_imm64(1, 0x123456789ull).addr_space_cast(0, 1, kAddrSpaceCastToKern).exit();
  EXPECT_EQ(run_r0(b), 0x23456789u);  // as1 -> as0: low 32 bits
  Asm c;
  c.ld_imm64(1, 0x123456789ull).addr_space_cast(0, 1, kAddrSpaceCastToUser).exit();
  EXPECT_EQ(run_r0(c), 0x23456789u);  // as0 -> as1: no arena yet, upper half 0
  Asm d;
  d.ld_imm64(1, 0x500000000ull).addr_space_cast(0, 1, kAddrSpaceCastToUser).exit();
  EXPECT_EQ(run_r0(d), 0u);  // NULL stays NULL
}

TEST(InterpAlu, EntryRegisters) {
  // r1 = ctx, r2 = rc.r2 (conformance protocol), r10 = top of an 8-byte aligned stack.
  Asm a;
  a.mov64_reg(0, 2).exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  vm::RunContext rc;
  rc.r2 = 77;
  EXPECT_EQ(p.run_with(rc).r0, 77u);
  Asm b;
  b.mov64_reg(0, 10).alu64_imm(kAluAnd, 0, 7).exit();
  EXPECT_EQ(run_r0(b), 0u);
}

}  // namespace
}  // namespace userbpf::test
