// The disassembler: formats instructions by OpKind in llvm-objdump's BPF syntax.
#include "isa/disasm.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "isa/decode.h"
#include "isa/opcodes.h"

namespace userbpf::isa {
namespace {

// Signed hexadecimal as llvm prints immediates: 0x5, -0x5, -0x8000000000000000.
std::string hex(int64_t v) {
  char buf[32];
  const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  std::snprintf(buf, sizeof(buf), "%s0x%" PRIx64, v < 0 ? "-" : "", mag);
  return buf;
}

// Jump offsets carry an explicit sign: +0x3, -0x2, +0x0.
std::string rel(int64_t v) {
  return v < 0 ? hex(v) : "+" + hex(v);
}

std::string reg(bool wide, uint8_t r) {
  return (wide ? "r" : "w") + std::to_string(r);
}

const char* size_name(uint8_t size, bool sign) {
  switch (size) {
    case kSizeB:
      return sign ? "s8" : "u8";
    case kSizeH:
      return sign ? "s16" : "u16";
    case kSizeW:
      return sign ? "s32" : "u32";
    default:
      return "u64";
  }
}

// "(r1 + 0x4)" / "(r2 - 0x8)"
std::string mem_operand(uint8_t base, int16_t off) {
  std::string s = "(r" + std::to_string(base) + (off < 0 ? " - " : " + ");
  return s + hex(off < 0 ? -static_cast<int64_t>(off) : off) + ")";
}

const char* alu_operator(uint8_t op, bool is_signed) {
  switch (op) {
    case kAluAdd:
      return "+=";
    case kAluSub:
      return "-=";
    case kAluMul:
      return "*=";
    case kAluDiv:
      return is_signed ? "s/=" : "/=";
    case kAluOr:
      return "|=";
    case kAluAnd:
      return "&=";
    case kAluLsh:
      return "<<=";
    case kAluRsh:
      return ">>=";
    case kAluMod:
      return is_signed ? "s%=" : "%=";
    case kAluXor:
      return "^=";
    case kAluArsh:
      return "s>>=";
    default:
      return "?=";
  }
}

const char* jmp_operator(uint8_t op) {
  switch (op) {
    case kJmpJeq:
      return "==";
    case kJmpJgt:
      return ">";
    case kJmpJge:
      return ">=";
    case kJmpJset:
      return "&";
    case kJmpJne:
      return "!=";
    case kJmpJsgt:
      return "s>";
    case kJmpJsge:
      return "s>=";
    case kJmpJlt:
      return "<";
    case kJmpJle:
      return "<=";
    case kJmpJslt:
      return "s<";
    case kJmpJsle:
      return "s<=";
    default:
      return "?";
  }
}

std::string format_alu(const Insn& insn) {
  const bool wide = insn_class(insn.code) == kClassAlu64;
  const uint8_t op = insn_op(insn.code);
  const std::string dst = reg(wide, insn.dst);
  const bool x = insn_src(insn.code) == kSrcX;
  const std::string src = x ? reg(wide, insn.src) : hex(insn.imm);
  if (op == kAluMov) {
    if (is_addr_space_cast(insn)) {
      const uint32_t imm = static_cast<uint32_t>(insn.imm);
      return dst + " = addr_space_cast(r" + std::to_string(insn.src) + ", " + hex(imm >> 16) +
             ", " + hex(imm & 0xffff) + ")";
    }
    if (is_movsx(insn)) return dst + " = (s" + std::to_string(insn.off) + ")" + src;
    return dst + " = " + src;
  }
  return dst + " " + alu_operator(op, is_signed_divmod(insn)) + " " + src;
}

std::string format_atomic(const Insn& insn) {
  const bool wide = insn_size(insn.code) == kSizeDw;
  const std::string src = reg(wide, insn.src);
  const std::string addr = mem_operand(insn.dst, insn.off);
  const char* width = wide ? "u64" : "u32";
  if (insn.imm == kAtomicXchg) {
    return src + (wide ? " = xchg_64(" : " = xchg32_32(") + addr.substr(1, addr.size() - 2) + ", " +
           src + ")";
  }
  if (insn.imm == kAtomicCmpxchg) {
    const std::string r0 = reg(wide, 0);
    return r0 + (wide ? " = cmpxchg_64(" : " = cmpxchg32_32(") + addr.substr(1, addr.size() - 2) +
           ", " + r0 + ", " + src + ")";
  }
  const char* op_name = "add";
  const char* op_sym = "+=";
  switch (insn.imm & ~kAtomicFetch) {
    case kAtomicOr:
      op_name = "or", op_sym = "|=";
      break;
    case kAtomicAnd:
      op_name = "and", op_sym = "&=";
      break;
    case kAtomicXor:
      op_name = "xor", op_sym = "^=";
      break;
    default:
      break;
  }
  if (insn.imm & kAtomicFetch) {
    return src + " = atomic_fetch_" + op_name + "((" + width + " *)" + addr + ", " + src + ")";
  }
  return std::string("lock *(") + width + " *)" + addr + " " + op_sym + " " + src;
}

// What a linked-form pseudo instruction refers to, "" for plain ones.
std::string pseudo_note(const Insn& insn, const Insn* next, size_t pc) {
  char buf[64];
  if (is_ld_imm64(insn) && next != nullptr) {
    switch (insn.src) {
      case kPseudoMapFd:
      case kPseudoMapIdx:
        std::snprintf(buf, sizeof(buf), "map #%u", static_cast<uint32_t>(insn.imm));
        return buf;
      case kPseudoMapValue:
      case kPseudoMapIdxValue:
        std::snprintf(buf, sizeof(buf), "map #%u value + 0x%x", static_cast<uint32_t>(insn.imm),
                      static_cast<uint32_t>(next->imm));
        return buf;
      case kPseudoBtfId:
        std::snprintf(buf, sizeof(buf), "btf id %u", static_cast<uint32_t>(insn.imm));
        return buf;
      case kPseudoFunc:
        std::snprintf(buf, sizeof(buf), "func pc %" PRId64, branch_target(insn, pc));
        return buf;
      default:
        return "";
    }
  }
  if (is_pseudo_call(insn)) {
    std::snprintf(buf, sizeof(buf), "call pc %" PRId64, branch_target(insn, pc));
    return buf;
  }
  if (is_kfunc_call(insn)) {
    std::snprintf(buf, sizeof(buf), "kfunc #%d", insn.imm);
    return buf;
  }
  return "";
}

}  // namespace

std::string format_insn(const Insn& insn, const Insn* next) {
  if (validate_insn(insn, next) != nullptr) return "<unknown>";
  const OpcodeInfo& info = opcode_info(insn.code);
  const bool jmp32 = insn_class(insn.code) == kClassJmp32;
  switch (info.kind) {
    case OpKind::kAluBin:
      return format_alu(insn);
    case OpKind::kAluNeg: {
      const std::string r = reg(insn_class(insn.code) == kClassAlu64, insn.dst);
      return r + " = -" + r;
    }
    case OpKind::kAluEnd:
      return "r" + std::to_string(insn.dst) + " = " + info.name + std::to_string(insn.imm) + " r" +
             std::to_string(insn.dst);
    case OpKind::kJa:
      return (jmp32 ? "gotol " : "goto ") + rel(jump_offset(insn));
    case OpKind::kJmpCond: {
      const std::string src = insn_src(insn.code) == kSrcX ? reg(!jmp32, insn.src) : hex(insn.imm);
      return "if " + reg(!jmp32, insn.dst) + " " + jmp_operator(insn_op(insn.code)) + " " + src +
             " goto " + rel(insn.off);
    }
    case OpKind::kJcond:
      return "may_goto " + rel(insn.off);
    case OpKind::kCall:
      return "call " + hex(insn.imm);
    case OpKind::kCallx:
      return "callx r" + std::to_string(insn.dst);
    case OpKind::kExit:
      return "exit";
    case OpKind::kLdImm64:
      return "r" + std::to_string(insn.dst) + " = " +
             hex(static_cast<int64_t>(ld_imm64_value(insn, *next))) + " ll";
    case OpKind::kLdAbs:
      return std::string("r0 = *(") + size_name(insn_size(insn.code), false) + " *)skb[" +
             hex(insn.imm) + "]";
    case OpKind::kLdInd: {
      std::string s = std::string("r0 = *(") + size_name(insn_size(insn.code), false) + " *)skb[r" +
                      std::to_string(insn.src);
      if (insn.imm != 0) {
        s += insn.imm < 0 ? " - " : " + ";
        s += hex(insn.imm < 0 ? -static_cast<int64_t>(insn.imm) : insn.imm);
      }
      return s + "]";
    }
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      return "r" + std::to_string(insn.dst) + " = *(" +
             size_name(insn_size(insn.code), info.kind == OpKind::kLdxSx) + " *)" +
             mem_operand(insn.src, insn.off);
    case OpKind::kSt:
      return std::string("*(") + size_name(insn_size(insn.code), false) + " *)" +
             mem_operand(insn.dst, insn.off) + " = " + hex(insn.imm);
    case OpKind::kStx:
      return std::string("*(") + size_name(insn_size(insn.code), false) + " *)" +
             mem_operand(insn.dst, insn.off) + " = r" + std::to_string(insn.src);
    case OpKind::kAtomic:
      return format_atomic(insn);
    case OpKind::kInvalid:
      break;
  }
  return "<unknown>";
}

std::string disassemble_program(const Insn* insns, size_t count, const DisasmOptions& opts) {
  std::string out;
  char buf[64];
  for (size_t pc = 0; pc < count; ++pc) {
    const Insn& insn = insns[pc];
    const Insn* next = pc + 1 < count ? &insns[pc + 1] : nullptr;
    const bool pair = is_ld_imm64(insn) && next != nullptr;
    std::snprintf(buf, sizeof(buf), "%8zu:\t", pc);
    out += buf;
    if (opts.raw_bytes) {
      uint8_t bytes[16];
      std::memcpy(bytes, &insn, 8);
      if (pair) std::memcpy(bytes + 8, next, 8);
      for (int i = 0; i < (pair ? 16 : 8); ++i) {
        std::snprintf(buf, sizeof(buf), i == 0 ? "%02x" : " %02x", bytes[i]);
        out += buf;
      }
      out += '\t';
    }
    const std::string text = format_insn(insn, next);
    out += text;
    const OpKind kind = opcode_info(insn.code).kind;
    if (text != "<unknown>" &&
        (kind == OpKind::kJa || kind == OpKind::kJmpCond || kind == OpKind::kJcond)) {
      const uint64_t target = static_cast<uint64_t>(branch_target(insn, pc)) * 8;
      std::snprintf(buf, sizeof(buf), "+0x%" PRIx64 ">", target);
      out += " <" + opts.symbol + buf;
    }
    std::string note = opts.note ? opts.note(pc, insn) : std::string();
    if (note.empty() && opts.pseudo_notes && text != "<unknown>")
      note = pseudo_note(insn, next, pc);
    if (!note.empty()) out += "  ; " + note;
    out += '\n';
    if (pair) ++pc;
  }
  return out;
}

}  // namespace userbpf::isa
