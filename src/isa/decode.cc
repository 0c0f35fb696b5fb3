// The per-instruction validator: the reserved-field rules of each opcode kind
// (what the kernel verifier reports as "uses reserved fields").
#include "isa/decode.h"

namespace userbpf::isa {
namespace {

constexpr uint8_t kFp = 10;

const char* validate_alu(const Insn& insn) {
  const uint8_t op = insn_op(insn.code);
  const bool alu64 = insn_class(insn.code) == kClassAlu64;
  const bool x = insn_src(insn.code) == kSrcX;
  if (op == kAluEnd) {
    // The X bit selects big-endian here; there is no source register.
    if (insn.src != 0 || insn.off != 0) return "byte swap uses reserved fields";
    if (insn.imm != 16 && insn.imm != 32 && insn.imm != 64) {
      return "byte swap width must be 16, 32 or 64";
    }
    return nullptr;
  }
  if (!x && insn.src != 0) return "src register set on an immediate ALU operation";
  if (x && insn.imm != 0 && !is_addr_space_cast(insn)) {
    return "imm set on a register ALU operation";
  }
  switch (op) {
    case kAluDiv:
    case kAluMod:
      if (insn.off != 0 && insn.off != 1) return "div/mod offset must be 0 or 1 (sdiv/smod)";
      return nullptr;
    case kAluMov:
      if (!x) {
        if (insn.off != 0) return "mov with immediate uses the offset field";
        return nullptr;
      }
      if (alu64 && insn.off == 1) {
        if (insn.imm != kAddrSpaceCastToKern && insn.imm != kAddrSpaceCastToUser) {
          return "addr_space_cast only converts between address spaces 0 and 1";
        }
        return nullptr;
      }
      if (insn.off == 0 || insn.off == 8 || insn.off == 16) return nullptr;
      if (alu64 && insn.off == 32) return nullptr;
      return "mov offset must be 0 or a movsx width (8, 16, 32 for 64-bit)";
    case kAluNeg:
      if (insn.off != 0 || insn.imm != 0) return "neg uses reserved fields";
      return nullptr;
    default:
      if (insn.off != 0) return "ALU operation uses the offset field";
      return nullptr;
  }
}

const char* validate_atomic(const Insn& insn) {
  switch (insn.imm) {
    case kAtomicAdd:
    case kAtomicOr:
    case kAtomicAnd:
    case kAtomicXor:
    case kAtomicAdd | kAtomicFetch:
    case kAtomicOr | kAtomicFetch:
    case kAtomicAnd | kAtomicFetch:
    case kAtomicXor | kAtomicFetch:
    case kAtomicXchg:
    case kAtomicCmpxchg:
      return nullptr;
    default:
      return "unknown atomic operation";
  }
}

const char* validate_ld_imm64(const Insn& insn, const Insn* next) {
  if (next == nullptr) return "ld_imm64 is missing its second slot";
  if (insn.off != 0) return "ld_imm64 uses the offset field";
  if (insn.src > kPseudoMapIdxValue) return "ld_imm64 with unknown pseudo source";
  if (next->code != 0 || next->dst != 0 || next->src != 0 || next->off != 0) {
    return "second slot of ld_imm64 must be zero except imm";
  }
  if ((insn.src == kPseudoMapFd || insn.src == kPseudoMapIdx || insn.src == kPseudoFunc ||
       insn.src == kPseudoBtfId) &&
      next->imm != 0) {
    return "ld_imm64 of a map, function or BTF id has a nonzero upper half";
  }
  return nullptr;
}

}  // namespace

bool insn_writes_reg(const Insn& insn, uint8_t reg) {
  switch (opcode_info(insn.code).kind) {
    case OpKind::kAluBin:
    case OpKind::kAluNeg:
    case OpKind::kAluEnd:
    case OpKind::kLdImm64:
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      return insn.dst == reg;
    case OpKind::kLdAbs:
    case OpKind::kLdInd:
      return reg == 0;
    case OpKind::kAtomic:
      if (insn.imm == kAtomicCmpxchg) return reg == 0;
      return (insn.imm & kAtomicFetch) != 0 && insn.src == reg;
    case OpKind::kCall:
    case OpKind::kCallx:
      return reg <= 5;
    default:
      return false;
  }
}

const char* validate_insn(const Insn& insn, const Insn* next) {
  const OpcodeInfo& info = opcode_info(insn.code);
  if (info.kind == OpKind::kInvalid) return "invalid opcode";
  if (insn.dst > kFp || insn.src > kFp) {
    // ld_imm64 and calls use src as a kind, checked below; a kind above 10 is
    // invalid there as well.
    return "invalid register";
  }

  switch (info.kind) {
    case OpKind::kAluBin:
    case OpKind::kAluNeg:
    case OpKind::kAluEnd:
      if (const char* why = validate_alu(insn)) return why;
      break;
    case OpKind::kJa:
      if (insn.dst != 0 || insn.src != 0) return "ja uses reserved fields";
      if (insn_class(insn.code) == kClassJmp && insn.imm != 0) return "ja uses the imm field";
      if (insn_class(insn.code) == kClassJmp32 && insn.off != 0) {
        return "gotol uses the offset field";
      }
      break;
    case OpKind::kJmpCond:
      if (insn_src(insn.code) == kSrcK && insn.src != 0) {
        return "src register set on an immediate jump";
      }
      if (insn_src(insn.code) == kSrcX && insn.imm != 0) return "imm set on a register jump";
      break;
    case OpKind::kJcond:
      if (insn.src != 0 || insn.dst != 0 || insn.imm != 0) return "may_goto uses reserved fields";
      break;
    case OpKind::kCall:
      if (insn.dst != 0) return "call uses the dst field";
      if (insn.src > kPseudoKfuncCall) return "call with unknown source kind";
      if (insn.off != 0 && insn.src != kPseudoKfuncCall) return "call uses the offset field";
      break;
    case OpKind::kCallx:
      // LLVM (llvm-mc-19: `callx r2` -> 8d 02 00 ...) and the kernel's
      // linux-notes.rst put the register in dst; src, off and imm are zero.
      if (insn.src != 0 || insn.off != 0 || insn.imm != 0) return "callx uses reserved fields";
      break;
    case OpKind::kExit:
      if (insn.dst != 0 || insn.src != 0 || insn.off != 0 || insn.imm != 0) {
        return "exit uses reserved fields";
      }
      break;
    case OpKind::kLdImm64:
      if (const char* why = validate_ld_imm64(insn, next)) return why;
      break;
    case OpKind::kLdAbs:
      if (insn.dst != 0 || insn.src != 0 || insn.off != 0) return "ld_abs uses reserved fields";
      break;
    case OpKind::kLdInd:
      if (insn.dst != 0 || insn.off != 0) return "ld_ind uses reserved fields";
      break;
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      if (insn.imm != 0) return "load uses the imm field";
      break;
    case OpKind::kSt:
      if (insn.src != 0) return "store of an immediate uses the src field";
      break;
    case OpKind::kStx:
      if (insn.imm != 0) return "store uses the imm field";
      break;
    case OpKind::kAtomic:
      if (const char* why = validate_atomic(insn)) return why;
      break;
    case OpKind::kInvalid:
      return "invalid opcode";
  }

  // Calls write r0-r5, never r10; everything else may not write the frame pointer.
  if (info.kind != OpKind::kCall && info.kind != OpKind::kCallx && insn_writes_reg(insn, kFp)) {
    return "write to the read-only frame pointer r10";
  }
  return nullptr;
}

}  // namespace userbpf::isa
