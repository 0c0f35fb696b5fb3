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
#include <array>

#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {
namespace {

constexpr uint16_t bit(int r) {
  return static_cast<uint16_t>(1u << r);
}
constexpr uint16_t kArgRegs = 0x3e;   // r1-r5
constexpr uint16_t kCallRegs = 0x3f;  // r0-r5
constexpr uint16_t kAllRegs = 0x7ff;  // r0-r10
constexpr uint16_t kNotReg = 0x8000;  // a bit no register has

// What an opcode reads and writes, from its operands or fixed registers;
// calls and exit (special) depend on more than the opcode: use_def decides.
struct LiveRule {
  uint16_t use = 0;  // registers read whatever the operands
  uint16_t def = 0;  // registers surely written whatever the operands
  uint16_t wr = 0;   // registers maybe written besides def (written_regs)
  bool use_dst = false, use_src = false, def_dst = false, wr_src = false;
  bool pure = false;  // writes only dst (and is dropped when nobody reads it)
  bool special = false;
};

constexpr LiveRule live_rule(uint8_t code) {
  LiveRule r;
  if (code == kExecMovsx64 || code == kExecMovsx32 || code == kExecAddrSpaceCast) {
    r.use_src = r.def_dst = r.pure = true;
    return r;
  }
  const bool x = insn_src(code) == kSrcX;
  switch (opcode_info(code).kind) {
    case OpKind::kAluBin:
      r.use_dst = insn_op(code) != kAluMov;
      r.use_src = x;
      r.def_dst = r.pure = true;
      return r;
    case OpKind::kAluNeg:
    case OpKind::kAluEnd:
      r.use_dst = r.def_dst = r.pure = true;
      return r;
    case OpKind::kLdImm64:
      r.def_dst = r.pure = true;
      return r;
    case OpKind::kLdx:
    case OpKind::kLdxSx:
      r.use_src = r.def_dst = true;
      return r;
    case OpKind::kSt:
      r.use_dst = true;
      return r;
    case OpKind::kStx:
      r.use_dst = r.use_src = true;
      return r;
    case OpKind::kAtomic:  // fetch forms write src, cmpxchg r0: kept live
      r.use_dst = r.use_src = r.wr_src = true;
      r.use = r.wr = bit(0);
      return r;
    case OpKind::kLdAbs:
      r.use = bit(6);
      r.def = bit(0);
      r.wr = kCallRegs;
      return r;
    case OpKind::kLdInd:
      r.use = bit(6);
      r.use_src = true;
      r.def = bit(0);
      r.wr = kCallRegs;
      return r;
    case OpKind::kJa:
    case OpKind::kJcond:
      return r;
    case OpKind::kJmpCond:
      r.use_dst = true;
      r.use_src = x;
      return r;
    case OpKind::kCall:
    case OpKind::kCallx:
    case OpKind::kExit:
      r.special = true;
      return r;
    case OpKind::kInvalid:
      break;
  }
  r.use = r.wr = kAllRegs;
  return r;
}

constexpr std::array<LiveRule, 256> make_live_rules() {
  std::array<LiveRule, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = live_rule(static_cast<uint8_t>(c));
  return t;
}
constexpr std::array<LiveRule, 256> kLiveRules = make_live_rules();

// Branch-free: compiles see every opcode in any order.
constexpr uint16_t if_bit(bool on, int r) {
  return static_cast<uint16_t>(-static_cast<uint16_t>(on) & bit(r));
}

}  // namespace

Emitter::UseDef Emitter::use_def(size_t pc, bool refined) const {
  const Insn& in = insns_[pc];
  const LiveRule& r = kLiveRules[in.code];
  if (!r.special) {
    return {static_cast<uint16_t>(r.use | if_bit(r.use_dst, in.dst) | if_bit(r.use_src, in.src)),
            static_cast<uint16_t>(r.def | if_bit(r.def_dst, in.dst))};
  }
  switch (opcode_info(in.code).kind) {
    case OpKind::kCall:
      if (in.src == kPseudoCall) return {0x3ff, 0};  // the callee sees r0-r9
      // Helpers and kfuncs read r1-r5 and leave r0 and the clobbered r1-r5.
      // An inlined array lookup whose key is a known stack slot reads none.
      if (refined && inline_lookup_known_key(pc)) return {0, kCallRegs};
      return {kArgRegs, kCallRegs};
    case OpKind::kCallx:
      return {static_cast<uint16_t>(0x3ff | bit(in.dst)), 0};
    default:  // exit: r0, and r1-r5 if a BPF caller may read them after the call
      return {has_bpf_calls_ ? kCallRegs : bit(0), 0};
  }
}

uint16_t Emitter::written_regs(size_t pc) const {
  const Insn& in = insns_[pc];
  const LiveRule& r = kLiveRules[in.code];
  // A BPF callee leaves r6-r9 as they were; helpers write r0-r5.
  if (r.special) return in.code == kExit ? uint16_t{0} : kCallRegs;
  return static_cast<uint16_t>(r.def | r.wr | if_bit(r.def_dst, in.dst) | if_bit(r.wr_src, in.src));
}

bool Emitter::is_pure(size_t pc) const {
  return kLiveRules[insns_[pc].code].pure && insns_[pc].dst != 10;
}

void Emitter::compute_liveness(bool refined) {
  // Per instruction, once (the refined pass only changes inlined lookups
  // with a known key): its uses and defs, whether it is pure, and its
  // successors. Index n_ is an instruction-less sink (nothing live) that
  // stands for "no successor", so the passes below need no branch.
  // Second slots of ld_imm64 are no instruction: a jump there reads
  // anything (uses every register, no successor).
  const uint32_t sink = static_cast<uint32_t>(n_);
  if (!refined) {
    has_bpf_calls_ = false;
    has_back_edge_ = false;
    for (size_t pc = 0; pc < n_; ++pc) {
      const uint8_t code = insns_[pc].code;
      if ((code == kCall && insns_[pc].src == kPseudoCall) || code == kCallx) has_bpf_calls_ = true;
    }
    node_.assign(n_, LiveNode{});
    ud_.resize(n_);
    written_.resize(n_);
    for (size_t pc = 0; pc < n_; ++pc) {
      const Insn& in = insns_[pc];
      LiveNode& nd = node_[pc];
      ud_[pc] = use_def(pc, false);
      written_[pc] = written_regs(pc);
      nd.use = ud_[pc].use;
      nd.def = ud_[pc].def;
      nd.needed_if = is_pure(pc) ? nd.def : kNotReg;
      const OpKind k = opcode_info(in.code).kind;
      const size_t next = pc + (in.code == kLdImm64 ? 2 : 1);
      nd.next =
          k != OpKind::kExit && k != OpKind::kJa && next < n_ ? static_cast<uint32_t>(next) : sink;
      nd.to = sink;
      if (k == OpKind::kJa || k == OpKind::kJmpCond || k == OpKind::kJcond) {
        const int64_t off = in.code == (kClassJmp32 | kJmpJa) ? in.imm : in.off;
        const int64_t to = static_cast<int64_t>(pc) + 1 + off;
        if (to >= 0 && static_cast<size_t>(to) < n_) nd.to = static_cast<uint32_t>(to);
        has_back_edge_ |= to <= static_cast<int64_t>(pc);
      }
      if (in.code == kLdImm64 && pc + 1 < n_) {
        node_[++pc] = LiveNode{kAllRegs, 0, kNotReg, sink, sink};
        ud_[pc] = UseDef{kAllRegs, 0};
        written_[pc] = kAllRegs;
      }
    }
  } else {
    bool any = false;
    for (size_t pc = 0; pc < n_; ++pc) {
      if (insns_[pc].code == kCall && inline_lookup_known_key(pc)) {
        node_[pc].use = use_def(pc, true).use;
        any = true;
      }
    }
    if (!any) return;  // the same as the first pass
  }
  live_in_.assign(n_ + 1, 0);
  live_out_.resize(n_);
  // Backward passes until nothing changes (one more pass per loop nesting);
  // without backward edges the first pass is exact.
  uint16_t* live_in = live_in_.data();
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t pc = n_; pc-- > 0;) {
      const LiveNode& nd = node_[pc];
      const uint16_t out = static_cast<uint16_t>(live_in[nd.next] | live_in[nd.to]);
      // A pure write nobody reads is not emitted, so it reads nothing either
      // (strong liveness: `r2 = r10; r2 += -4` for an inlined lookup's key
      // goes away whole). Without a branch: compiles see instructions in any
      // order, and a mispredicted branch here cost more than the rest.
      const bool needed = ((out | kNotReg) & nd.needed_if) != 0;
      const uint16_t in_set = static_cast<uint16_t>(
          (out & ~nd.def) | (nd.use & static_cast<uint16_t>(-static_cast<uint16_t>(needed))));
      live_out_[pc] = out;
      changed |= in_set != live_in[pc];
      live_in[pc] = in_set;
    }
    changed &= has_back_edge_;
  }
}

}  // namespace userbpf::vm::jit
