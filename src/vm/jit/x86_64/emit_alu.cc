// The x86-64 code generator: ALU operations (shifts, division, byte swaps).
#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {

// `dst -= src` or `dst += src`, then `dst += imm` or `dst -= imm` of the
// same width, the second no jump target (so nothing sees dst between
// them): r11 = src +/- imm off dst's dependency chain, then one add to dst
// (a counter like `n -= x; n += 1` then costs one cycle per iteration, not
// two). The value is the same modulo 2^width.
bool Emitter::emit_reassociated(size_t pc) {
  if (pc + 1 >= n_ || target_[pc + 1] || (!folded_add_.empty() && folded_add_[pc])) return false;
  const Insn& a = insns_[pc];
  const Insn& b = insns_[pc + 1];
  const uint8_t cls = insn_class(a.code);
  if ((cls != kClassAlu && cls != kClassAlu64) || a.code != (cls | kSrcX | insn_op(a.code)) ||
      (insn_op(a.code) != kAluAdd && insn_op(a.code) != kAluSub) || a.off != 0 || a.dst == a.src ||
      a.dst == 10 || b.dst != a.dst || b.off != 0 ||
      (b.code != (cls | kSrcK | kAluAdd) && b.code != (cls | kSrcK | kAluSub))) {
    return false;
  }
  const bool is64 = cls == kClassAlu64;
  const int64_t k = insn_op(b.code) == kAluAdd ? int64_t{b.imm} : -int64_t{b.imm};
  const Reg64& d = kReg[a.dst];
  const Reg64& s = kReg[a.src];
  if (insn_op(a.code) == kAluSub) {  // r11 = k - src
    if (is64) {
      mov(r11, static_cast<uint64_t>(k));
      sub(r11, s);
    } else {
      mov(r11d, static_cast<uint32_t>(k));
      sub(r11d, s.cvt32());
    }
  } else if (is64 && k >= INT32_MIN && k <= INT32_MAX) {  // r11 = src + k
    lea(r11, ptr[s + static_cast<int32_t>(k)]);
  } else if (is64) {
    mov(r11, static_cast<uint64_t>(k));
    add(r11, s);
  } else {
    lea(r11d, ptr[s + static_cast<int32_t>(static_cast<uint32_t>(k))]);
  }
  is64 ? add(d, r11) : add(d.cvt32(), r11d);
  skip_pc_ = pc + 1;
  return true;
}

void Emitter::emit_alu(const Insn& in) {
  const bool is64 = insn_class(in.code) == kClassAlu64;
  const bool x = insn_src(in.code) == kSrcX;
  const uint8_t op = insn_op(in.code);
  const Reg64& d = kReg[in.dst];
  const Reg64& s = kReg[in.src];
  const Reg& D = is64 ? static_cast<const Reg&>(d) : static_cast<const Reg&>(d.cvt32());
  const Reg& S = is64 ? static_cast<const Reg&>(s) : static_cast<const Reg&>(s.cvt32());
  const uint32_t imm = static_cast<uint32_t>(in.imm);  // sign-extended by the encodings
  switch (op) {
    case kAluAdd:
      x ? add(D, S) : add(D, imm);
      return;
    case kAluSub:
      x ? sub(D, S) : sub(D, imm);
      return;
    case kAluOr:
      x ? or_(D, S) : or_(D, imm);
      return;
    case kAluAnd:
      x ? and_(D, S) : and_(D, imm);
      return;
    case kAluXor:
      x ? xor_(D, S) : xor_(D, imm);
      return;
    case kAluMul:
      x ? imul(D, S) : imul(D, D, static_cast<int>(in.imm));
      return;
    case kAluMov:
      if (x) {
        mov(D, S);
      } else if (is64) {
        mov(d, static_cast<uint64_t>(static_cast<int64_t>(in.imm)));
      } else {
        mov(d.cvt32(), imm);
      }
      return;
    case kAluNeg:
      neg(D);
      return;
    case kAluLsh:
    case kAluRsh:
    case kAluArsh:
      emit_shift(in, is64);
      return;
    case kAluDiv:
    case kAluMod:
      emit_divmod(in, is64, op == kAluDiv);
      return;
    default:
      return;
  }
}

// Shift counts are masked to the operand width: x86 does the same for
// counts in cl and immediates, so only rcx (r4) needs care.
void Emitter::emit_shift(const Insn& in, bool is64) {
  const uint8_t op = insn_op(in.code);
  auto shift = [&](const Reg& r, const Reg8& count) {
    if (op == kAluLsh) {
      shl(r, count);
    } else if (op == kAluRsh) {
      shr(r, count);
    } else {
      sar(r, count);
    }
  };
  const Reg64& d = kReg[in.dst];
  auto width = [&](const Reg64& r) -> Reg {
    return is64 ? static_cast<const Reg&>(r) : static_cast<const Reg&>(r.cvt32());
  };
  if (insn_src(in.code) == kSrcK) {
    const int n = in.imm & (is64 ? 63 : 31);
    if (n == 0) {
      if (!is64) mov(d.cvt32(), d.cvt32());
      return;
    }
    if (op == kAluLsh) {
      shl(width(d), n);
    } else if (op == kAluRsh) {
      shr(width(d), n);
    } else {
      sar(width(d), n);
    }
    return;
  }
  const Reg64& s = kReg[in.src];
  if (s == rcx) {
    shift(width(d), cl);
  } else if (d == rcx) {
    mov(r11, rcx);
    mov(rcx, s);
    shift(width(r11), cl);
    mov(rcx, r11);
  } else {
    mov(r11, rcx);
    mov(rcx, s);
    shift(width(d), cl);
    mov(rcx, r11);
  }
}

// Division by zero gives 0, modulo by zero leaves dst (32-bit: zero-extended);
// signed INT_MIN / -1 wraps and INT_MIN % -1 is 0, with no #DE.
void Emitter::emit_divmod(const Insn& in, bool is64, bool is_div) {
  const bool is_signed = in.off == 1;
  const Reg64& d = kReg[in.dst];
  if (insn_src(in.code) == kSrcX) {
    is64 ? mov(r11, kReg[in.src]) : mov(r11d, kReg[in.src].cvt32());
  } else {
    is64 ? mov(r11, static_cast<uint64_t>(static_cast<int64_t>(in.imm)))
         : mov(r11d, static_cast<uint32_t>(in.imm));
  }
  const Lbl zero = new_label(), minus1 = new_label(), done = new_label();
  is64 ? test(r11, r11) : test(r11d, r11d);
  jcc(Cond::kZ, zero);
  if (is_signed) {
    is64 ? cmp(r11, -1) : cmp(r11d, -1);
    jcc(Cond::kEq, minus1);
  }
  if (d != rax) push(rax);
  if (d != rdx) push(rdx);
  if (d != rax) mov(rax, d);
  if (is_signed) {
    is64 ? cqo() : cdq();
  } else {
    xor_(edx, edx);
  }
  if (is64) {
    is_signed ? idiv(r11) : div(r11);
  } else {
    is_signed ? idiv(r11d) : div(r11d);
  }
  mov(r10, is_div ? rax : rdx);  // 32-bit div already zero-extended both
  if (d != rdx) pop(rdx);
  if (d != rax) pop(rax);
  mov(d, r10);
  jmp_to(done);
  bind(zero);
  if (is_div) {
    xor_(d.cvt32(), d.cvt32());
  } else if (!is64) {
    mov(d.cvt32(), d.cvt32());
  }
  if (is_signed) {
    jmp_to(done);
    bind(minus1);
    if (is_div) {
      is64 ? neg(d) : neg(d.cvt32());
    } else {
      xor_(d.cvt32(), d.cvt32());
    }
  }
  bind(done);
}

void Emitter::emit_end(const Insn& in) {
  const Reg64& d = kReg[in.dst];
  const bool le = in.code == (kClassAlu | kSrcK | kAluEnd);
  if (le) {
    if (in.imm == 16) {
      movzx(d.cvt32(), d.cvt16());
    } else if (in.imm == 32) {
      mov(d.cvt32(), d.cvt32());
    }
    return;
  }
  if (in.imm == 16) {
    rol(d.cvt16(), 8);
    movzx(d.cvt32(), d.cvt16());
  } else if (in.imm == 32) {
    bswap(d.cvt32());
  } else {
    bswap(d);
  }
}

}  // namespace userbpf::vm::jit
