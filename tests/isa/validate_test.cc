// validate_insn(): the opcode table and each variant's reserved-field rules.
#include <gtest/gtest.h>

#include "isa/asm.h"
#include "isa/decode.h"
#include "isa/opcodes.h"

namespace userbpf::isa {
namespace {

using test::make_insn;

const Insn kZero = make_insn(0, 0, 0, 0, 0);

bool valid(const Insn& i, const Insn* next = &kZero) {
  return validate_insn(i, next) == nullptr;
}

TEST(OpcodeTable, HasEveryIsaV4Opcode) {
  int count = 0;
  for (int c = 0; c < 256; ++c) count += kOpcodeTable[c].kind != OpKind::kInvalid;
  // ALU: 2 classes x (12 binops x 2 + neg) = 50, end: 3; JMP: 2 x (11 x 2 + ja) = 46,
  // may_goto, call, callx, exit: 4; lddw 1; ldx/st/stx 4 x 3 = 12; ld_abs/ld_ind/ldxsx
  // 3 x 3 = 9; atomic 2.
  EXPECT_EQ(count, 50 + 3 + 46 + 4 + 1 + 12 + 9 + 2);
  EXPECT_EQ(opcode_info(0x07).kind, OpKind::kAluBin);
  EXPECT_EQ(opcode_info(0x8d).kind, OpKind::kCallx);
  EXPECT_EQ(opcode_info(0xe5).kind, OpKind::kJcond);
  EXPECT_EQ(opcode_info(0x06).kind, OpKind::kJa);
  EXPECT_EQ(opcode_info(0x00).kind, OpKind::kInvalid);  // second lddw slot
  EXPECT_EQ(opcode_info(0x8f).kind, OpKind::kInvalid);  // neg with X source
  EXPECT_EQ(opcode_info(0xdf).kind, OpKind::kInvalid);  // ALU64 end X
  EXPECT_EQ(opcode_info(0x98).kind, OpKind::kInvalid);  // ldsx dw is not in the ISA
  EXPECT_EQ(opcode_info(0xd3).kind, OpKind::kInvalid);  // atomic byte (6.12)
  EXPECT_EQ(opcode_info(0x95 | 0x08).kind, OpKind::kInvalid);
}

TEST(Validate, RejectsInvalidOpcodesAndRegisters) {
  EXPECT_FALSE(valid(make_insn(0x00, 0, 0, 0, 0)));
  EXPECT_FALSE(valid(make_insn(0xff, 0, 0, 0, 0)));
  EXPECT_TRUE(valid(make_insn(0x07, 9, 0, 0, 1)));
  EXPECT_FALSE(valid(make_insn(0x07, 11, 0, 0, 1)));
  EXPECT_FALSE(valid(make_insn(0x0f, 1, 11, 0, 0)));
  EXPECT_FALSE(valid(make_insn(0x61, 1, 15, 0, 0)));
  EXPECT_TRUE(valid(make_insn(0x0f, 1, 10, 0, 0)));  // reading r10 is fine
}

TEST(Validate, FramePointerIsReadOnly) {
  EXPECT_FALSE(valid(make_insn(0x07, 10, 0, 0, 1)));      // r10 += 1
  EXPECT_FALSE(valid(make_insn(0xbf, 10, 1, 0, 0)));      // r10 = r1
  EXPECT_FALSE(valid(make_insn(0x87, 10, 0, 0, 0)));      // r10 = -r10
  EXPECT_FALSE(valid(make_insn(0xdc, 10, 0, 0, 16)));     // be16 r10
  EXPECT_FALSE(valid(make_insn(0x79, 10, 1, 0, 0)));      // r10 = *(u64 *)
  EXPECT_FALSE(valid(make_insn(kLdImm64, 10, 0, 0, 0)));  // r10 = imm64
  EXPECT_FALSE(valid(make_insn(0xdb, 1, 10, 0, 0x01)));   // fetch into r10
  EXPECT_FALSE(valid(make_insn(0xdb, 1, 10, 0, kAtomicXchg)));
  EXPECT_TRUE(valid(make_insn(0xdb, 1, 10, 0, kAtomicAdd)));      // no fetch: r10 only read
  EXPECT_TRUE(valid(make_insn(0xdb, 1, 10, 0, kAtomicCmpxchg)));  // writes r0, not src
  EXPECT_TRUE(valid(make_insn(0x7b, 10, 1, -8, 0)));              // store through r10
  EXPECT_TRUE(valid(make_insn(0x72, 10, 0, -8, 1)));
}

TEST(Validate, AluReservedFields) {
  EXPECT_FALSE(valid(make_insn(0x07, 1, 2, 0, 1)));  // K form with src
  EXPECT_FALSE(valid(make_insn(0x0f, 1, 2, 0, 1)));  // X form with imm
  EXPECT_FALSE(valid(make_insn(0x07, 1, 0, 1, 1)));  // add with off
  EXPECT_FALSE(valid(make_insn(0xa4, 1, 0, 1, 1)));  // xor32 with off
  EXPECT_FALSE(valid(make_insn(0x87, 1, 0, 0, 1)));  // neg with imm
  EXPECT_FALSE(valid(make_insn(0x87, 1, 0, 1, 0)));  // neg with off
  // Division by a zero immediate and wide constant shifts are defined at run time.
  EXPECT_TRUE(valid(make_insn(0x37, 1, 0, 0, 0)));
  EXPECT_TRUE(valid(make_insn(0x64, 1, 0, 0, 48)));
}

TEST(Validate, SignedDivMod) {
  for (uint8_t code : {0x37, 0x3f, 0x34, 0x3c, 0x97, 0x9f, 0x94, 0x9c}) {
    const bool x = (code & kSrcX) != 0;
    EXPECT_TRUE(valid(make_insn(code, 1, x ? 2 : 0, 1, x ? 0 : 3))) << int(code);
    EXPECT_TRUE(is_signed_divmod(make_insn(code, 1, x ? 2 : 0, 1, x ? 0 : 3)));
    EXPECT_FALSE(valid(make_insn(code, 1, x ? 2 : 0, 2, x ? 0 : 3))) << int(code);
    EXPECT_FALSE(valid(make_insn(code, 1, x ? 2 : 0, -1, x ? 0 : 3))) << int(code);
  }
  EXPECT_FALSE(valid(make_insn(0x2f, 1, 2, 1, 0)));  // "signed" mul does not exist
}

TEST(Validate, MovsxWidths) {
  for (int16_t off : {8, 16, 32}) EXPECT_TRUE(valid(make_insn(0xbf, 1, 2, off, 0))) << off;
  EXPECT_TRUE(valid(make_insn(0xbc, 1, 2, 8, 0)));
  EXPECT_TRUE(valid(make_insn(0xbc, 1, 2, 16, 0)));
  EXPECT_FALSE(valid(make_insn(0xbc, 1, 2, 32, 0)));  // kernel: 32-bit movsx only 8/16
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 64, 0)));
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 7, 0)));
  EXPECT_FALSE(valid(make_insn(0xb7, 1, 0, 8, 5)));  // mov K with off
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 8, 1)));  // movsx with imm
  EXPECT_TRUE(is_movsx(make_insn(0xbf, 1, 2, 16, 0)));
}

TEST(Validate, AddrSpaceCast) {
  EXPECT_TRUE(valid(make_insn(0xbf, 1, 2, 1, kAddrSpaceCastToKern)));
  EXPECT_TRUE(valid(make_insn(0xbf, 1, 2, 1, kAddrSpaceCastToUser)));
  EXPECT_TRUE(is_addr_space_cast(make_insn(0xbf, 1, 2, 1, 1)));
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 1, 0)));
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 1, 2)));
  EXPECT_FALSE(valid(make_insn(0xbf, 1, 2, 1, (1 << 16) | 1)));
  EXPECT_FALSE(valid(make_insn(0xbc, 1, 2, 1, 1)));  // only ALU64
}

TEST(Validate, ByteSwapWidths) {
  for (uint8_t code : {0xd4, 0xdc, 0xd7}) {
    for (int32_t w : {16, 32, 64}) EXPECT_TRUE(valid(make_insn(code, 1, 0, 0, w)));
    for (int32_t w : {0, 8, 24, 128}) EXPECT_FALSE(valid(make_insn(code, 1, 0, 0, w)));
    EXPECT_FALSE(valid(make_insn(code, 1, 0, 1, 16)));
    EXPECT_FALSE(valid(make_insn(code, 1, 2, 0, 16)));
  }
}

TEST(Validate, Atomics) {
  for (uint8_t code : {0xc3, 0xdb}) {
    for (int32_t op : {0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1}) {
      EXPECT_TRUE(valid(make_insn(code, 1, 2, 0, op))) << op;
    }
    for (int32_t op : {0xe0, 0xf0, 0x10, 0x11, 0x20, 0x02, 0x100}) {
      EXPECT_FALSE(valid(make_insn(code, 1, 2, 0, op))) << op;
    }
  }
}

TEST(Validate, LdImm64) {
  const Insn lo = make_insn(kLdImm64, 1, 0, 0, 7);
  EXPECT_TRUE(valid(lo, &kZero));
  EXPECT_FALSE(valid(lo, nullptr));
  const Insn bad_hi = make_insn(0x07, 0, 0, 0, 0);
  EXPECT_FALSE(valid(lo, &bad_hi));
  const Insn hi_dst = make_insn(0, 1, 0, 0, 0);
  EXPECT_FALSE(valid(lo, &hi_dst));
  const Insn hi_off = make_insn(0, 0, 0, 1, 0);
  EXPECT_FALSE(valid(lo, &hi_off));
  const Insn hi_imm = make_insn(0, 0, 0, 0, 5);
  for (uint8_t src = 0; src <= 6; ++src) {
    EXPECT_TRUE(valid(make_insn(kLdImm64, 1, src, 0, 0), &kZero)) << int(src);
  }
  EXPECT_TRUE(valid(make_insn(kLdImm64, 1, kPseudoMapIdxValue, 0, 0), &hi_imm));
  EXPECT_TRUE(valid(make_insn(kLdImm64, 1, kPseudoMapValue, 0, 0), &hi_imm));
  EXPECT_FALSE(valid(make_insn(kLdImm64, 1, kPseudoMapIdx, 0, 0), &hi_imm));
  EXPECT_FALSE(valid(make_insn(kLdImm64, 1, kPseudoFunc, 0, 0), &hi_imm));
  EXPECT_FALSE(valid(make_insn(kLdImm64, 1, 7, 0, 0), &kZero));
  EXPECT_FALSE(valid(make_insn(kLdImm64, 1, 0, 1, 0), &kZero));
  EXPECT_EQ(ld_imm64_value(make_insn(kLdImm64, 1, 0, 0, -1), make_insn(0, 0, 0, 0, 0x12)),
            0x12ffffffffull);
}

TEST(Validate, CallsJumpsExit) {
  for (uint8_t src = 0; src <= 2; ++src) EXPECT_TRUE(valid(make_insn(kCall, 0, src, 0, 1)));
  EXPECT_FALSE(valid(make_insn(kCall, 0, 3, 0, 1)));
  EXPECT_FALSE(valid(make_insn(kCall, 1, 0, 0, 1)));
  EXPECT_FALSE(valid(make_insn(kCall, 0, 0, 1, 1)));
  EXPECT_TRUE(valid(make_insn(kCall, 0, 2, 1, 1)));  // kfunc: off selects a module BTF
  EXPECT_TRUE(valid(make_insn(kCallx, 3, 0, 0, 0)));
  EXPECT_FALSE(valid(make_insn(kCallx, 3, 0, 0, 3)));  // register in imm (old GNU as v1)
  EXPECT_FALSE(valid(make_insn(kCallx, 3, 1, 0, 0)));
  EXPECT_TRUE(valid(make_insn(kExit, 0, 0, 0, 0)));
  EXPECT_FALSE(valid(make_insn(kExit, 1, 0, 0, 0)));
  EXPECT_FALSE(valid(make_insn(kExit, 0, 0, 0, 1)));
  EXPECT_TRUE(valid(make_insn(0x05, 0, 0, 3, 0)));  // goto
  EXPECT_FALSE(valid(make_insn(0x05, 0, 0, 3, 1)));
  EXPECT_TRUE(valid(make_insn(0x06, 0, 0, 0, 70000)));  // gotol
  EXPECT_FALSE(valid(make_insn(0x06, 0, 0, 1, 70000)));
  EXPECT_TRUE(valid(make_insn(0xe5, 0, 0, 2, 0)));  // may_goto
  EXPECT_FALSE(valid(make_insn(0xe5, 0, 1, 2, 0)));
  EXPECT_FALSE(valid(make_insn(0xe5, 0, 0, 2, 1)));
  EXPECT_TRUE(valid(make_insn(0x15, 1, 0, 2, 5)));
  EXPECT_FALSE(valid(make_insn(0x15, 1, 2, 2, 5)));
  EXPECT_FALSE(valid(make_insn(0x1d, 1, 2, 2, 5)));
  EXPECT_EQ(jump_offset(make_insn(0x06, 0, 0, 9, 70000)), 70000);
  EXPECT_EQ(jump_offset(make_insn(0x05, 0, 0, -9, 70000)), -9);
  EXPECT_EQ(branch_target(make_insn(kCall, 0, 1, 0, -3), 10), 8);
}

TEST(Validate, MemoryReservedFields) {
  EXPECT_TRUE(valid(make_insn(0x61, 1, 2, -4, 0)));
  EXPECT_FALSE(valid(make_insn(0x61, 1, 2, -4, 1)));
  EXPECT_FALSE(valid(make_insn(0x62, 1, 2, -4, 1)));  // st with src
  EXPECT_FALSE(valid(make_insn(0x63, 1, 2, -4, 1)));  // stx with imm
  EXPECT_TRUE(valid(make_insn(0x20, 0, 0, 0, 12)));   // ld_abs w
  EXPECT_FALSE(valid(make_insn(0x20, 0, 1, 0, 12)));
  EXPECT_FALSE(valid(make_insn(0x20, 1, 0, 0, 12)));
  EXPECT_TRUE(valid(make_insn(0x40, 0, 3, 0, 12)));  // ld_ind w
  EXPECT_FALSE(valid(make_insn(0x40, 0, 3, 1, 12)));
  EXPECT_FALSE(valid(make_insn(0x38, 0, 0, 0, 12)));  // ld_abs dw does not exist
}

TEST(Validate, WritesReg) {
  EXPECT_TRUE(insn_writes_reg(make_insn(0x07, 3, 0, 0, 1), 3));
  EXPECT_FALSE(insn_writes_reg(make_insn(0x07, 3, 0, 0, 1), 4));
  EXPECT_TRUE(insn_writes_reg(make_insn(0xdb, 1, 2, 0, kAtomicCmpxchg), 0));
  EXPECT_TRUE(insn_writes_reg(make_insn(0xdb, 1, 2, 0, kAtomicXchg), 2));
  EXPECT_FALSE(insn_writes_reg(make_insn(0x7b, 1, 2, 0, 0), 1));
  EXPECT_TRUE(insn_writes_reg(make_insn(0x30, 0, 0, 0, 1), 0));
}

}  // namespace
}  // namespace userbpf::isa
