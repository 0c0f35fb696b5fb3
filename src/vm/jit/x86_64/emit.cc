// The x86-64 code generator's driver: one emit case per opcode of the
// interpreter (src/vm/interp.cc), in the same order, through xbyak; the
// entry trampoline, labels, jumps and the image (W^X pages). Design and
// safety rules: emitter.h.
//
// Layout of an image: the C entry trampoline and the fault exits first, then
// every function (prologue at its entry pc), then the cold stubs (slow memory
// checks, budget/depth faults, frame clearing), then the shared memory-check
// thunk. Hot paths fall through; every check jumps forward to a cold stub.
#include <algorithm>
#include <cstring>
#include <memory>

#include <sys/mman.h>
#include <time.h>

#include "vm/jit/x86_64/compile_mem.h"
#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {
namespace {

Cond invert(Cond c) {
  switch (c) {
    case Cond::kEq:
      return Cond::kNe;
    case Cond::kNe:
      return Cond::kEq;
    case Cond::kA:
      return Cond::kBe;
    case Cond::kAe:
      return Cond::kB;
    case Cond::kB:
      return Cond::kAe;
    case Cond::kBe:
      return Cond::kA;
    case Cond::kG:
      return Cond::kLe;
    case Cond::kGe:
      return Cond::kL;
    case Cond::kL:
      return Cond::kGe;
    case Cond::kLe:
      return Cond::kG;
    case Cond::kNz:
      return Cond::kZ;
    case Cond::kZ:
      return Cond::kNz;
  }
  return Cond::kEq;
}

// The x86 condition that takes a BPF conditional jump (after cmp/test).
Cond jump_cond(uint8_t op) {
  switch (op) {
    case kJmpJeq:
      return Cond::kEq;
    case kJmpJne:
      return Cond::kNe;
    case kJmpJgt:
      return Cond::kA;
    case kJmpJge:
      return Cond::kAe;
    case kJmpJlt:
      return Cond::kB;
    case kJmpJle:
      return Cond::kBe;
    case kJmpJsgt:
      return Cond::kG;
    case kJmpJsge:
      return Cond::kGe;
    case kJmpJslt:
      return Cond::kL;
    case kJmpJsle:
      return Cond::kLe;
    default:  // kJmpJset
      return Cond::kNz;
  }
}

}  // namespace

void Emitter::call_abs(const void* fn) {
  mov(rax, reinterpret_cast<uint64_t>(fn));
  call(rax);
}

void Emitter::jcc(Cond c, Lbl l) {
  // Jcc rel32: 0f 80+cc, cc by Cond (kEq, kNe, kA, kAe, kB, kBe, kG, kGe,
  // kL, kLe, kNz, kZ).
  static constexpr uint8_t kCc[] = {0x4, 0x5, 0x7, 0x3, 0x2, 0x6, 0xf, 0xd, 0xc, 0xe, 0x5, 0x4};
  static_assert(sizeof(kCc) == static_cast<size_t>(Cond::kZ) + 1);
  op_rel32(0x0f, 0x80 | kCc[static_cast<size_t>(c)], l);
}

bool Emitter::patch_fixups() {
  for (const Fixup& f : fixups_) {
    const int64_t to = lbl_pos_[f.to];
    if (to < 0) return false;
    const int32_t disp = static_cast<int32_t>(to - static_cast<int64_t>(f.end));
    std::memcpy(buf_ + f.end - 4, &disp, 4);
  }
  return true;
}

// enter(body, state, rbp, args): saves the host's rbp and r12, records the
// entry stack pointer for fault unwinding, and runs the function whose body
// (the code after its prologue) is at body with the BPF registers set as
// run_frames() sets them. The function's own frame saves the host's rbx and
// r13-r15: a stub called from here pushes them exactly as the prologue would
// (so the function's exit restores them and returns here, which the return
// predictor has seen), zeroes r6-r9 and jumps to the body. A fault reloads
// them from that frame, at fixed offsets below the entry stack pointer.
//
// With the may_goto budget in r15 (may_goto_reg_), the host's r15 is saved
// here rather than by the function frames: r15 holds s.may_goto_left from
// entry to exit, frames push it (their layout stays) but exits drop that
// copy instead of restoring it, so the count survives bpf-to-bpf returns;
// it goes back to memory on return and around every call out that may run
// program code (sync_may_goto_out/in). A fault abandons it (the run stops).
void Emitter::emit_entry() {
  const Lbl setup = new_label();
  push(rbp);
  push(r12);
  if (may_goto_reg_) {
    push(r15);
    sub(rsp, 8);
  }
  mov(r12, rsi);
  push(qword[r12 + kOffEntryRsp]);
  mov(ptr[r12 + kOffEntryRsp], rsp);
  mov(rbp, rdx);
  mov(r11, rdi);
  mov(r10, rcx);
  mov(r9, ptr[r12 + kOffBudget]);
  sync_may_goto_in();
  mov(rdi, ptr[r10]);
  mov(rsi, ptr[r10 + 8]);
  mov(rdx, ptr[r10 + 16]);
  mov(rcx, ptr[r10 + 24]);
  mov(r8, ptr[r10 + 32]);
  call_to(setup);
  mov(ptr[r12 + kOffBudget], r9);
  sync_may_goto_out();
  bind(unwind_);
  pop(qword[r12 + kOffEntryRsp]);
  if (may_goto_reg_) {
    add(rsp, 8);
    pop(r15);
  }
  pop(r12);
  pop(rbp);
  ret();
  bind(setup);
  emit_prologue();
  xor_(eax, eax);
  xor_(ebx, ebx);
  xor_(r13d, r13d);
  xor_(r14d, r14d);
  if (!may_goto_reg_) xor_(r15d, r15d);
  jmp(r11);
  // A fault anywhere below this entry: the C caller sees s.stop.
  bind(fault_exit_);
  mov(ptr[r12 + kOffBudget], r9);
  bind(fault_exit_synced_);
  mov(r10, ptr[r12 + kOffEntryRsp]);
  mov(rbx, ptr[r10 - 16]);
  mov(r13, ptr[r10 - 24]);
  mov(r14, ptr[r10 - 32]);
  mov(r15, ptr[r10 - 40]);
  mov(rsp, r10);
  xor_(eax, eax);
  jmp_to(unwind_);
}

// A function's prologue: r6-r9 are the caller's, saved here and restored by
// exit (the interpreter's CallFrame::callee_saved). The extra 8 bytes keep
// rsp 16-byte aligned. emit_entry's fault path knows this layout.
void Emitter::emit_prologue() {
  const size_t start = getSize();
  push(rbx);
  push(r13);
  push(r14);
  push(r15);
  sub(rsp, 8);
  if (getSize() - start != kPrologueBytes) prologue_size_ok_ = false;
}

bool Emitter::find_may_goto_reg() const {
  bool may_goto = false;
  for (size_t pc = 0; pc < n_; ++pc) {
    const Insn& in = insns_[pc];
    // dst and src name registers in every instruction that has them; where
    // src is a pseudo kind (calls, ld_imm64) it is never 9.
    if (in.dst == 9 || in.src == 9) return false;
    if (in.code == (kClassJmp | kJmpJcond)) may_goto = true;
    if (in.code == kLdImm64) ++pc;
  }
  return may_goto;
}

bool Emitter::emit_all() {
  emit_entry();
  size_t func = 0;
  const auto& entries = prog_.func_entries;
  for (size_t pc = 0; pc < n_; ++pc) {
    const bool entry = func < entries.size() && entries[func] == pc;
    if (entry) ++func;
    const int32_t loop = loop_at_.empty() ? -1 : loop_at_[pc];
    if (loop >= 0 && loops_[static_cast<size_t>(loop)].planned()) {
      CountedLoop& l = loops_[static_cast<size_t>(loop)];
      emit_loop_entry(l);
      if (l.reduce) {
        // The whole run, then the body's pcs with no code of their own.
        emit_reduction(l);
        for (; pc <= l.back; ++pc) {
          pc_offset_[pc] = static_cast<uint32_t>(getSize());
          bind(pc_lbl(pc));
        }
        --pc;
        continue;
      }
      if (l.charge != 0) fast_loop_ = loop;
    }
    emit_insn(pc, entry);
    if (fast_loop_ >= 0 && pc == loops_[static_cast<size_t>(fast_loop_)].back) fast_loop_ = -1;
    if (insns_[pc].code == kLdImm64) ++pc;  // second slot: no code
  }
  for (size_t i = 0; i < cold_.size(); ++i) cold_[i]();  // stubs may add stubs

  // The shared slow memory check: r11 = address, r10 = packed access.
  bind(mem_thunk_);
  for (const Reg64& r : {rax, rdi, rsi, rdx, rcx, r8, r9, r11}) push(r);
  sub(rsp, 8);
  mov(ptr[r12 + kOffCurRbp], rbp);
  mov(rdi, r12);
  mov(rsi, r11);
  mov(rdx, r10);
  call_abs(reinterpret_cast<const void*>(&jit_check_access));
  add(rsp, 8);
  mov(r10, rax);
  for (const Reg64& r : {r11, r9, r8, rcx, rdx, rsi, rdi, rax}) pop(r);
  test(r10, r10);
  jcc(Cond::kZ, fault_exit_);
  ret();
  return GetError() == 0 && prologue_size_ok_ && patch_fixups();
}

void Emitter::emit_insn(size_t pc, bool func_entry) {
  const Insn& in = insns_[pc];
  if (copy_loop_ < 0) {  // a loop's second copy has no labels of its own
    pc_offset_[pc] = static_cast<uint32_t>(getSize());
    if (func_entry) {
      bind(func_lbl(pc));
      emit_prologue();
    }
    bind(pc_lbl(pc));
  }
  if (pc == skip_pc_) return;                           // folded into the inlined lookup before it
  if (!folded_add_.empty() && folded_add_[pc]) return;  // into the access after it
  if (!hoist_.empty() && hoist_[pc] >= 0 && in.code == kLdImm64) return;  // set at loop entry

  const uint8_t code = in.code;
  // A pure register write nobody reads (emit_live.cc): no code.
  if (is_pure(pc) && (live_out_[pc] >> in.dst & 1) == 0) return;
  const Reg64& d = kReg[in.dst];
  const Reg64& s = kReg[in.src];
  switch (code) {
    case kExecMovsx64:
      if (in.off == 8) {
        movsx(d, s.cvt8());
      } else if (in.off == 16) {
        movsx(d, s.cvt16());
      } else {
        movsxd(d, s.cvt32());
      }
      return;
    case kExecMovsx32:
      movsx(d.cvt32(), in.off == 8 ? Operand(s.cvt8()) : Operand(s.cvt16()));
      return;
    case kExecAddrSpaceCast:
      if (in.imm == kAddrSpaceCastToKern) {
        mov(d.cvt32(), s.cvt32());
      } else {
        mov(r11d, s.cvt32());
        mov(r10, ptr[r12 + kOffUserBaseHi]);
        shl(r10, 32);
        or_(r10, r11);
        test(r11d, r11d);
        cmovz(r10, r11);
        mov(d, r10);
      }
      return;
    case kLdImm64:
      mov(d, static_cast<uint64_t>(static_cast<uint32_t>(in.imm)) |
                 (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32));
      return;
    case kCall:
    case kCallx:
      emit_call(pc, in);
      return;
    case kExit:
      if (may_goto_reg_) {
        add(rsp, 16);  // the frame's r15 copy is dropped (emit_entry)
      } else {
        add(rsp, 8);
        pop(r15);
      }
      pop(r14);
      pop(r13);
      pop(rbx);
      ret();
      return;
    default:
      break;
  }

  switch (opcode_info(code).kind) {
    case OpKind::kAluBin:
      if (!emit_reassociated(pc)) emit_alu(in);
      return;
    case OpKind::kAluNeg:
      emit_alu(in);
      return;
    case OpKind::kAluEnd:
      emit_end(in);
      return;
    case OpKind::kJa:
    case OpKind::kJmpCond:
    case OpKind::kJcond:
      emit_jmp(pc, in);
      return;
    default:
      break;
  }
  const uint8_t cls = insn_class(code);
  const uint8_t mode = insn_mode(code);
  if (cls == kClassLd && (mode == kModeAbs || mode == kModeInd)) {
    emit_ld_packet(pc, in);
  } else if (cls == kClassStx && mode == kModeAtomic) {
    emit_atomic(pc, in);
  } else if ((cls == kClassLdx && (mode == kModeMem || mode == kModeMemsx)) ||
             ((cls == kClassSt || cls == kClassStx) && mode == kModeMem)) {
    emit_mem(pc, in);
  } else {
    const Lbl stub = new_label();
    jmp_to(stub);
    fault_stub(stub, kFaultInvalid, pc, nullptr);
  }
}

// ---- jumps -------------------------------------------------------------------

// r9 (the budget) -= n or += n; r10 is scratch.
void Emitter::budget_sub(uint64_t n) {
  if (n <= INT32_MAX) {
    sub(r9, static_cast<uint32_t>(n));
  } else {
    mov(r10, n);
    sub(r9, r10);
  }
}

void Emitter::budget_add(uint64_t n) {
  if (n <= INT32_MAX) {
    add(r9, static_cast<uint32_t>(n));
  } else {
    mov(r10, n);
    add(r9, r10);
  }
}

// Budget stubs: r9 < n means the budget is spent; undo the subtraction so
// the budget left is the interpreter's, then fault with ELOOP.
void Emitter::charge_budget(size_t pc, uint64_t n) {
  const Lbl stub = new_label();
  const Lbl back = new_label();
  budget_sub(n);
  jcc(Cond::kB, stub);
  bind(back);
  cold_.push_back([this, stub, n, pc] {
    bind(stub);
    budget_add(n);
    const Lbl f = new_label();
    jmp_to(f);
    fault_stub(f, kFaultBudget, pc, nullptr);
  });
}

// A jump by off from pc, taken when cond holds (always if cond is null).
// Backward jumps charge the budget with their distance, like JUMP_BY.
void Emitter::emit_branch(size_t pc, int64_t off, const Cond* cond) {
  const size_t target = pc + 1 + off;
  if (fast_loop_ >= 0) {
    // A loop charged at entry: its back edge is a plain jump; an exit test
    // before an unconditional back edge goes round on the opposite
    // condition, and the back edge after it is no code.
    const CountedLoop& l = loops_[static_cast<size_t>(fast_loop_)];
    if (pc == l.back && l.test_pc != l.back) return;
    if (pc == l.back) {
      cond ? jcc(*cond, pc_lbl(target)) : jmp_to(pc_lbl(target));
      return;
    }
    if (pc == l.test_pc && cond) {
      jcc(invert(*cond), pc_lbl(l.head));
      if (target != l.back + 1) jmp_to(pc_lbl(target));
      return;
    }
  }
  if (off >= 0) {
    Lbl to = pc_lbl(target);
    for (const CountedLoop& l : loops_) {  // a jump into a planned loop goes to its entry
      if (l.entry_jump == pc && l.planned()) to = l.pre;
    }
    cond ? jcc(*cond, to) : jmp_to(to);
    return;
  }
  // The copy of a loop charged per back edge goes round in itself.
  const Lbl to = copy_loop_ >= 0 && target == loops_[static_cast<size_t>(copy_loop_)].head
                     ? loops_[static_cast<size_t>(copy_loop_)].slow_head
                     : pc_lbl(target);
  // The charge's own carry takes the jump (one branch per iteration, not a
  // test and a jump); a budget that runs out falls through to the fault.
  const Lbl skip = new_label();
  if (cond) jcc(invert(*cond), skip);
  const uint64_t n = static_cast<uint64_t>(-off);
  const Lbl f = new_label();
  budget_sub(n);
  jcc(Cond::kAe, to);
  budget_add(n);
  jmp_to(f);
  fault_stub(f, kFaultBudget, pc, nullptr);
  bind(skip);
}

// A planned loop's entry, before its head: the hoisted constants, then
// the budget of all its back edges, or, if that is more than is left, the
// copy charged per back edge (emitted with the cold stubs).
void Emitter::emit_loop_entry(CountedLoop& l) {
  bind(l.pre);
  for (int h = 0; h < l.num_hoists; ++h) mov(kReg[l.hoist_reg[h]], l.hoist_k[h]);
  if (l.charge == 0) return;
  const Lbl short_budget = new_label();
  const uint64_t n = l.charge;
  budget_sub(n);
  jcc(Cond::kB, short_budget);
  const int32_t loop = static_cast<int32_t>(&l - loops_.data());
  cold_.push_back([this, short_budget, n, loop] {
    bind(short_budget);
    budget_add(n);
    emit_loop_copy(loop);  // the last use of the captures (it adds stubs)
  });
}

// A reduction's run (find_reduction): blocks of 64 bytes (AVX2: 4-byte
// elements zero-extended by vpmovzxdq, bytes summed by vpsadbw, into four
// accumulators of 64-bit lanes) or 32 bytes (SSE2: zero-extended by
// unpacking with zero), the rest one by one, then rA +/-= the sum (and
// += trips * k), rT = the
// last element if read later, rI = its last value. Scratch: r10, r11,
// xmm/ymm0-7, and rI's register until its value is set (rA is none of
// them).
void Emitter::emit_reduction(const CountedLoop& l) {
  const uint64_t bytes = l.trips * l.red_size;
  const uint64_t block = avx2_ ? 64 : 32;
  const uint64_t vec_bytes = bytes / block * block;
  const Reg64& acc = kReg[l.red_acc];
  auto add_acc = [&](const Reg64& r) {
    if (l.red_sub) {
      l.red_acc32 ? sub(acc.cvt32(), r.cvt32()) : sub(acc, r);
    } else {
      l.red_acc32 ? add(acc.cvt32(), r.cvt32()) : add(acc, r);
    }
  };
  mov(r11, l.red_start);
  if (vec_bytes != 0) {
    const Reg64& end = kReg[l.reg];
    mov(end, l.red_start + vec_bytes);
    const Lbl top = new_label();
    if (avx2_) {
      for (const Ymm& y : {ymm0, ymm1, ymm2, ymm3, ymm7}) vpxor(y, y, y);
      bind(top);
      const Ymm acc_y[] = {ymm0, ymm1, ymm2, ymm3};
      const Ymm in_y[] = {ymm4, ymm5, ymm6, ymm4};
      for (int i = 0; i < 4; ++i) {
        if (l.red_size == 4) {  // 16 bytes -> four 64-bit lanes
          vpmovzxdq(in_y[i], ptr[r11 + 16 * i]);
          vpaddq(acc_y[i], acc_y[i], in_y[i]);
        } else if (i < 2) {  // 32 bytes at a time
          if (l.red_size == 8) {
            vpaddq(acc_y[i], acc_y[i], ptr[r11 + 32 * i]);
          } else {
            vmovdqu(in_y[i], ptr[r11 + 32 * i]);
            vpsadbw(in_y[i], in_y[i], ymm7);
            vpaddq(acc_y[i], acc_y[i], in_y[i]);
          }
        }
      }
      add(r11, 64);
      cmp(r11, end);
      jcc(Cond::kNe, top);
      vpaddq(ymm0, ymm0, ymm1);
      vpaddq(ymm2, ymm2, ymm3);
      vpaddq(ymm0, ymm0, ymm2);
      vextracti128(xmm1, ymm0, 1);
      vpaddq(xmm0, xmm0, xmm1);
      vzeroupper();
    } else {
      for (const Xmm& x : {xmm0, xmm1, xmm2, xmm3, xmm7}) pxor(x, x);
      bind(top);
      for (int half = 0; half < 2; ++half) {
        const Xmm& a = half == 0 ? xmm4 : xmm5;
        const Xmm& lo = half == 0 ? xmm0 : xmm2;
        const Xmm& hi = half == 0 ? xmm1 : xmm3;
        movdqu(a, ptr[r11 + 16 * half]);
        if (l.red_size == 8) {
          paddq(lo, a);
        } else if (l.red_size == 1) {
          psadbw(a, xmm7);
          paddq(lo, a);
        } else {
          movdqa(xmm6, a);
          punpckldq(a, xmm7);
          punpckhdq(xmm6, xmm7);
          paddq(lo, a);
          paddq(hi, xmm6);
        }
      }
      add(r11, 32);
      cmp(r11, end);
      jcc(Cond::kNe, top);
      paddq(xmm0, xmm1);
      paddq(xmm2, xmm3);
      paddq(xmm0, xmm2);
    }
    pshufd(xmm1, xmm0, 0xee);
    paddq(xmm0, xmm1);
    movq(r10, xmm0);
    add_acc(r10);
  }
  for (uint64_t off = 0; vec_bytes + off < bytes; off += l.red_size) {
    const int32_t d = static_cast<int32_t>(off);
    if (l.red_size == 1) {
      movzx(r10d, byte[r11 + d]);
    } else if (l.red_size == 4) {
      mov(r10d, dword[r11 + d]);
    } else {
      mov(r10, qword[r11 + d]);
    }
    add_acc(r10);
  }
  if (l.red_per_trip != 0) {
    mov(r10, l.red_per_trip * l.trips);
    l.red_acc32 ? add(acc.cvt32(), r10d) : add(acc, r10);
  }
  if (l.red_tmp_live) {
    const Reg64& t = kReg[l.red_tmp];
    mov(r11, l.red_start + bytes - l.red_size);
    if (l.red_size == 1) {
      movzx(t.cvt32(), byte[r11]);
    } else if (l.red_size == 4) {
      mov(t.cvt32(), dword[r11]);
    } else {
      mov(t, qword[r11]);
    }
  }
  const uint64_t last = l.init + l.trips * l.step;
  l.add32 ? mov(kReg[l.reg].cvt32(), static_cast<uint32_t>(last)) : mov(kReg[l.reg], last);
  if (l.red_exit != l.back + 1) jmp_to(pc_lbl(l.red_exit));
}

void Emitter::emit_loop_copy(int32_t loop) {
  const CountedLoop& l = loops_[static_cast<size_t>(loop)];
  copy_loop_ = loop;
  bind(l.slow_head);
  for (size_t pc = l.head; pc <= l.back; ++pc) {
    emit_insn(pc, false);
    if (insns_[pc].code == kLdImm64) ++pc;
  }
  jmp_to(pc_lbl(l.back + 1));  // out, where a conditional back edge falls through
  copy_loop_ = -1;
}

void Emitter::emit_jmp(size_t pc, const Insn& in) {
  if (in.code == (kClassJmp | kJmpJa)) {
    emit_branch(pc, in.off, nullptr);
    return;
  }
  if (in.code == (kClassJmp32 | kJmpJa)) {
    emit_branch(pc, in.imm, nullptr);
    return;
  }
  if (in.code == (kClassJmp | kJmpJcond)) {
    // may_goto: falls through while the run's loop budget lasts. One
    // decrement whose borrow (the budget was 0) goes to a cold stub that
    // puts the 0 back and jumps.
    const Lbl spent = new_label();
    if (may_goto_reg_) {
      sub(r15, 1);
    } else {
      sub(qword[r12 + kOffMayGoto], 1);
    }
    jcc(Cond::kB, spent);
    const int64_t off = in.off;
    cold_.push_back([this, spent, pc, off] {
      bind(spent);
      if (may_goto_reg_) {
        add(r15, 1);
      } else {
        add(qword[r12 + kOffMayGoto], 1);
      }
      emit_branch(pc, off, nullptr);  // the last use of the captures
    });
    return;
  }
  const bool is64 = insn_class(in.code) == kClassJmp;
  const uint8_t op = insn_op(in.code);
  const Reg64& d = kReg[in.dst];
  const Reg& D = is64 ? static_cast<const Reg&>(d) : static_cast<const Reg&>(d.cvt32());
  if (insn_src(in.code) == kSrcX) {
    const Reg64& s = kReg[in.src];
    const Reg& S = is64 ? static_cast<const Reg&>(s) : static_cast<const Reg&>(s.cvt32());
    op == kJmpJset ? test(D, S) : cmp(D, S);
  } else {
    const uint32_t imm = static_cast<uint32_t>(in.imm);
    op == kJmpJset ? test(D, imm) : cmp(D, imm);
  }
  const Cond c = jump_cond(op);
  emit_branch(pc, in.off, &c);
}

// ---- calls -------------------------------------------------------------------

void Emitter::fault_stub(Lbl at, uint32_t kind, size_t pc, const Reg64* value) {
  const Reg64* v = value;
  cold_.push_back([this, at, kind, pc, v] {
    bind(at);
    if (v) mov(r11, *v);
    mov(ptr[r12 + kOffBudget], r9);
    mov(rdi, r12);
    mov(esi, kind);
    mov(edx, static_cast<uint32_t>(pc));
    if (v) {
      mov(rcx, r11);
    } else {
      xor_(ecx, ecx);
    }
    call_abs(reinterpret_cast<const void*>(&jit_fault));
    jmp_to(fault_exit_synced_);
  });
}

Result<JitImage*> compile_x86_64(const Program& prog, const JitOptions& opts) {
  const size_t n = prog.exec_insns.size();
  CompileArena& arena = CompileArena::for_compiles();
  // On the way out (after the emitter): what a large compile took goes back.
  struct Release {
    CompileArena& a;
    ~Release() { a.release_large(); }
  } release{arena};
  size_t cap = 4096 + n * 96;
  for (int attempt = 0; attempt < 4; ++attempt, cap *= 2) {
    arena.reset();
    uint8_t* buf = static_cast<uint8_t*>(arena.allocate(cap, 64));
    ClearError();
    Emitter e(cap, buf, prog, opts, &arena);
    if (!e.emit_all()) {
      if (GetError() == ERR_CODE_IS_TOO_BIG) continue;
      return make_error(EINVAL, "program '%s': JIT failed: %s", prog.name.c_str(),
                        GetError() != 0 ? ConvertErrorToString(GetError()) : "unbound label");
    }
    const size_t size = e.getSize();
    size_t map_size = 0;
    void* p = CodePages::take((size + 4095) & ~size_t{4095}, &map_size);
    if (p == nullptr) return make_error(ENOMEM, "cannot map %zu bytes of JIT code", size);
    std::memcpy(p, buf, size);
    // The rest (a kept mapping holds an earlier image's code): int3.
    std::memset(static_cast<uint8_t*>(p) + size, 0xcc, map_size - size);
    // W^X: the pages are never writable and executable at once.
    if (mprotect(p, map_size, PROT_READ | PROT_EXEC) != 0) {
      const int err = errno;
      munmap(p, map_size);
      return make_error(err, "cannot make JIT code executable");
    }
    auto img = std::make_unique<JitImage>();
    img->code = static_cast<uint8_t*>(p);
    img->map_size = map_size;
    img->code_size = size;
    img->enter = reinterpret_cast<EnterFn>(p);
    img->pc_offset = e.take_pc_offset();
    img->extable = e.take_extable();
    std::sort(img->extable.begin(), img->extable.end(),
              [](const ExtableEntry& a, const ExtableEntry& b) { return a.start < b.start; });
    if (!img->extable.empty()) {
      img->extable_slot = register_extable(img.get());
      if (img->extable_slot < 0) {
        return make_error(ENOSPC, "program '%s': too many JIT images with probe accesses",
                          prog.name.c_str());
      }
    }
    img->writes_memory = may_write_memory(prog);
    img->keeps_state = e.run_keeps_state();
    img->checked_accesses = e.checked_accesses();
    img->loop_stats = e.loop_stats();
    return img.release();
  }
  return make_error(E2BIG, "program '%s': JIT code too large", prog.name.c_str());
}

}  // namespace userbpf::vm::jit
