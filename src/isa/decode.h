// Decoding helpers over the opcode table and the per-instruction validator:
// which fields an opcode uses, its variant (sdiv, movsx, addr_space_cast,
// atomic op...), jump targets, and whether an instruction is well formed on
// its own (validate_insn). Program-level rules (jump targets, subprograms,
// helpers, maps) are prepare_program()'s job in src/vm.
#pragma once

#include <cstddef>
#include <cstdint>

#include "isa/insn.h"
#include "isa/opcodes.h"

namespace userbpf::isa {

// 64-bit immediate of an ld_imm64 pair: lo.imm is the low half, hi.imm the high.
constexpr uint64_t ld_imm64_value(const Insn& lo, const Insn& hi) {
  return static_cast<uint64_t>(static_cast<uint32_t>(lo.imm)) |
         (static_cast<uint64_t>(static_cast<uint32_t>(hi.imm)) << 32);
}

constexpr bool is_ld_imm64(const Insn& insn) {
  return insn.code == kLdImm64;
}
// Number of 8-byte slots the instruction takes (2 for ld_imm64).
constexpr int insn_slots(const Insn& insn) {
  return is_ld_imm64(insn) ? 2 : 1;
}

constexpr bool is_alu(uint8_t code) {
  return insn_class(code) == kClassAlu || insn_class(code) == kClassAlu64;
}
constexpr bool is_jmp(uint8_t code) {
  return insn_class(code) == kClassJmp || insn_class(code) == kClassJmp32;
}

constexpr bool is_helper_call(const Insn& insn) {
  return insn.code == kCall && insn.src == kPseudoCallHelper;
}
constexpr bool is_pseudo_call(const Insn& insn) {
  return insn.code == kCall && insn.src == kPseudoCall;
}
constexpr bool is_kfunc_call(const Insn& insn) {
  return insn.code == kCall && insn.src == kPseudoKfuncCall;
}
constexpr bool is_pseudo_func(const Insn& insn) {
  return insn.code == kLdImm64 && insn.src == kPseudoFunc;
}

// sdiv/smod: DIV or MOD with off == 1.
constexpr bool is_signed_divmod(const Insn& insn) {
  return is_alu(insn.code) && (insn_op(insn.code) == kAluDiv || insn_op(insn.code) == kAluMod) &&
         insn.off == 1;
}
// addr_space_cast: ALU64 MOV X with off == 1.
constexpr bool is_addr_space_cast(const Insn& insn) {
  return insn.code == (kClassAlu64 | kSrcX | kAluMov) && insn.off == 1;
}
// movsx: MOV X with off 8/16/32 (sign-extend from that many bits).
constexpr bool is_movsx(const Insn& insn) {
  return (insn.code == (kClassAlu64 | kSrcX | kAluMov) ||
          insn.code == (kClassAlu | kSrcX | kAluMov)) &&
         (insn.off == 8 || insn.off == 16 || insn.off == 32);
}

// Offset in instructions of a jump relative to pc + 1: off, or imm for gotol
// (JMP32 | JA). Only meaningful for OpKind::kJa, kJmpCond and kJcond.
constexpr int64_t jump_offset(const Insn& insn) {
  return insn.code == (kClassJmp32 | kJmpJa) ? insn.imm : insn.off;
}

// Target pc of a jump, pseudo call or pseudo-func load at pc (may be out of
// range; callers check).
constexpr int64_t branch_target(const Insn& insn, size_t pc) {
  if (insn.code == kCall || insn.code == kLdImm64) return static_cast<int64_t>(pc) + 1 + insn.imm;
  return static_cast<int64_t>(pc) + 1 + jump_offset(insn);
}

// Whether the instruction writes register dst (ALU, loads, ld_imm64) or, for
// fetching atomics, the source register (and r0 for cmpxchg). Used to keep r10
// read-only.
bool insn_writes_reg(const Insn& insn, uint8_t reg);

// Checks one instruction on its own: opcode in kOpcodeTable, registers <= r10,
// no write to r10, and the off/imm/src rules of its variant (the kernel
// verifier's "uses reserved fields" checks). next is the following slot
// (nullptr if none) for ld_imm64. Returns nullptr if valid, else a static
// string saying why not.
//
// Deliberately not rejected (the kernel verifier does, as a data-flow rule):
// division by a zero immediate and constant shifts >= the operand width. Their
// results are defined (0 / dst unchanged, shift count masked) and public
// conformance suites rely on them.
const char* validate_insn(const Insn& insn, const Insn* next);

}  // namespace userbpf::isa
