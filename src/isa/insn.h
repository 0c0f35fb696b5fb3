// BPF instruction encoding (RFC 9669): the 8-byte instruction and the field
// constants every other layer (decoder, disassembler, interpreter, JIT,
// loader) uses. Names follow the kernel's uapi with a k prefix.
#pragma once

#include <cstdint>

namespace userbpf::isa {

// One 64-bit instruction slot. ld_imm64 (lddw) takes two slots; the second
// has code 0 and carries the upper 32 bits of the immediate in imm.
struct Insn {
  uint8_t code;
  uint8_t dst : 4;
  uint8_t src : 4;
  int16_t off;
  int32_t imm;
};
static_assert(sizeof(Insn) == 8);

// Instruction classes (code & 0x07).
inline constexpr uint8_t kClassLd = 0x00;
inline constexpr uint8_t kClassLdx = 0x01;
inline constexpr uint8_t kClassSt = 0x02;
inline constexpr uint8_t kClassStx = 0x03;
inline constexpr uint8_t kClassAlu = 0x04;
inline constexpr uint8_t kClassJmp = 0x05;
inline constexpr uint8_t kClassJmp32 = 0x06;
inline constexpr uint8_t kClassAlu64 = 0x07;

// Source operand (code & 0x08) for ALU and JMP classes.
inline constexpr uint8_t kSrcK = 0x00;
inline constexpr uint8_t kSrcX = 0x08;

// ALU operations (code & 0xf0).
inline constexpr uint8_t kAluAdd = 0x00;
inline constexpr uint8_t kAluSub = 0x10;
inline constexpr uint8_t kAluMul = 0x20;
inline constexpr uint8_t kAluDiv = 0x30;  // off=1: sdiv
inline constexpr uint8_t kAluOr = 0x40;
inline constexpr uint8_t kAluAnd = 0x50;
inline constexpr uint8_t kAluLsh = 0x60;
inline constexpr uint8_t kAluRsh = 0x70;
inline constexpr uint8_t kAluNeg = 0x80;
inline constexpr uint8_t kAluMod = 0x90;  // off=1: smod
inline constexpr uint8_t kAluXor = 0xa0;
inline constexpr uint8_t kAluMov = 0xb0;  // off=8/16/32: movsx; ALU64 X off=1: addr_space_cast
inline constexpr uint8_t kAluArsh = 0xc0;
inline constexpr uint8_t kAluEnd = 0xd0;  // ALU: to le (K) / to be (X); ALU64 K: bswap

// Jump operations (code & 0xf0).
inline constexpr uint8_t kJmpJa = 0x00;  // JMP: off; JMP32: imm (gotol)
inline constexpr uint8_t kJmpJeq = 0x10;
inline constexpr uint8_t kJmpJgt = 0x20;
inline constexpr uint8_t kJmpJge = 0x30;
inline constexpr uint8_t kJmpJset = 0x40;
inline constexpr uint8_t kJmpJne = 0x50;
inline constexpr uint8_t kJmpJsgt = 0x60;
inline constexpr uint8_t kJmpJsge = 0x70;
inline constexpr uint8_t kJmpCall = 0x80;
inline constexpr uint8_t kJmpExit = 0x90;
inline constexpr uint8_t kJmpJlt = 0xa0;
inline constexpr uint8_t kJmpJle = 0xb0;
inline constexpr uint8_t kJmpJslt = 0xc0;
inline constexpr uint8_t kJmpJsle = 0xd0;
inline constexpr uint8_t kJmpJcond = 0xe0;  // may_goto (src 0)

// Load/store size (code & 0x18) and mode (code & 0xe0).
inline constexpr uint8_t kSizeW = 0x00;
inline constexpr uint8_t kSizeH = 0x08;
inline constexpr uint8_t kSizeB = 0x10;
inline constexpr uint8_t kSizeDw = 0x18;
inline constexpr uint8_t kModeImm = 0x00;
inline constexpr uint8_t kModeAbs = 0x20;
inline constexpr uint8_t kModeInd = 0x40;
inline constexpr uint8_t kModeMem = 0x60;
inline constexpr uint8_t kModeMemsx = 0x80;
inline constexpr uint8_t kModeAtomic = 0xc0;

// Atomic operations (imm of BPF_ATOMIC stores).
inline constexpr int32_t kAtomicFetch = 0x01;
inline constexpr int32_t kAtomicAdd = 0x00;
inline constexpr int32_t kAtomicOr = 0x40;
inline constexpr int32_t kAtomicAnd = 0x50;
inline constexpr int32_t kAtomicXor = 0xa0;
inline constexpr int32_t kAtomicXchg = 0xe0 | kAtomicFetch;
inline constexpr int32_t kAtomicCmpxchg = 0xf0 | kAtomicFetch;

// ld_imm64 src kinds (SPEC.md section 1).
inline constexpr uint8_t kPseudoMapFd = 1;
inline constexpr uint8_t kPseudoMapValue = 2;
inline constexpr uint8_t kPseudoBtfId = 3;
inline constexpr uint8_t kPseudoFunc = 4;
inline constexpr uint8_t kPseudoMapIdx = 5;
inline constexpr uint8_t kPseudoMapIdxValue = 6;

// call src kinds.
inline constexpr uint8_t kPseudoCallHelper = 0;
inline constexpr uint8_t kPseudoCall = 1;  // bpf-to-bpf, imm = pc-relative target - 1
inline constexpr uint8_t kPseudoKfuncCall = 2;

// addr_space_cast immediates.
inline constexpr int32_t kAddrSpaceCastToKern = 1;        // as1 -> as0
inline constexpr int32_t kAddrSpaceCastToUser = 1 << 16;  // as0 -> as1

// Machine constants.
inline constexpr int kNumRegs = 11;  // r0..r10; r10 is the read-only frame pointer
inline constexpr int kStackSize = 512;
inline constexpr int kMaxCallFrames = 8;

constexpr uint8_t insn_class(uint8_t code) {
  return code & 0x07;
}
constexpr uint8_t insn_op(uint8_t code) {
  return code & 0xf0;
}
constexpr uint8_t insn_src(uint8_t code) {
  return code & 0x08;
}
constexpr uint8_t insn_size(uint8_t code) {
  return code & 0x18;
}
constexpr uint8_t insn_mode(uint8_t code) {
  return code & 0xe0;
}
constexpr int size_bytes(uint8_t size) {
  return size == kSizeW ? 4 : size == kSizeH ? 2 : size == kSizeB ? 1 : 8;
}

inline constexpr uint8_t kLdImm64 = kClassLd | kModeImm | kSizeDw;  // 0x18
inline constexpr uint8_t kCall = kClassJmp | kJmpCall;              // 0x85
// callx: indirect call through the register in dst; src, off and imm are 0.
// That is LLVM's encoding (llvm-mc-19 assembles `callx r2` to 8d 02 00 00 00 00
// 00 00), the kernel's (Documentation/bpf/linux-notes.rst: "callx dst") and
// bpf_conformance's. GNU as for -mcpu=v1 and older uBPF put the register in imm
// instead; validate_insn() rejects that form.
inline constexpr uint8_t kCallx = kClassJmp | kJmpCall | kSrcX;  // 0x8d
inline constexpr uint8_t kExit = kClassJmp | kJmpExit;           // 0x95

}  // namespace userbpf::isa
