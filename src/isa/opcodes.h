// The opcode table: every valid BPF opcode byte of ISA v1-v4, listed once
// (X-macro lists of operations, sizes and conditions) and expanded into a
// constexpr 256-entry table that the validator, disassembler, interpreter and
// JIT all derive from. Variants selected by off or imm (sdiv/smod, movsx,
// addr_space_cast, bswap width, atomic op, call kind) are checked by
// validate_insn() in decode.h, not by distinct table entries.
#pragma once

#include <array>
#include <cstdint>

#include "isa/insn.h"

namespace userbpf::isa {

// X(name, op) for the binary ALU operations (K and X forms, 32 and 64 bit).
#define USERBPF_ALU_BINOPS(X) \
  X(add, kAluAdd)             \
  X(sub, kAluSub)             \
  X(mul, kAluMul)             \
  X(div, kAluDiv)             \
  X(or, kAluOr)               \
  X(and, kAluAnd)             \
  X(lsh, kAluLsh)             \
  X(rsh, kAluRsh)             \
  X(mod, kAluMod)             \
  X(xor, kAluXor)             \
  X(mov, kAluMov)             \
  X(arsh, kAluArsh)

// X(name, op) for conditional jumps (K and X forms, JMP and JMP32).
#define USERBPF_JMP_CONDS(X) \
  X(jeq, kJmpJeq)            \
  X(jgt, kJmpJgt)            \
  X(jge, kJmpJge)            \
  X(jset, kJmpJset)          \
  X(jne, kJmpJne)            \
  X(jsgt, kJmpJsgt)          \
  X(jsge, kJmpJsge)          \
  X(jlt, kJmpJlt)            \
  X(jle, kJmpJle)            \
  X(jslt, kJmpJslt)          \
  X(jsle, kJmpJsle)

// X(name, size, bytes) for memory access widths.
#define USERBPF_MEM_SIZES(X) \
  X(w, kSizeW, 4)            \
  X(h, kSizeH, 2)            \
  X(b, kSizeB, 1)            \
  X(dw, kSizeDw, 8)

// How an opcode's fields are interpreted; the disassembler formats by kind and
// the interpreter/JIT dispatch on the opcode byte within a kind.
enum class OpKind : uint8_t {
  kInvalid,
  kAluBin,   // dst op= src/imm (ALU or ALU64)
  kAluNeg,   // dst = -dst
  kAluEnd,   // byte swap (le/be/bswap), width in imm
  kJa,       // JMP: goto off; JMP32: gotol imm
  kJmpCond,  // if dst op src/imm goto off
  kJcond,    // may_goto
  kCall,     // helper / local / kfunc call, by src
  kCallx,    // indirect call through a register
  kExit,
  kLdImm64,  // two-slot 64-bit immediate load, src selects the pseudo kind
  kLdAbs,    // legacy packet load, absolute offset
  kLdInd,    // legacy packet load, register + offset
  kLdx,      // dst = *(size *)(src + off)
  kLdxSx,    // sign-extending load
  kSt,       // *(size *)(dst + off) = imm
  kStx,      // *(size *)(dst + off) = src
  kAtomic,   // atomic op on *(size *)(dst + off), op in imm
};

struct OpcodeInfo {
  OpKind kind = OpKind::kInvalid;
  const char* name = nullptr;  // operation name without width suffix, e.g. "add", "jeq", "ldx"
};

constexpr std::array<OpcodeInfo, 256> make_opcode_table() {
  std::array<OpcodeInfo, 256> t{};
  for (uint8_t cls : {kClassAlu, kClassAlu64}) {
    for (uint8_t src : {kSrcK, kSrcX}) {
#define USERBPF_X(name, op) t[cls | src | op] = {OpKind::kAluBin, #name};
      USERBPF_ALU_BINOPS(USERBPF_X)
#undef USERBPF_X
    }
    t[cls | kSrcK | kAluNeg] = {OpKind::kAluNeg, "neg"};
  }
  t[kClassAlu | kSrcK | kAluEnd] = {OpKind::kAluEnd, "le"};
  t[kClassAlu | kSrcX | kAluEnd] = {OpKind::kAluEnd, "be"};
  t[kClassAlu64 | kSrcK | kAluEnd] = {OpKind::kAluEnd, "bswap"};

  for (uint8_t cls : {kClassJmp, kClassJmp32}) {
    for (uint8_t src : {kSrcK, kSrcX}) {
#define USERBPF_X(name, op) t[cls | src | op] = {OpKind::kJmpCond, #name};
      USERBPF_JMP_CONDS(USERBPF_X)
#undef USERBPF_X
    }
    t[cls | kJmpJa] = {OpKind::kJa, "ja"};
  }
  t[kClassJmp | kJmpJcond] = {OpKind::kJcond, "may_goto"};
  t[kCall] = {OpKind::kCall, "call"};
  t[kCallx] = {OpKind::kCallx, "callx"};
  t[kExit] = {OpKind::kExit, "exit"};

  t[kLdImm64] = {OpKind::kLdImm64, "lddw"};
#define USERBPF_X(name, size, bytes)                                 \
  t[kClassLdx | kModeMem | size] = {OpKind::kLdx, "ldx"};            \
  t[kClassSt | kModeMem | size] = {OpKind::kSt, "st"};               \
  t[kClassStx | kModeMem | size] = {OpKind::kStx, "stx"};            \
  if (size != kSizeDw) {                                             \
    t[kClassLd | kModeAbs | size] = {OpKind::kLdAbs, "ldabs"};       \
    t[kClassLd | kModeInd | size] = {OpKind::kLdInd, "ldind"};       \
    t[kClassLdx | kModeMemsx | size] = {OpKind::kLdxSx, "ldxs"};     \
  }                                                                  \
  if (size == kSizeW || size == kSizeDw) {                           \
    t[kClassStx | kModeAtomic | size] = {OpKind::kAtomic, "atomic"}; \
  }
  USERBPF_MEM_SIZES(USERBPF_X)
#undef USERBPF_X
  return t;
}

inline constexpr std::array<OpcodeInfo, 256> kOpcodeTable = make_opcode_table();

constexpr const OpcodeInfo& opcode_info(uint8_t code) {
  return kOpcodeTable[code];
}

}  // namespace userbpf::isa
