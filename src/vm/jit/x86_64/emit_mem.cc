// The x86-64 code generator: loads, stores, atomics, their region checks,
// probe (exception table) accesses and legacy packet loads.
#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {

RegExp Emitter::checked_addr(size_t pc, int base, int16_t off, int size, bool write, bool atomic) {
  if (base == 10 && off >= -kFrame && off + size <= 0 && (!atomic || off % size == 0)) {
    return rbp + off;  // inside the current frame
  }
  const Lbl slow = new_label();
  const Lbl back = new_label();
  const uint64_t packed = (static_cast<uint64_t>(pc) << 8) | (write ? 1 : 0) | (atomic ? 2 : 0) |
                          (static_cast<uint64_t>(log2_size(size)) << 2);
  const AccessFact fact = atomic ? AccessFact{} : access_[pc];
  switch (fact.kind) {
    case AccessFact::kStack:
    case AccessFact::kValue:
    case AccessFact::kObject:
      return kReg[base] + off;  // proven in bounds (emit_facts.cc)
    case AccessFact::kValueIndexed:
      // Inside the value iff idx <= limit; else the full check, which also
      // finds what else the address may be (it faults if nothing).
      ++checked_accesses_;
      cmp(kReg[fact.idx], fact.limit);
      jcc(Cond::kA, slow);
      bind(back);
      cold_.push_back([this, slow, back, packed, base, off] {
        bind(slow);
        lea(r11, ptr[kReg[base] + off]);
        mov(r10, packed);
        call_to(mem_thunk_);
        jmp_to(back);
      });
      return kReg[base] + off;
    case AccessFact::kChecked:
      break;
  }
  ++checked_accesses_;
  lea(r11, ptr[kReg[base] + off]);
  if (atomic) {
    // Stack chain inline, then the C region logic (alignment included).
    lea(r10, ptr[rbp - kFrame]);
    cmp(r11, r10);
    jcc(Cond::kB, slow);
    cmp(r11, ptr[r12 + kOffTopMinus + 8 * log2_size(size)]);
    jcc(Cond::kA, slow);
    test(r11d, size - 1);
    jcc(Cond::kNz, slow);
    bind(back);
    cold_.push_back([this, slow, back, packed] {
      bind(slow);
      mov(r10, packed);
      call_to(mem_thunk_);
      jmp_to(back);
    });
    return RegExp(r11);
  }
  // The last-hit region inline (packet, context, map values): with
  // e = addr - lo + size, the access fits iff the add does not carry and
  // e <= span (span 0, no region, never fits).
  mov(r10, r11);
  sub(r10, ptr[r12 + kOffHitLo]);
  add(r10, size);
  jcc(Cond::kB, slow);
  cmp(r10, ptr[r12 + kOffHitSpan]);
  jcc(Cond::kA, slow);
  if (write) {
    cmp(byte[r12 + kOffHitWritable], 0);
    jcc(Cond::kEq, slow);
  }
  bind(back);
  cold_.push_back([this, slow, back, packed, size] {
    // The current frame chain [rbp - 512, stack_top - size], then C.
    const Lbl call_c = new_label();
    bind(slow);
    lea(r10, ptr[rbp - kFrame]);
    cmp(r11, r10);
    jcc(Cond::kB, call_c);
    cmp(r11, ptr[r12 + kOffTopMinus + 8 * log2_size(size)]);
    jcc(Cond::kBe, back);
    bind(call_c);
    mov(r10, packed);
    call_to(mem_thunk_);
    jmp_to(back);
  });
  return RegExp(r11);
}

void Emitter::emit_probe_mem(const Insn& in) {
  const uint8_t cls = insn_class(in.code);
  const int size = size_bytes(insn_size(in.code));
  const int base = cls == kClassLdx ? in.src : in.dst;
  mov(r11, probe_base_);
  mov(r10d, kReg[base].cvt32());
  const Address m = ptr[r11 + r10 + in.off];
  const uint32_t start = static_cast<uint32_t>(getSize());
  const Reg64& d = kReg[in.dst];
  const Reg64& s = kReg[in.src];
  int greg = -1;
  if (cls == kClassLdx) {
    greg = kGreg[in.dst];
    const bool sx = insn_mode(in.code) == kModeMemsx;
    switch (size) {
      case 1:
        sx ? movsx(d, byte[m.getRegExp()]) : movzx(d.cvt32(), byte[m.getRegExp()]);
        break;
      case 2:
        sx ? movsx(d, word[m.getRegExp()]) : movzx(d.cvt32(), word[m.getRegExp()]);
        break;
      case 4:
        sx ? movsxd(d, dword[m.getRegExp()]) : mov(d.cvt32(), dword[m.getRegExp()]);
        break;
      default:
        mov(d, qword[m.getRegExp()]);
    }
  } else if (cls == kClassSt) {
    const uint32_t imm = static_cast<uint32_t>(in.imm);
    switch (size) {
      case 1:
        mov(byte[m.getRegExp()], imm & 0xff);
        break;
      case 2:
        mov(word[m.getRegExp()], imm & 0xffff);
        break;
      case 4:
        mov(dword[m.getRegExp()], imm);
        break;
      default:
        mov(qword[m.getRegExp()], static_cast<uint64_t>(static_cast<int64_t>(in.imm)));
    }
  } else {
    switch (size) {
      case 1:
        mov(byte[m.getRegExp()], s.cvt8());
        break;
      case 2:
        mov(word[m.getRegExp()], s.cvt16());
        break;
      case 4:
        mov(dword[m.getRegExp()], s.cvt32());
        break;
      default:
        mov(qword[m.getRegExp()], s);
    }
  }
  extable_.push_back(ExtableEntry{start, static_cast<uint32_t>(getSize()), greg});
}

void Emitter::emit_mem(size_t pc, const Insn& in) {
  if (probe_[pc]) {
    emit_probe_mem(in);
    return;
  }
  const uint8_t cls = insn_class(in.code);
  const int size = size_bytes(insn_size(in.code));
  const Reg64& d = kReg[in.dst];
  const Reg64& s = kReg[in.src];
  // A base whose constant a loop keeps in another register (hoist_): that
  // register, with the proven access's offset.
  const int hoisted = hoist_.empty() ? -1 : hoist_[pc];
  const auto address = [&](int base, bool write) -> RegExp {
    const Reg64& b = hoisted >= 0 ? kReg[hoisted] : kReg[base];
    if (add_folded_into(pc)) return b + kReg[insns_[pc - 1].src] + in.off;
    if (hoisted >= 0) return b + in.off;
    return checked_addr(pc, base, in.off, size, write, false);
  };
  if (cls == kClassLdx) {
    const RegExp a = address(in.src, false);
    const bool sx = insn_mode(in.code) == kModeMemsx;
    switch (size) {
      case 1:
        sx ? movsx(d, byte[a]) : movzx(d.cvt32(), byte[a]);
        return;
      case 2:
        sx ? movsx(d, word[a]) : movzx(d.cvt32(), word[a]);
        return;
      case 4:
        sx ? movsxd(d, dword[a]) : mov(d.cvt32(), dword[a]);
        return;
      default:
        mov(d, qword[a]);
        return;
    }
  }
  const RegExp a = address(in.dst, true);
  if (cls == kClassSt) {
    const uint32_t imm = static_cast<uint32_t>(in.imm);
    switch (size) {
      case 1:
        mov(byte[a], imm & 0xff);
        return;
      case 2:
        mov(word[a], imm & 0xffff);
        return;
      case 4:
        mov(dword[a], imm);
        return;
      default:
        mov(qword[a], static_cast<uint64_t>(static_cast<int64_t>(in.imm)));  // sign-extended
        return;
    }
  }
  switch (size) {
    case 1:
      mov(byte[a], s.cvt8());
      return;
    case 2:
      mov(word[a], s.cvt16());
      return;
    case 4:
      mov(dword[a], s.cvt32());
      return;
    default:
      mov(qword[a], s);
      return;
  }
}

// Atomics with lock-prefixed instructions; fetch forms of or/and/xor use a
// cmpxchg loop (r9, the budget, is parked on the stack meanwhile).
void Emitter::emit_atomic(size_t pc, const Insn& in) {
  const int size = size_bytes(insn_size(in.code));
  const bool is64 = size == 8;
  const RegExp a = checked_addr(pc, in.dst, in.off, size, true, true);
  const Address m = is64 ? qword[a] : dword[a];
  const Reg64& s = kReg[in.src];
  const Reg& S = is64 ? static_cast<const Reg&>(s) : static_cast<const Reg&>(s.cvt32());
  switch (in.imm) {
    case kAtomicAdd:
      lock();
      add(m, S);
      return;
    case kAtomicOr:
      lock();
      or_(m, S);
      return;
    case kAtomicAnd:
      lock();
      and_(m, S);
      return;
    case kAtomicXor:
      lock();
      xor_(m, S);
      return;
    case kAtomicAdd | kAtomicFetch:
      lock();
      xadd(m, S);
      return;
    case kAtomicXchg:
      xchg(m, S);
      return;
    case kAtomicCmpxchg:
      lock();
      cmpxchg(m, S);
      if (!is64) mov(eax, eax);  // r0 = old value, zero-extended either way
      return;
    default:
      break;
  }
  // Fetch or/and/xor: r10 = saved r0, r9 = new value.
  const Reg64 v = s == rax ? r10 : s;
  auto width = [&](const Reg64& r) -> Reg {
    return is64 ? static_cast<const Reg&>(r) : static_cast<const Reg&>(r.cvt32());
  };
  push(r9);
  mov(r10, rax);
  mov(width(rax), m);
  const Lbl retry = new_label();
  bind(retry);
  mov(width(r9), width(rax));
  switch (in.imm & ~kAtomicFetch) {
    case kAtomicOr:
      or_(width(r9), width(v));
      break;
    case kAtomicAnd:
      and_(width(r9), width(v));
      break;
    default:
      xor_(width(r9), width(v));
      break;
  }
  lock();
  cmpxchg(m, width(r9));
  jcc(Cond::kNe, retry);
  if (s != rax) {
    mov(width(s), width(rax));  // 32-bit: zero-extended
    mov(rax, r10);
  } else if (!is64) {
    mov(eax, eax);
  }
  pop(r9);
}

// Legacy packet loads through jit_load_packet (out of range: r0 = 0, stop).
void Emitter::emit_ld_packet(size_t pc, const Insn& in) {
  const int size = size_bytes(insn_size(in.code));
  if (insn_mode(in.code) == kModeAbs) {
    mov(r11, static_cast<uint64_t>(static_cast<int64_t>(in.imm)));
  } else {
    mov(r11, kReg[in.src]);
    add(r11, static_cast<uint32_t>(in.imm));
    movsxd(r11, r11d);
  }
  for (const Reg64& r : {rdi, rsi, rdx, rcx, r8, r9}) push(r);
  mov(rdi, r12);
  mov(rsi, r11);
  mov(edx, static_cast<uint32_t>(size));
  call_abs(reinterpret_cast<const void*>(&jit_load_packet));
  for (const Reg64& r : {r9, r8, rcx, rdx, rsi, rdi}) pop(r);
  cmp(byte[r12 + kOffStop], 0);
  jcc(Cond::kNe, fault_exit_);
  (void)pc;
}

}  // namespace userbpf::vm::jit
