// The x86-64 code generator: one emit case per opcode of the interpreter
// (src/vm/interp.cc), in the same order, through xbyak.
//
// Layout of an image: the C entry trampoline and the fault exits first, then
// every function (prologue at its entry pc), then the cold stubs (slow memory
// checks, budget/depth faults, frame clearing), then the shared memory-check
// thunk. Hot paths fall through; every check jumps forward to a cold stub.
//
// Memory safety at speed (the interpreter's promise: a bad access stops the
// run with an error naming pc and address, the host never faults):
//   - r10 + constant offset inside the current frame: no check (the frame is
//     always mapped and belongs to the run).
//   - any other access: inline check against the last-hit region cache
//     (InterpState::hit: packet, context, map values); on a miss the cold
//     stub checks the current frame chain [rbp - 512, stack_top - size], then
//     calls the interpreter's region logic (check_mem_slow via
//     jit_check_access). Atomics check the frame chain inline, then C.
//   - helper pointer arguments: check_helper_args before every call whose
//     proto has pointer arguments, except map helpers whose r1 is a constant
//     map of the program and whose key/value pointers lie in the frame chain
//     (checked inline); returned map values and memory become regions
//     (grant_return), exactly as in the interpreter.
//   - bpf_map_lookup_elem of a constant map with MapOps::gen_lookup (arrays)
//     is inlined: bounds check, address, the same grant and cache updates.
//   - runaway loops: the budget (in r9) is charged on backward jumps with the
//     jump distance and on calls.
//   - probe (PROBE_MEM32) accesses are unchecked and covered by the exception
//     table instead (extable.cc).
#define XBYAK_NO_EXCEPTION
#include <xbyak/xbyak.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>

#include <sys/mman.h>
#include <sys/ucontext.h>
#include <time.h>

#include "isa/opcodes.h"
#include "vm/jit/x86_64/jit_internal.h"

namespace userbpf::vm::jit {
namespace {

using namespace Xbyak;
using namespace Xbyak::util;
using isa::Insn;
using namespace isa;  // opcode constants

constexpr int32_t kFrame = kStackSize;

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winvalid-offsetof"
constexpr int32_t kOffBudget = offsetof(JitState, s) + offsetof(interp::InterpState, budget);
constexpr int32_t kOffMayGoto =
    offsetof(JitState, s) + offsetof(interp::InterpState, may_goto_left);
constexpr int32_t kOffUserBaseHi =
    offsetof(JitState, s) + offsetof(interp::InterpState, user_base_hi);
constexpr int32_t kOffCallPc = offsetof(JitState, s) + offsetof(interp::InterpState, call_pc);
constexpr int32_t kOffHitLo =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, lo);
constexpr int32_t kOffHitSpan =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, span);
constexpr int32_t kOffHitWritable =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, writable);
constexpr int32_t kOffStackTop = offsetof(JitState, s) + offsetof(interp::InterpState, stack_top);
constexpr int32_t kOffGrants = offsetof(JitState, s) + offsetof(interp::InterpState, grants);
constexpr int32_t kOffNumGrants = offsetof(JitState, s) + offsetof(interp::InterpState, num_grants);
constexpr int32_t kOffStop = offsetof(JitState, s) + offsetof(interp::InterpState, stop);
constexpr int32_t kOffTopMinus = offsetof(JitState, top_minus);
constexpr int32_t kOffFrameLimit = offsetof(JitState, frame_limit);
constexpr int32_t kOffZeroedLo = offsetof(JitState, zeroed_lo);
constexpr int32_t kOffEntryRsp = offsetof(JitState, entry_rsp);
constexpr int32_t kOffCurRbp = offsetof(JitState, cur_rbp);
#pragma clang diagnostic pop
static_assert(sizeof(interp::Stop) == 1);
static_assert(sizeof(interp::InterpState::num_grants) == 4);
static_assert(sizeof(std::atomic<bool>) == 1);
static_assert((interp::kMaxGrants & (interp::kMaxGrants - 1)) == 0);
constexpr int32_t kRegionSize = sizeof(interp::Region);
constexpr int32_t kRegionSpan = offsetof(interp::Region, span);
constexpr int32_t kRegionWritable = offsetof(interp::Region, writable);

// bpf_map_lookup_elem's helper id.
constexpr int32_t kHelperMapLookupElem = 1;

// BPF register -> x86 register, and -> mcontext gregs index (exception table).
const Reg64 kReg[kNumRegs] = {rax, rdi, rsi, rdx, rcx, r8, rbx, r13, r14, r15, rbp};
constexpr int kGreg[kNumRegs] = {REG_RAX, REG_RDI, REG_RSI, REG_RDX, REG_RCX, REG_R8,
                                 REG_RBX, REG_R13, REG_R14, REG_R15, REG_RBP};

enum class Cond { kEq, kNe, kA, kAe, kB, kBe, kG, kGe, kL, kLe, kNz, kZ };

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

int log2_size(int bytes) {
  return bytes == 1 ? 0 : bytes == 2 ? 1 : bytes == 4 ? 2 : 3;
}

bool has_pointer_args(const HelperProto& p) {
  for (ArgKind k : p.args) {
    if (k != ArgKind::kNone && k != ArgKind::kAnything && k != ArgKind::kConstSize &&
        k != ArgKind::kConstSizeOrZero) {
      return true;
    }
  }
  return false;
}

// A code label: an index into Emitter::lbl_pos_.
using Lbl = uint32_t;

class Emitter : public CodeGenerator {
 public:
  Emitter(size_t cap, void* buf, const Program& prog, const JitOptions& opts)
      : CodeGenerator(cap, buf),
        prog_(prog),
        insns_(prog.exec_insns.data()),
        n_(prog.exec_insns.size()),
        buf_(static_cast<uint8_t*>(buf)),
        lbl_pos_(2 * n_, -1),
        pc_offset_(n_, UINT32_MAX),
        probe_(n_, false),
        probe_base_(opts.probe_base) {
    for (uint32_t pc : opts.probe_pcs) {
      if (pc < n_) probe_[pc] = true;
    }
    fixups_.reserve(n_ * 2);
    lbl_pos_.reserve(n_ * 4);
    unwind_ = new_label();
    fault_exit_ = new_label();
    fault_exit_synced_ = new_label();
    mem_thunk_ = new_label();
    find_const_r1_maps();
  }

  // Emits the whole image; false if xbyak reported an error (buffer too small).
  bool emit_all();

  std::vector<uint32_t> take_pc_offset() { return std::move(pc_offset_); }
  std::vector<ExtableEntry> take_extable() { return std::move(extable_); }

 private:
  void emit_entry();
  void emit_insn(size_t pc, bool func_entry);
  void emit_alu(const Insn& in);
  void emit_shift(const Insn& in, bool is64);
  void emit_divmod(const Insn& in, bool is64, bool is_div);
  void emit_end(const Insn& in);
  void emit_jmp(size_t pc, const Insn& in);
  void emit_branch(size_t pc, int64_t off, const Cond* cond);
  void charge_budget(size_t pc, uint64_t n);
  void emit_call(size_t pc, const Insn& in);
  void emit_frame_push(size_t pc);
  void emit_helper_call(size_t pc, const HelperProto& proto);
  bool emit_inline_lookup(size_t pc, const HelperProto& proto);
  void emit_add_grant(uint32_t span);
  void emit_known_map_grant(const maps::Map* m);
  void find_const_r1_maps();
  void emit_mem(size_t pc, const Insn& in);
  void emit_probe_mem(const Insn& in);
  void emit_atomic(size_t pc, const Insn& in);
  void emit_ld_packet(size_t pc, const Insn& in);
  // Checks [base + off, +size) and returns the operand to access it through.
  RegExp checked_addr(size_t pc, int base, int16_t off, int size, bool write, bool atomic);
  void fault_stub(Lbl at, uint32_t kind, size_t pc, const Reg64* value);
  void call_abs(const void* fn);
  // Labels are indexes: pc labels [0, n), function entry labels [n, 2n),
  // then the rest. xbyak's Label keeps hash tables per label, which cost
  // more than the rest of a compile; ours are an offset array and a list of
  // rel32 fixups patched once at the end.
  Lbl new_label() {
    lbl_pos_.push_back(-1);
    return static_cast<Lbl>(lbl_pos_.size() - 1);
  }
  Lbl pc_lbl(size_t pc) const { return static_cast<Lbl>(pc); }
  Lbl func_lbl(size_t pc) const { return static_cast<Lbl>(n_ + pc); }
  void bind(Lbl l) { lbl_pos_[l] = static_cast<int64_t>(getSize()); }
  void rel32_to(Lbl l) {
    dd(0);
    fixups_.push_back(Fixup{static_cast<uint32_t>(getSize()), l});
  }
  void jcc(Cond c, Lbl l);
  void jmp_to(Lbl l) {
    db(0xe9);
    rel32_to(l);
  }
  void call_to(Lbl l) {
    db(0xe8);
    rel32_to(l);
  }
  bool patch_fixups();

  const Program& prog_;
  const Insn* insns_;
  size_t n_;
  uint8_t* buf_;
  // Label offsets (-1: not bound). The pc label is after any prologue (jump
  // targets), the function label at the prologue (call targets).
  std::vector<int64_t> lbl_pos_;
  struct Fixup {
    uint32_t end;  // code offset just after the rel32 field
    Lbl to;
  };
  std::vector<Fixup> fixups_;
  std::vector<std::function<void()>> cold_;
  std::vector<uint32_t> pc_offset_;
  std::vector<bool> probe_;
  std::vector<const maps::Map*> r1_map_;  // per call pc: the map r1 surely holds, or null
  uint64_t probe_base_;
  std::vector<ExtableEntry> extable_;
  Lbl unwind_, fault_exit_, fault_exit_synced_, mem_thunk_;
};

void Emitter::call_abs(const void* fn) {
  mov(rax, reinterpret_cast<uint64_t>(fn));
  call(rax);
}

void Emitter::jcc(Cond c, Lbl l) {
  // Jcc rel32: 0f 80+cc.
  uint8_t cc = 0;
  switch (c) {
    case Cond::kEq:
    case Cond::kZ:
      cc = 0x4;
      break;
    case Cond::kNe:
    case Cond::kNz:
      cc = 0x5;
      break;
    case Cond::kA:
      cc = 0x7;
      break;
    case Cond::kAe:
      cc = 0x3;
      break;
    case Cond::kB:
      cc = 0x2;
      break;
    case Cond::kBe:
      cc = 0x6;
      break;
    case Cond::kG:
      cc = 0xf;
      break;
    case Cond::kGe:
      cc = 0xd;
      break;
    case Cond::kL:
      cc = 0xc;
      break;
    case Cond::kLe:
      cc = 0xe;
      break;
  }
  db(0x0f);
  db(0x80 | cc);
  rel32_to(l);
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

// enter(target, state, rbp, args): saves the host's callee-saved registers,
// records the entry stack pointer for fault unwinding, and calls target with
// the BPF registers set as run_frames() sets them.
void Emitter::emit_entry() {
  push(rbx);
  push(rbp);
  push(r12);
  push(r13);
  push(r14);
  push(r15);
  mov(r12, rsi);
  push(qword[r12 + kOffEntryRsp]);
  mov(ptr[r12 + kOffEntryRsp], rsp);
  mov(rbp, rdx);
  mov(r11, rdi);
  mov(r10, rcx);
  mov(r9, ptr[r12 + kOffBudget]);
  mov(rdi, ptr[r10]);
  mov(rsi, ptr[r10 + 8]);
  mov(rdx, ptr[r10 + 16]);
  mov(rcx, ptr[r10 + 24]);
  mov(r8, ptr[r10 + 32]);
  xor_(eax, eax);
  xor_(ebx, ebx);
  xor_(r13d, r13d);
  xor_(r14d, r14d);
  xor_(r15d, r15d);
  call(r11);
  mov(ptr[r12 + kOffBudget], r9);
  bind(unwind_);
  pop(qword[r12 + kOffEntryRsp]);
  pop(r15);
  pop(r14);
  pop(r13);
  pop(r12);
  pop(rbp);
  pop(rbx);
  ret();
  // A fault anywhere below this entry: the C caller sees s.stop.
  bind(fault_exit_);
  mov(ptr[r12 + kOffBudget], r9);
  bind(fault_exit_synced_);
  mov(rsp, ptr[r12 + kOffEntryRsp]);
  xor_(eax, eax);
  jmp_to(unwind_);
}

bool Emitter::emit_all() {
  emit_entry();
  size_t func = 0;
  const auto& entries = prog_.func_entries;
  for (size_t pc = 0; pc < n_; ++pc) {
    const bool entry = func < entries.size() && entries[func] == pc;
    if (entry) ++func;
    emit_insn(pc, entry);
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
  return GetError() == 0 && patch_fixups();
}

void Emitter::emit_insn(size_t pc, bool func_entry) {
  const Insn& in = insns_[pc];
  pc_offset_[pc] = static_cast<uint32_t>(getSize());
  if (func_entry) {
    // r6-r9 are the caller's: saved here, restored by exit (the interpreter's
    // CallFrame::callee_saved). The extra 8 bytes keep rsp 16-byte aligned.
    bind(func_lbl(pc));
    push(rbx);
    push(r13);
    push(r14);
    push(r15);
    sub(rsp, 8);
  }
  bind(pc_lbl(pc));

  const uint8_t code = in.code;
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
      add(rsp, 8);
      pop(r15);
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

// ---- ALU ---------------------------------------------------------------------

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

// ---- jumps -------------------------------------------------------------------

// Budget stubs: r9 < n means the budget is spent; undo the subtraction so
// the budget left is the interpreter's, then fault with ELOOP.
void Emitter::charge_budget(size_t pc, uint64_t n) {
  const Lbl stub = new_label();
  const Lbl back = new_label();
  if (n <= INT32_MAX) {
    sub(r9, static_cast<uint32_t>(n));
  } else {
    mov(r10, n);
    sub(r9, r10);
  }
  jcc(Cond::kB, stub);
  bind(back);
  cold_.push_back([this, stub, n, pc] {
    bind(stub);
    if (n <= INT32_MAX) {
      add(r9, static_cast<uint32_t>(n));
    } else {
      mov(r10, n);
      add(r9, r10);
    }
    const Lbl f = new_label();
    jmp_to(f);
    fault_stub(f, kFaultBudget, pc, nullptr);
  });
}

// A jump by off from pc, taken when cond holds (always if cond is null).
// Backward jumps charge the budget with their distance, like JUMP_BY.
void Emitter::emit_branch(size_t pc, int64_t off, const Cond* cond) {
  const size_t target = pc + 1 + off;
  if (off >= 0) {
    cond ? jcc(*cond, pc_lbl(target)) : jmp_to(pc_lbl(target));
    return;
  }
  const Lbl skip = new_label();
  if (cond) jcc(invert(*cond), skip);
  charge_budget(pc, static_cast<uint64_t>(-off));
  jmp_to(pc_lbl(target));
  bind(skip);
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
    // may_goto: falls through while the run's loop budget lasts.
    const Lbl cont = new_label();
    cmp(qword[r12 + kOffMayGoto], 0);
    jcc(Cond::kNe, cont);
    emit_branch(pc, in.off, nullptr);
    bind(cont);
    dec(qword[r12 + kOffMayGoto]);
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

// Depth limit, first-use clearing of the new frame, budget: the checks of
// the interpreter's push_frame. The target is called with rbp lowered by a frame.
void Emitter::emit_frame_push(size_t pc) {
  const Lbl deep = new_label();
  cmp(rbp, ptr[r12 + kOffFrameLimit]);
  jcc(Cond::kB, deep);
  fault_stub(deep, kFaultDepth, pc, nullptr);
  const Lbl clear = new_label();
  const Lbl cleared = new_label();
  lea(r10, ptr[rbp - 2 * kFrame]);
  cmp(r10, ptr[r12 + kOffZeroedLo]);
  jcc(Cond::kB, clear);
  bind(cleared);
  cold_.push_back([this, clear, cleared] {
    bind(clear);
    push(rax);
    push(rdi);
    push(rcx);
    mov(ptr[r12 + kOffZeroedLo], r10);
    mov(rdi, r10);
    xor_(eax, eax);
    mov(ecx, kFrame / 8);
    rep();
    stosq();
    pop(rcx);
    pop(rdi);
    pop(rax);
    jmp_to(cleared);
  });
  charge_budget(pc, 1);
}

void Emitter::emit_call(size_t pc, const Insn& in) {
  if (in.code == kCallx) {
    // The value must name a function of this program (is_callback_value).
    for (const Reg64& r : {rax, rdi, rsi, rdx, rcx, r8, r9}) push(r);
    sub(rsp, 8);
    mov(rsi, kReg[in.dst]);
    mov(rdi, r12);
    mov(edx, static_cast<uint32_t>(pc));
    mov(ptr[r12 + kOffBudget], r9);
    call_abs(reinterpret_cast<const void*>(&jit_callx_target));
    mov(r11, rax);
    add(rsp, 8);
    for (const Reg64& r : {r9, r8, rcx, rdx, rsi, rdi, rax}) pop(r);
    test(r11, r11);
    jcc(Cond::kZ, fault_exit_synced_);
    emit_frame_push(pc);
    sub(rbp, kFrame);
    call(r11);
    add(rbp, kFrame);
    return;
  }
  if (in.src == kPseudoCall) {
    emit_frame_push(pc);
    sub(rbp, kFrame);
    call_to(func_lbl(pc + 1 + in.imm));
    add(rbp, kFrame);
    return;
  }
  const HelperProto& proto =
      in.src == kPseudoCallHelper ? *prog_.helpers[in.imm] : *prog_.kfuncs[in.imm];
  if (in.src == kPseudoCallHelper && in.imm == kHelperMapLookupElem &&
      emit_inline_lookup(pc, proto)) {
    return;
  }
  emit_helper_call(pc, proto);
}

// A helper or kfunc: a direct call to proto.fn, with the interpreter's
// argument checks before and region grants after.
void Emitter::emit_helper_call(size_t pc, const HelperProto& proto) {
  const bool check = has_pointer_args(proto);
  const bool grant = proto.ret == RetKind::kMemOrNull || proto.ret == RetKind::kMapValueOrNull;
  mov(ptr[r12 + kOffBudget], r9);
  mov(ptr[r12 + kOffCurRbp], rbp);
  mov(r10, reinterpret_cast<uint64_t>(insns_ + pc));
  mov(ptr[r12 + kOffCallPc], r10);
  const bool save = check || grant;
  if (save) {
    // regs[0..5] = r0..r5 at [rsp]; 48 bytes keep the alignment.
    for (const Reg64& r : {r8, rcx, rdx, rsi, rdi, rax}) push(r);
  }
  // Map helpers with a constant map of this program in r1 and their key and
  // value pointers inside the current frame chain pass check_helper_args
  // for sure: checked here, the C check only runs otherwise.
  const maps::Map* map = r1_map_[pc];
  bool fast = check && map != nullptr && proto.args[0] == ArgKind::kConstMapPtr;
  for (int i = 1; fast && i < 5; ++i) {
    const ArgKind k = proto.args[i];
    const uint32_t size = k == ArgKind::kMapKey     ? map->attr.key_size
                          : k == ArgKind::kMapValue ? map->attr.value_size
                                                    : 0;
    fast = k == ArgKind::kNone || k == ArgKind::kAnything ||
           ((k == ArgKind::kMapKey || k == ArgKind::kMapValue) && size <= kFrame);
  }
  const Lbl checked = new_label();
  if (fast) {
    const Lbl c_check = new_label();
    lea(r10, ptr[rbp - kFrame]);
    for (int i = 1; i < 5; ++i) {
      const ArgKind k = proto.args[i];
      if (k != ArgKind::kMapKey && k != ArgKind::kMapValue) continue;
      const uint32_t size = k == ArgKind::kMapKey ? map->attr.key_size : map->attr.value_size;
      if (size == 0) continue;
      mov(r11, ptr[r12 + kOffStackTop]);
      sub(r11, size);
      cmp(kReg[i + 1], r10);
      jcc(Cond::kB, c_check);
      cmp(kReg[i + 1], r11);
      jcc(Cond::kA, c_check);
    }
    jmp_to(checked);
    bind(c_check);
  }
  if (check) {
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(&proto));
    mov(rdx, rsp);
    call_abs(reinterpret_cast<const void*>(&jit_check_helper));
    test(rax, rax);
    jcc(Cond::kZ, fault_exit_synced_);
    mov(rax, ptr[rsp]);
    mov(rdi, ptr[rsp + 8]);
    mov(rsi, ptr[rsp + 16]);
    mov(rdx, ptr[rsp + 24]);
    mov(rcx, ptr[rsp + 32]);
    mov(r8, ptr[rsp + 40]);
  }
  bind(checked);
  call_abs(reinterpret_cast<const void*>(proto.fn));
  // The helper may have moved the packet: forget the cached region.
  mov(qword[r12 + kOffHitSpan], 0);
  // The map of a map-value return, when r1 is a known map and the only map
  // argument (grant_return's search would find it): granted inline, without
  // the search.
  bool known_map_grant = grant && proto.ret == RetKind::kMapValueOrNull && map != nullptr &&
                         proto.args[0] == ArgKind::kConstMapPtr;
  for (int i = 1; known_map_grant && i < 5; ++i) {
    if (proto.args[i] == ArgKind::kConstMapPtr) known_map_grant = false;
  }
  if (known_map_grant) {
    emit_known_map_grant(map);
  } else if (grant) {
    mov(ptr[rsp], rax);
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(&proto));
    lea(rdx, ptr[rsp + 8]);
    mov(rcx, rax);
    call_abs(reinterpret_cast<const void*>(&jit_grant_return));
    mov(rax, ptr[rsp]);
  }
  if (save) add(rsp, 48);
  mov(r9, ptr[r12 + kOffBudget]);
  cmp(byte[r12 + kOffStop], 0);
  jcc(Cond::kNe, fault_exit_synced_);
  mov(rdi, interp::kClobberedReg);
  mov(rsi, rdi);
  mov(rdx, rdi);
  mov(rcx, rdi);
  mov(r8, rdi);
}

// For each helper call, the map r1 holds if it was loaded by an ld_imm64 of a
// map of this program earlier in the same straight-line run of code (no jump
// target, function entry or other write of r1 in between).
void Emitter::find_const_r1_maps() {
  r1_map_.assign(n_, nullptr);
  std::vector<bool> target(n_, false);
  for (uint32_t e : prog_.func_entries) {
    if (e < n_) target[e] = true;
  }
  for (size_t pc = 0; pc < n_; ++pc) {
    const Insn& in = insns_[pc];
    const uint8_t cls = insn_class(in.code);
    if (in.code == kLdImm64) {
      ++pc;
      continue;
    }
    if ((cls != kClassJmp && cls != kClassJmp32) || in.code == kCall || in.code == kCallx ||
        in.code == kExit) {
      continue;
    }
    const int64_t off = in.code == (kClassJmp32 | kJmpJa) ? in.imm : in.off;
    const int64_t t = static_cast<int64_t>(pc) + 1 + off;
    if (t >= 0 && static_cast<size_t>(t) < n_) target[t] = true;
  }
  const maps::Map* known = nullptr;
  for (size_t pc = 0; pc < n_; ++pc) {
    const Insn& in = insns_[pc];
    if (target[pc]) known = nullptr;
    if (in.code == kLdImm64) {
      known = nullptr;
      if (in.dst == 1 && pc + 1 < n_) {
        const uint64_t v = static_cast<uint64_t>(static_cast<uint32_t>(in.imm)) |
                           (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32);
        for (const maps::Map* m : prog_.maps) {
          if (m != nullptr && reinterpret_cast<uintptr_t>(m) == v) known = m;
        }
      }
      ++pc;
      continue;
    }
    if (in.code == kCall) {
      r1_map_[pc] = known;
      known = nullptr;
      continue;
    }
    const uint8_t cls = insn_class(in.code);
    const bool stores = (cls == kClassSt || cls == kClassStx) && insn_mode(in.code) == kModeMem;
    const bool jumps = cls == kClassJmp || cls == kClassJmp32;
    // Anything else may write dst (atomics also src or r0); be conservative.
    if ((!stores && !jumps && in.dst == 1) || (cls == kClassStx && in.src == 1) ||
        cls == kClassLd || in.code == kCallx) {
      known = nullptr;
    }
  }
}

// bpf_map_lookup_elem of a constant array map inlined (the kernel's
// map_gen_lookup): key on the stack, bounds check, address arithmetic, and
// the interpreter's bookkeeping of the call (hit cache reset, the value
// granted and cached). A key elsewhere takes the full helper call. False if
// the call cannot be inlined.
bool Emitter::emit_inline_lookup(size_t pc, const HelperProto& proto) {
  const maps::Map* m = r1_map_[pc];
  if (m == nullptr || m->ops == nullptr || m->ops->gen_lookup == nullptr ||
      proto.args[0] != ArgKind::kConstMapPtr || proto.args[1] != ArgKind::kMapKey ||
      proto.ret != RetKind::kMapValueOrNull || m->attr.key_size != 4) {
    return false;
  }
  maps::ArrayLayout lay;
  if (!m->ops->gen_lookup(m, &lay) || lay.elem_size == 0 || lay.elem_size > INT32_MAX ||
      m->attr.value_size == 0 || m->attr.value_size > INT32_MAX) {
    return false;
  }
  const bool rdonly = (m->attr.map_flags & maps::kBpfFRdonlyProg) != 0;
  const Lbl generic = new_label();
  const Lbl null_value = new_label();
  const Lbl done = new_label();
  // The key: 4 bytes in the current frame chain (check_helper_args' kMapKey).
  lea(r10, ptr[rbp - kFrame]);
  cmp(rsi, r10);
  jcc(Cond::kB, generic);
  cmp(rsi, ptr[r12 + kOffTopMinus + 8 * log2_size(4)]);
  jcc(Cond::kA, generic);
  mov(eax, dword[rsi]);
  cmp(eax, lay.max_entries);
  jcc(Cond::kAe, null_value);
  imul(rax, rax, static_cast<int>(lay.elem_size));
  mov(r10, static_cast<uint64_t>(lay.base));
  add(rax, r10);
  // grant_return: add_grant(Region{value, value_size, writable}), which also
  // sets the hit cache. Writable unless read-only to programs or frozen.
  if (rdonly) {
    xor_(r11d, r11d);
  } else {
    mov(r11, reinterpret_cast<uint64_t>(&m->frozen));
    movzx(r11d, byte[r11]);
    xor_(r11d, 1);
  }
  emit_add_grant(m->attr.value_size);
  const Lbl clobber = new_label();
  bind(clobber);
  mov(rdi, interp::kClobberedReg);
  mov(rsi, rdi);
  mov(rdx, rdi);
  mov(rcx, rdi);
  mov(r8, rdi);
  bind(done);
  cold_.push_back([this, generic, null_value, done, clobber, pc, &proto] {
    bind(null_value);
    xor_(eax, eax);
    mov(qword[r12 + kOffHitSpan], 0);
    jmp_to(clobber);
    bind(generic);
    emit_helper_call(pc, proto);
    jmp_to(done);
  });
  return true;
}

// The interpreter's add_grant(Region{rax, span, r11b}): the next grant slot
// and the hit cache. Clobbers r10.
void Emitter::emit_add_grant(uint32_t span) {
  mov(r10d, dword[r12 + kOffNumGrants]);
  and_(r10d, interp::kMaxGrants - 1);
  imul(r10d, r10d, kRegionSize);
  mov(ptr[r12 + r10 + kOffGrants], rax);
  mov(qword[r12 + r10 + kOffGrants + kRegionSpan], span);
  mov(byte[r12 + r10 + kOffGrants + kRegionWritable], r11b);
  inc(dword[r12 + kOffNumGrants]);
  mov(ptr[r12 + kOffHitLo], rax);
  mov(qword[r12 + kOffHitSpan], span);
  mov(byte[r12 + kOffHitWritable], r11b);
}

// interp::grant_map_value(s, m, rax) for a map known at compile time, with
// r0 saved at [rsp]: map_value_region's static tests decided here, the map's
// access_ok called directly (writable first unless read-only to programs or
// frozen, then read-only), the region recorded inline. rax is kept.
void Emitter::emit_known_map_grant(const maps::Map* m) {
  const uint32_t type = m->attr.type;
  const uint32_t size = m->attr.value_size;
  if (m->ops == nullptr || m->ops->access_ok == nullptr || size == 0 ||
      type == static_cast<uint32_t>(maps::MapType::kARRAY_OF_MAPS) ||
      type == static_cast<uint32_t>(maps::MapType::kHASH_OF_MAPS)) {
    return;  // map_value_region gives no region
  }
  const Lbl done = new_label();
  if (size > INT32_MAX) {  // beyond emit_add_grant's immediates: in C
    test(rax, rax);
    jcc(Cond::kZ, done);
    mov(ptr[rsp], rax);
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(m));
    mov(rdx, rax);
    call_abs(reinterpret_cast<const void*>(&jit_grant_map_value));
    mov(rax, ptr[rsp]);
    bind(done);
    return;
  }
  const void* access_ok = reinterpret_cast<const void*>(m->ops->access_ok);
  const Lbl read_only = new_label(), granted = new_label(), restore = new_label();
  test(rax, rax);
  jcc(Cond::kZ, done);
  mov(ptr[rsp], rax);
  if ((m->attr.map_flags & maps::kBpfFRdonlyProg) == 0) {
    mov(r11, reinterpret_cast<uint64_t>(&m->frozen));
    cmp(byte[r11], 0);
    jcc(Cond::kNe, read_only);
    mov(rdi, reinterpret_cast<uint64_t>(m));
    mov(rsi, rax);
    mov(edx, size);
    mov(ecx, 1);
    call_abs(access_ok);
    mov(r11d, 1);
    test(al, al);
    jcc(Cond::kNz, granted);
  }
  bind(read_only);
  mov(rdi, reinterpret_cast<uint64_t>(m));
  mov(rsi, ptr[rsp]);
  mov(edx, size);
  xor_(ecx, ecx);
  call_abs(access_ok);
  test(al, al);
  jcc(Cond::kZ, restore);
  xor_(r11d, r11d);
  bind(granted);
  mov(rax, ptr[rsp]);
  emit_add_grant(size);
  bind(restore);
  mov(rax, ptr[rsp]);
  bind(done);
}

// ---- loads and stores --------------------------------------------------------

RegExp Emitter::checked_addr(size_t pc, int base, int16_t off, int size, bool write, bool atomic) {
  if (base == 10 && off >= -kFrame && off + size <= 0 && (!atomic || off % size == 0)) {
    return rbp + off;  // inside the current frame
  }
  const Lbl slow = new_label();
  const Lbl back = new_label();
  const uint64_t packed = (static_cast<uint64_t>(pc) << 8) | (write ? 1 : 0) | (atomic ? 2 : 0) |
                          (static_cast<uint64_t>(log2_size(size)) << 2);
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
  if (cls == kClassLdx) {
    const RegExp a = checked_addr(pc, in.src, in.off, size, false, false);
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
  const RegExp a = checked_addr(pc, in.dst, in.off, size, true, false);
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

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

Result<JitImage*> compile_x86_64(const Program& prog, const JitOptions& opts) {
  const uint64_t t0 = now_ns();
  const size_t n = prog.exec_insns.size();
  size_t cap = 4096 + n * 96;
  for (int attempt = 0; attempt < 4; ++attempt, cap *= 2) {
    std::unique_ptr<uint8_t[]> buf(new uint8_t[cap]);
    ClearError();
    Emitter e(cap, buf.get(), prog, opts);
    if (!e.emit_all()) {
      if (GetError() == ERR_CODE_IS_TOO_BIG) continue;
      return make_error(EINVAL, "program '%s': JIT failed: %s", prog.name.c_str(),
                        GetError() != 0 ? ConvertErrorToString(GetError()) : "unbound label");
    }
    const size_t size = e.getSize();
    const size_t map_size = (size + 4095) & ~size_t{4095};
    void* p = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return make_error(ENOMEM, "cannot map %zu bytes of JIT code", map_size);
    std::memcpy(p, buf.get(), size);
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
    img->compile_ns = now_ns() - t0;
    return img.release();
  }
  return make_error(E2BIG, "program '%s': JIT code too large", prog.name.c_str());
}

}  // namespace userbpf::vm::jit
