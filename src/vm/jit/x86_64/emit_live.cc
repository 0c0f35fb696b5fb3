// The x86-64 code generator's register liveness: which BPF registers some
// later instruction may still read, so that register writes nobody reads
// (constants and pointers set up only for an inlined map lookup, the
// clobbering of r1-r5 after a call) are not emitted.
//
// Soundness: liveness over-approximates every read the generated code or a
// callee can make, including reads the verifier would reject (a callee
// reading its caller's r0 or r6-r9, a caller reading r1-r5 after a call),
// so any program, valid or not, sees the same register values on both
// engines. A register is only killed where the generated code surely
// overwrites it. Only pure register writes are dropped; loads, stores and
// calls are always emitted, whatever they write.
#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {
namespace {

constexpr uint16_t bit(int r) {
  return static_cast<uint16_t>(1u << r);
}
constexpr uint16_t kArgRegs = 0x3e;   // r1-r5
constexpr uint16_t kCallRegs = 0x3f;  // r0-r5
constexpr uint16_t kAllRegs = 0x7ff;  // r0-r10

}  // namespace

Emitter::UseDef Emitter::use_def(size_t pc, bool refined) const {
  const Insn& in = insns_[pc];
  const uint8_t code = in.code;
  const uint16_t dst = bit(in.dst);
  const uint16_t src = bit(in.src);
  if (code == kExecMovsx64 || code == kExecMovsx32 || code == kExecAddrSpaceCast) {
    return {src, dst};
  }
  switch (opcode_info(code).kind) {
    case OpKind::kAluBin:
      if (insn_op(code) == kAluMov) return {insn_src(code) == kSrcX ? src : uint16_t{0}, dst};
      return {static_cast<uint16_t>(dst | (insn_src(code) == kSrcX ? src : 0)), dst};
    case OpKind::kAluNeg:
    case OpKind::kAluEnd:
      return {dst, dst};
    case OpKind::kLdImm64:
      return {0, dst};
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      return {src, dst};
    case OpKind::kSt:
      return {dst, 0};
    case OpKind::kStx:
      return {static_cast<uint16_t>(dst | src), 0};
    case OpKind::kAtomic:  // fetch forms write src, cmpxchg r0: kept live
      return {static_cast<uint16_t>(dst | src | bit(0)), 0};
    case OpKind::kLdAbs:
      return {bit(6), bit(0)};
    case OpKind::kLdInd:
      return {static_cast<uint16_t>(bit(6) | src), bit(0)};
    case OpKind::kJa:
    case OpKind::kJcond:
      return {0, 0};
    case OpKind::kJmpCond:
      return {static_cast<uint16_t>(dst | (insn_src(code) == kSrcX ? src : 0)), 0};
    case OpKind::kCall:
      if (in.src == kPseudoCall) return {0x3ff, 0};  // the callee sees r0-r9
      // Helpers and kfuncs read r1-r5 and leave r0 and the clobbered r1-r5.
      // An inlined array lookup whose key is a known stack slot reads none.
      if (refined && inline_lookup_known_key(pc)) return {0, kCallRegs};
      return {kArgRegs, kCallRegs};
    case OpKind::kCallx:
      return {static_cast<uint16_t>(0x3ff | dst), 0};
    case OpKind::kExit:
      // r0, and r1-r5 if a BPF caller may read them after the call.
      return {has_bpf_calls_ ? kCallRegs : bit(0), 0};
    case OpKind::kInvalid:
      break;
  }
  return {kAllRegs, 0};
}

uint16_t Emitter::written_regs(size_t pc) const {
  const Insn& in = insns_[pc];
  switch (opcode_info(in.code).kind) {
    case OpKind::kCall:  // a BPF callee leaves r6-r9 as they were
    case OpKind::kCallx:
    case OpKind::kLdAbs:
    case OpKind::kLdInd:
      return kCallRegs;
    case OpKind::kAtomic:  // fetch forms write src, cmpxchg r0
      return static_cast<uint16_t>(bit(in.src) | bit(0));
    case OpKind::kInvalid:
      return kAllRegs;
    default:
      return use_def(pc, false).def;
  }
}

bool Emitter::is_pure(size_t pc) const {
  const uint8_t code = insns_[pc].code;
  const OpKind kind = opcode_info(code).kind;
  return (kind == OpKind::kAluBin || kind == OpKind::kAluNeg || kind == OpKind::kAluEnd ||
          kind == OpKind::kLdImm64 || code == kExecMovsx64 || code == kExecMovsx32 ||
          code == kExecAddrSpaceCast) &&
         insns_[pc].dst != 10;
}

void Emitter::compute_liveness(bool refined) {
  // Per instruction, once: its uses and defs, whether it is pure, and its
  // successors (kNone: none); second slots of ld_imm64 are no instruction.
  constexpr uint32_t kNone = UINT32_MAX;
  struct Node {
    UseDef ud;
    uint32_t next = kNone, to = kNone;
    bool second = false, pure = false;
  };
  std::vector<Node> node(n_);
  has_bpf_calls_ = false;
  // use_def's switch once per instruction (the refined pass differs only at
  // inlined lookups with a known key); written_regs' with it.
  if (!refined) {
    ud_.resize(n_);
    written_.resize(n_);
  }
  for (size_t pc = 0; pc < n_; ++pc) {
    const Insn& in = insns_[pc];
    if ((in.code == kCall && in.src == kPseudoCall) || in.code == kCallx) has_bpf_calls_ = true;
    Node& nd = node[pc];
    if (!refined) {
      ud_[pc] = use_def(pc, false);
      written_[pc] = written_regs(pc);
    }
    nd.ud =
        refined && in.code == kCall && inline_lookup_known_key(pc) ? use_def(pc, true) : ud_[pc];
    nd.pure = is_pure(pc);
    const OpKind k = opcode_info(in.code).kind;
    const size_t next = pc + (in.code == kLdImm64 ? 2 : 1);
    if (k != OpKind::kExit && k != OpKind::kJa && next < n_) nd.next = static_cast<uint32_t>(next);
    if (k == OpKind::kJa || k == OpKind::kJmpCond || k == OpKind::kJcond) {
      const int64_t off = in.code == (kClassJmp32 | kJmpJa) ? in.imm : in.off;
      const int64_t to = static_cast<int64_t>(pc) + 1 + off;
      if (to >= 0 && static_cast<size_t>(to) < n_) nd.to = static_cast<uint32_t>(to);
    }
    if (in.code == kLdImm64 && pc + 1 < n_) node[++pc].second = true;
  }
  live_in_.assign(n_, 0);
  live_out_.assign(n_, 0);
  for (size_t pc = 0; pc < n_; ++pc) {
    if (node[pc].second)
      live_in_[pc] = kAllRegs;  // not an instruction: a jump there reads anything
  }
  // Backward passes until nothing changes (one more pass per loop nesting).
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t pc = n_; pc-- > 0;) {
      const Node& nd = node[pc];
      if (nd.second) continue;
      uint16_t out = 0;
      if (nd.next != kNone) out |= live_in_[nd.next];
      if (nd.to != kNone) out |= live_in_[nd.to];
      // A pure write nobody reads is not emitted, so it reads nothing either
      // (strong liveness: `r2 = r10; r2 += -4` for an inlined lookup's key
      // goes away whole).
      const bool dead = nd.pure && (out & nd.ud.def) == 0;
      const uint16_t in_set = dead ? out : static_cast<uint16_t>(nd.ud.use | (out & ~nd.ud.def));
      live_out_[pc] = out;
      if (in_set != live_in_[pc]) {
        live_in_[pc] = in_set;
        changed = true;
      }
    }
  }
}

}  // namespace userbpf::vm::jit
