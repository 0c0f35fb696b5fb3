// The x86-64 code generator's static facts about registers, found in one
// pass over straight-line code before emitting: which map r1 holds at a
// helper call, which registers point into the current stack frame or at a
// value of a constant ARRAY map, and so which accesses need no run-time
// check (the verifier's pointer types, for the easy cases only).
//
// Soundness: a fact holds from where it is established to the next jump
// target or function entry (where everything is forgotten), and dies when
// its register is written by anything but the moves and constant adds
// tracked here. Calls forget r0-r5 (r6-r9 and r10 survive: callees save
// them). A stack fact is relative to the frame's r10, which only changes
// across function entries. An array value fact names a value of the map
// (fixed memory for the map's whole life) or null, and becomes non-null in
// the fall-through of `if rX == 0`.
//
// Values that escape: an inlined array lookup records nothing at run time
// when the facts follow every use of its value (copies, constant offsets,
// accesses proven inside the value, comparisons). A use they do not follow
// (another operation, a store of the pointer, a call argument, an access
// they cannot prove) or a value still live (emit_live.cc) where facts are
// dropped (a jump target, the taken edge of a jump, except `if rX == 0` on
// that very value) makes the lookup cache the value as the hit region, so
// the checks there stay fast. Either way the checks stay correct: the
// region logic finds array values by itself (interp_check.cc).
#include <bit>

#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {
namespace {

// Offsets stay far from overflow: facts further out are dropped.
constexpr int64_t kMaxFactOff = int64_t{1} << 30;
constexpr uint32_t kNoOrigin = UINT32_MAX;  // a value fact not from a lookup

}  // namespace

Bits Emitter::jump_targets() const {
  Bits target(n_, false, mem_);
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
  return target;
}

// For each helper call, the map r1 holds if it was loaded by an ld_imm64 of a
// map of this program earlier in the same straight-line run of code (no jump
// target, function entry or other write of r1 in between).
void Emitter::find_const_r1_maps(const Bits& target) {
  r1_map_.assign(n_, nullptr);
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

void Emitter::find_counted_loops() {
  loops_.clear();
  loop_at_.clear();
  if (!has_back_edge_) return;
  // Jumps into each pc (3: three or more), the first of them, and which
  // pcs the previous instruction falls into.
  std::pmr::vector<uint8_t> preds(n_, 0, mem_);
  std::pmr::vector<uint32_t> first_jump(n_, UINT32_MAX, mem_);
  Bits falls_in(n_, false, mem_);
  for (size_t pc = 0; pc < n_; ++pc) {
    const LiveNode& nd = node_[pc];
    if (nd.next < n_) falls_in[nd.next] = true;
    const OpKind k = opcode_info(insns_[pc].code).kind;
    if ((k == OpKind::kJa || k == OpKind::kJmpCond || k == OpKind::kJcond) && nd.to < n_) {
      preds[nd.to] = static_cast<uint8_t>(std::min(preds[nd.to] + 1, 3));
      if (first_jump[nd.to] == UINT32_MAX) first_jump[nd.to] = static_cast<uint32_t>(pc);
    }
    if (insns_[pc].code == kLdImm64) ++pc;
  }
  for (uint32_t e : prog_.func_entries) {
    if (e < n_) preds[e] = 3;  // entered by calls too
  }
  for (size_t back = 0; back < n_; ++back) {
    const Insn& bj = insns_[back];
    if (bj.code == kLdImm64) {
      ++back;
      continue;
    }
    const OpKind bk = opcode_info(bj.code).kind;
    const uint32_t head = node_[back].to;
    if ((bk != OpKind::kJa && bk != OpKind::kJmpCond) || head > back) continue;
    // One way in besides the back edge: falling in, or one jump from
    // before the head (the first jump there, as the back edge is after it).
    uint32_t entry = UINT32_MAX;
    if (preds[head] == 2 && !falls_in[head] && first_jump[head] < head) {
      entry = first_jump[head];
    } else if (preds[head] != 1 || !falls_in[head]) {
      continue;
    }
    // The test: the back edge itself (`if reg <op> end goto head`), or the
    // exit just before an unconditional back edge (`if reg <op> end goto
    // out; goto head`).
    CountedLoop l{};
    l.head = head;
    l.back = static_cast<uint32_t>(back);
    l.test_pc = l.back;
    l.counted = true;
    const auto k_form = [&](size_t pc) {
      const Insn& in = insns_[pc];
      return opcode_info(in.code).kind == OpKind::kJmpCond && insn_src(in.code) == kSrcK;
    };
    if (bk == OpKind::kJmpCond) {
      const uint8_t op = insn_op(bj.code);
      if (op == kJmpJne) {
        l.test = CountedLoop::kNe;
      } else if (op == kJmpJlt) {
        l.test = CountedLoop::kLt;
      } else if (op == kJmpJle) {
        l.test = CountedLoop::kLe;
      } else {
        l.counted = false;
      }
      l.counted &= k_form(back);
    } else if (back > head && opcode_info(insns_[back - 1].code).kind == OpKind::kJmpCond &&
               node_[back - 1].to > back) {
      l.test_pc = l.back - 1;
      const uint8_t op = insn_op(insns_[l.test_pc].code);
      if (op == kJmpJeq) {
        l.test = CountedLoop::kNe;
      } else if (op == kJmpJge) {
        l.test = CountedLoop::kLt;
      } else if (op == kJmpJgt) {
        l.test = CountedLoop::kLe;
      } else {
        l.counted = false;
      }
      l.counted &= k_form(l.test_pc);
    } else {
      l.counted = false;
    }
    const Insn& t = insns_[l.test_pc];
    l.reg = t.dst;
    l.test32 = insn_class(t.code) == kClassJmp32;
    l.end = l.test32 ? static_cast<uint32_t>(t.imm) : static_cast<uint64_t>(int64_t{t.imm});
    l.counted &= l.reg != 10;
    // The body: no other way in, only forward ways out; counted: one write
    // of reg.
    bool ok = true;
    int adds = 0;
    for (size_t pc = head; pc <= back && ok; ++pc) {
      const Insn& in = insns_[pc];
      if (pc != head && target_[pc]) ok = false;
      const OpKind k = opcode_info(in.code).kind;
      if (pc < l.test_pc && (k == OpKind::kJa || k == OpKind::kJmpCond || k == OpKind::kJcond) &&
          node_[pc].to <= back) {
        ok = false;
      }
      if (k == OpKind::kExit || k == OpKind::kInvalid) ok = false;
      if (l.counted && (written_[pc] >> l.reg & 1)) {
        const bool add64 = in.code == (kClassAlu64 | kSrcK | kAluAdd);
        const bool add32 = in.code == (kClassAlu | kSrcK | kAluAdd);
        if ((!add64 && !add32) || in.dst != l.reg || in.imm <= 0 || ++adds > 1) {
          l.counted = false;
        } else {
          l.add32 = add32;
          l.step = static_cast<uint64_t>(in.imm);
        }
      }
      if (in.code == kLdImm64) ++pc;
    }
    if (!ok) continue;
    // A JMP32 test bounds the whole register only if the add zero-extends.
    l.counted &= adds == 1 && !(l.test32 && !l.add32);
    if (loop_at_.empty()) loop_at_.assign(n_, -1);
    loop_at_[head] = static_cast<int32_t>(loops_.size());
    l.entry_jump = entry;
    loops_.push_back(l);
  }
}

bool array_layout(const maps::Map* m, maps::ArrayLayout* lay) {
  if (m->ops->gen_lookup != nullptr) return m->ops->gen_lookup(m, lay);
  if (m->ops->gen_lookup_percpu != nullptr) return m->ops->gen_lookup_percpu(m, lay);
  return false;
}

// Whether bpf_map_lookup_elem of m is inlined as an array lookup, whose
// non-null results are values of m (the helper path returns the same).
bool Emitter::is_array_lookup(size_t pc, const maps::Map** map) const {
  const Insn& in = insns_[pc];
  if (in.code != kCall || in.src != kPseudoCallHelper || in.imm != kHelperMapLookupElem) {
    return false;
  }
  const maps::Map* m = r1_map_[pc];
  maps::ArrayLayout lay;
  if (m == nullptr || m->ops == nullptr || m->ops->access_ok == nullptr || m->attr.key_size != 4 ||
      m->attr.value_size == 0 || m->attr.value_size > INT32_MAX || !array_layout(m, &lay) ||
      lay.elem_size == 0 || lay.elem_size > INT32_MAX ||
      (lay.cpu_stride & (lay.cpu_stride - 1)) != 0) {
    return false;
  }
  const HelperProto& proto = *prog_.helpers[in.imm];
  if (proto.args[0] != ArgKind::kConstMapPtr || proto.args[1] != ArgKind::kMapKey ||
      proto.ret != RetKind::kMapValueOrNull) {
    return false;
  }
  *map = m;
  return true;
}

bool Emitter::is_hash_lookup(size_t pc, const maps::Map** map) const {
  const Insn& in = insns_[pc];
  if (in.code != kCall || in.src != kPseudoCallHelper || in.imm != kHelperMapLookupElem) {
    return false;
  }
  const maps::Map* m = r1_map_[pc];
  if (m == nullptr || m->ops == nullptr || m->ops->lookup_elem == nullptr ||
      m->ops->value_at == nullptr || m->ops->access_ok == nullptr ||
      m->ops->gen_lookup != nullptr || m->ops->gen_lookup_percpu != nullptr ||
      m->attr.key_size == 0 || m->attr.key_size > kFrame || m->attr.value_size == 0 ||
      m->attr.value_size > INT32_MAX) {
    return false;
  }
  const HelperProto& proto = *prog_.helpers[in.imm];
  if (proto.args[0] != ArgKind::kConstMapPtr || proto.args[1] != ArgKind::kMapKey ||
      proto.ret != RetKind::kMapValueOrNull) {
    return false;
  }
  *map = m;
  return true;
}

void Emitter::find_safe_accesses(const Bits& target) {
  access_.assign(n_, AccessFact{});
  key_off_.assign(n_, kNoKeyOff);
  arg_stack_off_.assign(n_, {kNoKeyOff, kNoKeyOff, kNoKeyOff, kNoKeyOff});
  loop_callback_.assign(n_, -1);
  lookup_caches_value_.assign(n_, false);
  drop_obj_size_.assign(n_, 0);
  // kValueIndexed: a value plus off plus register idx (whatever it holds).
  // kObjOrNull / kObj: an object of `size` bytes a bpf_obj_new of this run
  // returned, plus off; it dies at any call (one could publish or drop it),
  // so while it lives the object is this run's and never published.
  // kNone: a number (or an untracked pointer) of at most umax, unsigned.
  struct Fact {
    enum Kind : uint8_t {
      kNone,
      kStack,
      kValueOrNull,
      kValue,
      kValueIndexed,
      kFunc,
      kObjOrNull,
      kObj
    } kind = kNone;
    const maps::Map* map = nullptr;
    int64_t off = 0;
    uint32_t origin = kNoOrigin;  // value facts: the pc of the lookup that returned it
    uint8_t idx = 0;
    uint64_t umax = UINT64_MAX;
    bool exact = false;  // kNone: the number is umax (a constant)
    uint32_t size = 0;   // object facts
  };
  // The bound of dst after an ALU instruction the pointer facts do not
  // follow (the mask of `idx & (N - 1)`, 32-bit results, shifts, constants).
  auto scalar_umax = [](const Insn& in, const Fact& dst, const Fact& src) -> uint64_t {
    const uint8_t cls = insn_class(in.code);
    const bool alu32 = cls == kClassAlu;
    const uint64_t width = alu32 ? UINT32_MAX : UINT64_MAX;
    const uint64_t d = dst.kind == Fact::kNone ? std::min(dst.umax, width) : width;
    const uint64_t imm =
        alu32 ? static_cast<uint32_t>(in.imm) : static_cast<uint64_t>(static_cast<int64_t>(in.imm));
    if (insn_op(in.code) == kAluEnd) {  // byte swaps: 16, 32 or 64 bits, either class
      return in.imm == 16 ? UINT16_MAX : in.imm == 32 ? UINT32_MAX : UINT64_MAX;
    }
    if (in.code == (cls | kSrcK | kAluMov)) return imm;
    if (in.code == (cls | kSrcK | kAluAnd)) return std::min(d, imm);
    if (in.code == (cls | kSrcK | kAluRsh)) return d >> (in.imm & (alu32 ? 31 : 63));
    if (in.code == (kClassAlu | kSrcX | kAluMov) && in.off == 0) {
      return src.kind == Fact::kNone ? std::min(src.umax, width) : width;
    }
    return width;
  };
  Fact f[kNumRegs];
  // Whether some register may hold a lookup's value, an indexed fact, an
  // object fact (set when one is made, cleared with every fact): the loops
  // over all registers for them run only then (compile time).
  bool any_origin = false, any_indexed = false, any_obj = false;
  auto forget_all = [&] {
    for (Fact& x : f) x = Fact{};
    f[10] = Fact{Fact::kStack, nullptr, 0};
    any_origin = any_indexed = any_obj = false;
  };
  auto forget_call = [&] {
    for (int r = 0; r <= 5; ++r) f[r] = Fact{};
    if (!any_obj) return;
    for (Fact& x : f) {
      if (x.kind == Fact::kObjOrNull || x.kind == Fact::kObj) x = Fact{};
    }
  };
  auto is_value = [&](int r) {
    return f[r].kind == Fact::kValueOrNull || f[r].kind == Fact::kValue;
  };
  // The value a lookup returned reaches code the facts do not follow: its
  // lookup caches it as the hit region, for the checks there.
  auto escape = [&](int r) {
    if (is_value(r) && f[r].origin != kNoOrigin) lookup_caches_value_[f[r].origin] = true;
  };
  auto escape_live = [&](uint16_t live, uint32_t except_origin = UINT32_MAX) {
    if (!any_origin) return;
    for (uint32_t m = live & 0x3ffu; m != 0; m &= m - 1) {
      const int r = std::countr_zero(m);
      if (!(is_value(r) && f[r].origin == except_origin)) escape(r);
    }
  };
  // The fact for an access of size bytes at [f[base] + off).
  auto judge = [&](size_t pc, int base, int16_t off, int size, bool write, bool atomic) {
    const Fact& b = f[base];
    const int64_t lo = b.off + off;
    if (b.kind == Fact::kStack) {
      if (lo >= -kFrame && lo + size <= 0 && (!atomic || lo % size == 0)) {
        access_[pc] = AccessFact{AccessFact::kStack, nullptr};
      }
    } else if (b.kind == Fact::kObj && !atomic) {
      if (lo >= 0 && lo + size <= static_cast<int64_t>(b.size)) {
        access_[pc] = AccessFact{AccessFact::kObject, nullptr};
      }
    } else if ((b.kind == Fact::kValue || b.kind == Fact::kValueIndexed) && !atomic) {
      // Writes: unless read-only to programs (a frozen map stays writable).
      const maps::Map* m = b.map;
      if (lo < 0 || lo + size > static_cast<int64_t>(m->attr.value_size)) return;
      if (write && (m->attr.map_flags & maps::kBpfFRdonlyProg) != 0) return;
      if (b.kind == Fact::kValue) {
        access_[pc] = AccessFact{AccessFact::kValue, m};
      } else {
        const int64_t limit = static_cast<int64_t>(m->attr.value_size) - size - lo;
        const Fact& i = f[b.idx];
        if (i.kind == Fact::kNone && i.umax <= static_cast<uint64_t>(limit)) {
          access_[pc] = AccessFact{AccessFact::kValue, m};  // the index is small enough
        } else {
          access_[pc] =
              AccessFact{AccessFact::kValueIndexed, m, b.idx, static_cast<uint32_t>(limit)};
        }
      }
    }
  };
  // Global data (ld_imm64 of BPF_PSEUDO_MAP_VALUE): the value of a plain
  // ARRAY map, fixed memory for the map's life, plus the offset.
  auto global_value = [&](size_t pc, Fact* out) {
    const Insn& lo = prog_.insns[pc];
    if (pc + 1 >= prog_.insns.size() ||
        (lo.src != kPseudoMapValue && lo.src != kPseudoMapIdxValue) || lo.imm < 0 ||
        static_cast<size_t>(lo.imm) >= prog_.maps.size()) {
      return false;
    }
    const maps::Map* m = prog_.maps[static_cast<size_t>(lo.imm)];
    maps::ArrayLayout lay;
    if (m == nullptr || m->ops == nullptr || m->ops->gen_lookup == nullptr ||
        !m->ops->gen_lookup(m, &lay) || lay.cpu_stride != 0 || m->attr.value_size == 0 ||
        m->attr.value_size > INT32_MAX) {
      return false;
    }
    const uint32_t off = static_cast<uint32_t>(prog_.insns[pc + 1].imm);
    if (off >= m->attr.value_size) return false;
    *out = Fact{Fact::kValue, m, static_cast<int64_t>(off)};
    return true;
  };
  // The counter of a counted loop at its head, entering with fact i: at
  // most what it enters with or the last value that passes the test. From
  // an exact init it takes only init, init + step, ... (no add can wrap:
  // the last value that passes plus step still fits the add's width), so
  // the bound is the last of those that passes; `!=` is only bounded that
  // way, and only if the counter meets end exactly. UINT64_MAX: unbounded.
  auto counter_at_head = [](const CountedLoop& l, const Fact& i) -> uint64_t {
    if (i.kind != Fact::kNone) return UINT64_MAX;
    const uint64_t width = l.add32 ? UINT32_MAX : UINT64_MAX;
    uint64_t last = 0;  // the largest value that passes the test
    if (l.test == CountedLoop::kNe) {
      if (!i.exact || i.umax >= l.end || (l.end - i.umax) % l.step != 0) return UINT64_MAX;
      last = l.end - 1;
    } else if (l.test == CountedLoop::kLt) {
      if (l.end == 0) return UINT64_MAX;
      last = l.end - 1;
    } else {
      last = l.end;
    }
    if (!i.exact || i.umax > last || last > width - l.step) return std::max(i.umax, last);
    return i.umax + (last - i.umax) / l.step * l.step;
  };
  // Counted loops entered by a jump: the jump's pc -> loop, and the
  // counter's fact there (kNone with no bound until the jump is seen).
  std::pmr::vector<int32_t> entry_loop(mem_);
  std::pmr::vector<Fact> entry_fact(loops_.size(), Fact{}, mem_);
  for (size_t i = 0; i < loops_.size(); ++i) {
    if (loops_[i].entry_jump == UINT32_MAX) continue;
    if (entry_loop.empty()) entry_loop.assign(n_, -1);
    entry_loop[loops_[i].entry_jump] = static_cast<int32_t>(i);
  }
  forget_all();
  for (size_t pc = 0; pc < n_; ++pc) {
    if (target[pc]) {
      escape_live(live_in_[pc]);  // facts falling through into a jump target
      const int32_t loop = loop_at_.empty() ? -1 : loop_at_[pc];
      uint64_t head_max = UINT64_MAX;
      if (loop >= 0 && loops_[static_cast<size_t>(loop)].counted) {
        CountedLoop& l = loops_[static_cast<size_t>(loop)];
        const Fact& in = l.entry_jump == UINT32_MAX ? f[l.reg] : entry_fact[loop];
        head_max = counter_at_head(l, in);
        l.init_known = in.kind == Fact::kNone && in.exact;
        l.init = in.umax;
      }
      forget_all();
      if (head_max != UINT64_MAX) f[loops_[static_cast<size_t>(loop)].reg].umax = head_max;
    }
    // A jump into a counted loop's head: the counter as it enters.
    if (!entry_loop.empty() && entry_loop[pc] >= 0) {
      const int32_t loop = entry_loop[pc];
      entry_fact[loop] = f[loops_[static_cast<size_t>(loop)].reg];
    }
    const Insn& in = insns_[pc];
    const uint8_t code = in.code;
    const uint8_t cls = insn_class(code);
    // Reads the facts follow: copies and constant offsets, accesses proven
    // inside the value, comparisons (their taken edge below). Every other
    // read of a value lets it escape.
    const uint16_t uses = ud_[pc].use;
    uint16_t followed = 0;
    if (code == (kClassAlu64 | kSrcX | kAluMov)) {
      followed = static_cast<uint16_t>(1u << in.src);
    } else if (code == (kClassAlu64 | kSrcK | kAluAdd) || code == (kClassAlu64 | kSrcK | kAluSub)) {
      const int64_t off = f[in.dst].off + (insn_op(code) == kAluAdd ? in.imm : -int64_t{in.imm});
      if (off <= kMaxFactOff && off >= -kMaxFactOff) followed = static_cast<uint16_t>(1u << in.dst);
    } else if (opcode_info(code).kind == OpKind::kJmpCond) {
      followed = uses;
    }
    const bool load = cls == kClassLdx;
    if ((load || ((cls == kClassSt || cls == kClassStx) && insn_mode(code) == kModeMem)) &&
        !probe_[pc]) {
      judge(pc, load ? in.src : in.dst, in.off, size_bytes(insn_size(code)), !load, false);
      if (access_[pc].kind == AccessFact::kValue) {
        followed = static_cast<uint16_t>(1u << (load ? in.src : in.dst));
      }
    }
    if (any_origin) {
      for (uint32_t m = uses & ~followed & 0x3ffu; m != 0; m &= m - 1) escape(std::countr_zero(m));
    }
    // An indexed fact dies with its index register (after the access above:
    // a load may overwrite the index it was addressed with).
    const uint16_t written = written_[pc];
    if (any_indexed && written != 0) {
      for (Fact& x : f) {
        if (x.kind == Fact::kValueIndexed && (written >> x.idx & 1)) x = Fact{};
      }
    }
    if (code == kLdImm64) {
      f[in.dst] = Fact{};
      if (global_value(pc, &f[in.dst])) {
        ++pc;
        continue;
      }
      if (pc + 1 < n_) {  // a function of this program (BPF_PSEUDO_FUNC)
        const uint64_t v = static_cast<uint64_t>(static_cast<uint32_t>(in.imm)) |
                           (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32);
        if (interp::is_callback_value(prog_, v)) {
          f[in.dst] = Fact{Fact::kFunc, nullptr, static_cast<int64_t>(static_cast<uint32_t>(v))};
        }
      }
      ++pc;
      continue;
    }
    if (cls == kClassAlu64 || cls == kClassAlu) {
      if (code == (kClassAlu64 | kSrcX | kAluMov)) {
        f[in.dst] = f[in.src];
      } else if (code == (kClassAlu64 | kSrcX | kAluAdd) && f[in.dst].kind == Fact::kValue &&
                 in.src != in.dst && in.src != 10) {
        f[in.dst].kind = Fact::kValueIndexed;  // value + a register
        any_indexed = true;
        f[in.dst].idx = in.src;
      } else if ((code == (kClassAlu64 | kSrcK | kAluAdd) ||
                  code == (kClassAlu64 | kSrcK | kAluSub)) &&
                 f[in.dst].kind != Fact::kNone && f[in.dst].kind != Fact::kFunc) {
        Fact& d = f[in.dst];
        d.off += insn_op(code) == kAluAdd ? in.imm : -static_cast<int64_t>(in.imm);
        if (d.off > kMaxFactOff || d.off < -kMaxFactOff) d = Fact{};
      } else {
        const uint64_t umax = scalar_umax(in, f[in.dst], f[in.src]);
        f[in.dst] = Fact{};
        f[in.dst].umax = umax;
        f[in.dst].exact = code == (cls | kSrcK | kAluMov);
      }
      continue;
    }
    const uint8_t mode = insn_mode(code);
    if (cls == kClassLdx) {
      f[in.dst] = Fact{};
      if (mode == kModeMem && insn_size(code) != kSizeDw) {
        f[in.dst].umax = (uint64_t{1} << (8 * size_bytes(insn_size(code)))) - 1;
      }
      continue;
    }
    if ((cls == kClassSt || cls == kClassStx) && mode == kModeMem) continue;
    if (cls == kClassStx && mode == kModeAtomic) {
      f[in.src] = Fact{};
      f[0] = Fact{};
      continue;
    }
    if (cls == kClassLd) {  // ld_abs / ld_ind: r1-r5 dropped but maybe not written
      for (int r = 1; r <= 5; ++r) {
        if (live_out_[pc] >> r & 1) escape(r);
      }
      forget_call();
      continue;
    }
    if (cls != kClassJmp && cls != kClassJmp32) {
      forget_all();  // nothing else exists; be safe (its uses escaped above)
      continue;
    }
    if (code == kCall) {
      for (int r = 2; r <= 5; ++r) {
        if (f[r].kind == Fact::kStack && f[r].off >= -kFrame && f[r].off <= 0) {
          arg_stack_off_[pc][r - 2] = static_cast<int32_t>(f[r].off);
        }
      }
      if (in.src == kPseudoCallHelper && in.imm == kHelperLoop && f[2].kind == Fact::kFunc) {
        loop_callback_[pc] = static_cast<int32_t>(f[2].off);
      }
      const maps::Map* m = nullptr;
      const bool array = is_array_lookup(pc, &m);
      // A hash lookup is only direct (and its value followed) with its key
      // in the frame.
      const bool hash = !array && is_hash_lookup(pc, &m) && f[2].kind == Fact::kStack &&
                        f[2].off >= -kFrame && f[2].off + m->attr.key_size <= 0;
      const uint32_t key_size = array ? 4 : hash ? m->attr.key_size : 0;
      if (key_size != 0 && f[2].kind == Fact::kStack && f[2].off >= -kFrame &&
          f[2].off + key_size <= 0) {
        key_off_[pc] = static_cast<int32_t>(f[2].off);
      }
      const HelperProto* proto = in.src == kPseudoCallHelper ? prog_.helpers[in.imm]
                                 : in.src == kPseudoKfuncCall
                                     ? prog_.kfuncs[static_cast<size_t>(in.imm)]
                                     : nullptr;
      const auto obj_call = proto ? proto->obj_call : HelperProto::ObjCall::kNone;
      if (obj_call == HelperProto::ObjCall::kDrop &&
          (f[1].kind == Fact::kObj || f[1].kind == Fact::kObjOrNull) && f[1].off == 0) {
        drop_obj_size_[pc] = f[1].size;
      }
      // A new's object has r1 bytes: the loader sets r1 to the proto's
      // ret_size right before the call, but the facts rest only on what
      // this code shows (r1 exactly that constant here).
      const bool sized_new = obj_call == HelperProto::ObjCall::kNew && proto->ret_size != 0 &&
                             f[1].kind == Fact::kNone && f[1].exact && f[1].umax == proto->ret_size;
      forget_call();
      if (array || hash) {
        f[0] = Fact{Fact::kValueOrNull, m, 0, static_cast<uint32_t>(pc)};
        any_origin = true;
      }
      if (sized_new) {
        f[0] = Fact{Fact::kObjOrNull};
        f[0].size = proto->ret_size;
        any_obj = true;
      }
      continue;
    }
    if (code == kCallx) {
      forget_call();
      continue;
    }
    if (code == kExit) {
      forget_all();  // what follows is reached by a jump only
      continue;
    }
    // Jumps: what is live where a jump lands escapes, but for the taken edge
    // of `if rX == 0` testing a lookup's result, where every copy of that
    // result is null (off 0) or a small number, not a pointer.
    const int64_t off = code == (kClassJmp32 | kJmpJa) ? in.imm : in.off;
    const int64_t to = static_cast<int64_t>(pc) + 1 + off;
    const bool null_test =
        code == (kClassJmp | kSrcK | kJmpJeq) && in.imm == 0 &&
        (f[in.dst].kind == Fact::kValueOrNull || f[in.dst].kind == Fact::kObjOrNull) &&
        f[in.dst].off == 0;
    if (to >= 0 && static_cast<size_t>(to) < n_) {
      escape_live(live_in_[to], null_test ? f[in.dst].origin : UINT32_MAX);
    }
    if (code == (kClassJmp | kJmpJa) || code == (kClassJmp32 | kJmpJa)) {
      forget_all();  // what follows is reached by a jump only
      continue;
    }
    // `if rX == 0 goto`: rX is not null where it falls through.
    if (null_test) {
      f[in.dst].kind = f[in.dst].kind == Fact::kObjOrNull ? Fact::kObj : Fact::kValue;
    }
  }
}

void Emitter::find_folded_adds() {
  folded_add_.clear();
  for (size_t pc = 0; pc + 1 < n_; ++pc) {
    const Insn& add = insns_[pc];
    if (add.code == kLdImm64) {
      ++pc;
      continue;
    }
    if (add.code != (kClassAlu64 | kSrcX | kAluAdd) || add.dst == add.src || add.dst == 10 ||
        add.src == 10 || target_[pc + 1] || probe_[pc + 1]) {
      continue;
    }
    const Insn& m = insns_[pc + 1];
    const uint8_t cls = insn_class(m.code);
    const bool load = cls == kClassLdx;
    const bool store = (cls == kClassSt || cls == kClassStx) && insn_mode(m.code) == kModeMem;
    const AccessFact::Kind k = access_[pc + 1].kind;
    if ((!load && !store) || (load ? m.src : m.dst) != add.dst ||
        (cls == kClassStx && m.src == add.dst) ||
        (k != AccessFact::kValue && k != AccessFact::kStack && k != AccessFact::kObject)) {
      continue;
    }
    // rX as the add left it is read by nobody after the access.
    if ((live_out_[pc + 1] >> add.dst & 1) != 0 && !(load && m.dst == add.dst)) continue;
    if (folded_add_.empty()) folded_add_.assign(n_, false);
    folded_add_[pc] = true;
  }
}

// Loop plans. Hoisting: an ld_imm64 in a loop body whose constant only
// addresses the proven access right after it (`rX = K; rX += rI; access
// [rX + off]` with the add folded, or `rX = K; access [rX + off]`), with
// rX dead after the access, emits nothing: K is set once at the loop's
// entry in the x86 register of a BPF register the loop never names and
// which is dead at its head (so at every exit too), and the access
// addresses through that register. Bodies whose code uses x86 registers
// of its own (calls, division, shifts by a register, atomics, legacy
// packet loads) keep their constants.
//
// Charging at entry: a counted loop entered with an exact counter goes
// round a known number of times, B (no wrap: the counter's last passing
// value plus step fits the add's width); when its body can neither fault
// nor leave early (ALU, constants, proven accesses, its test and back edge
// only), the B back edges' budget, B times the back edge's distance, is
// charged once at the entry, and the back edge charges nothing. With less
// budget left than that, the loop runs as a copy charged per back edge,
// which faults where the interpreter does.
void Emitter::find_loop_plans() {
  hoist_.clear();
  for (size_t li = 0; li < loops_.size(); ++li) {
    CountedLoop& l = loops_[li];
    // A jump entry must be one emit_branch emits (to the loop's entry).
    if (l.entry_jump != UINT32_MAX && insns_[l.entry_jump].code != (kClassJmp | kJmpJa)) continue;
    uint16_t named = 0;
    bool own_regs = false, plain = true;
    for (size_t pc = l.head; pc <= l.back; ++pc) {
      const Insn& in = insns_[pc];
      named |= static_cast<uint16_t>(ud_[pc].use | written_[pc]);
      const OpKind k = opcode_info(in.code).kind;
      const uint8_t cls = insn_class(in.code);
      const bool alu = cls == kClassAlu || cls == kClassAlu64;
      const uint8_t op = insn_op(in.code);
      if (in.code == kCall || in.code == kCallx || k == OpKind::kAtomic || k == OpKind::kLdAbs ||
          k == OpKind::kLdInd ||
          (alu &&
           (op == kAluDiv || op == kAluMod ||
            ((op == kAluLsh || op == kAluRsh || op == kAluArsh) && insn_src(in.code) == kSrcX)))) {
        own_regs = true;
      }
      // What a body charged at entry may hold.
      const bool jump = k == OpKind::kJa || k == OpKind::kJmpCond || k == OpKind::kJcond;
      const bool mem =
          k == OpKind::kLdx || k == OpKind::kLdxSx || k == OpKind::kSt || k == OpKind::kStx;
      const AccessFact::Kind ak = access_[pc].kind;
      if (jump  ? pc != l.test_pc && pc != l.back
          : mem ? probe_[pc] || (ak != AccessFact::kStack && ak != AccessFact::kValue &&
                                 ak != AccessFact::kObject)
                : !alu && in.code != kLdImm64) {
        plain = false;
      }
      if (in.code == kLdImm64) ++pc;  // its second slot names every register
    }
    if (!own_regs) {
      uint16_t free_regs = static_cast<uint16_t>(~(named | live_in_[l.head]) & 0x3ff);
      if (may_goto_reg_) free_regs &= static_cast<uint16_t>(~(1u << 9));  // r15: the count
      for (size_t pc = l.head; pc + 2 <= l.back; ++pc) {
        const Insn& in = insns_[pc];
        if (in.code != kLdImm64) continue;
        const int x = in.dst;
        size_t acc = pc + 2;  // the access, after a folded add or right after
        if (!folded_add_.empty() && folded_add_[acc] && insns_[acc].dst == x) ++acc;
        const Insn& m = insns_[acc];
        const uint8_t cls = insn_class(m.code);
        const bool load = cls == kClassLdx;
        const bool store = (cls == kClassSt || cls == kClassStx) && insn_mode(m.code) == kModeMem;
        const AccessFact::Kind ak = access_[acc].kind;
        const bool folded = acc == pc + 3;
        if (acc > l.back || x == 10 || (!load && !store) || (load ? m.src : m.dst) != x ||
            (cls == kClassStx && m.src == x) || probe_[acc] ||
            (ak != AccessFact::kValue && ak != AccessFact::kObject) ||
            (!folded && (live_out_[acc] >> x & 1) != 0 && !(load && m.dst == x))) {
          ++pc;
          continue;
        }
        const uint64_t k = static_cast<uint64_t>(static_cast<uint32_t>(in.imm)) |
                           (static_cast<uint64_t>(static_cast<uint32_t>(insns_[pc + 1].imm)) << 32);
        int reg = -1;
        for (int h = 0; h < l.num_hoists; ++h) {
          if (l.hoist_k[h] == k) reg = l.hoist_reg[h];
        }
        if (reg < 0 && free_regs != 0 && l.num_hoists < std::size(l.hoist_reg)) {
          reg = std::countr_zero(free_regs);
          free_regs &= static_cast<uint16_t>(free_regs - 1);
          l.hoist_reg[l.num_hoists] = static_cast<uint8_t>(reg);
          l.hoist_k[l.num_hoists++] = k;
        }
        if (reg >= 0) {
          if (hoist_.empty()) hoist_.assign(n_, -1);
          hoist_[pc] = hoist_[acc] = static_cast<int8_t>(reg);
        }
        ++pc;
      }
    }
    // The back edges a run of the loop takes: the counter goes init,
    // init + step, .. and goes round while it passes the test after its
    // add, i.e. while it is at most last.
    if (plain && l.counted && l.init_known && l.back + 1 < n_) {
      const uint64_t width = l.add32 ? UINT32_MAX : UINT64_MAX;
      const uint64_t last = l.test == CountedLoop::kLe ? l.end : l.end - 1;
      const bool meets_end =
          l.test != CountedLoop::kNe || (l.init < l.end && (l.end - l.init) % l.step == 0);
      if (l.end != 0 && meets_end && l.init <= last && last <= width - l.step) {
        const uint64_t back_edges = (last - l.init) / l.step;
        const uint64_t dist = l.back + 1 - l.head;
        if (back_edges != 0 && back_edges <= (uint64_t{1} << 40)) {
          l.charge = back_edges * dist;
          l.trips = back_edges + 1;
          find_reduction(l);
        }
      }
    }
    if (l.planned()) {
      l.pre = new_label();
      l.slow_head = new_label();
    }
  }
}

// A loop charged at entry that only sums an array (clang's `for (i = a; i
// < n; i += SZ) acc += *(uSZ *)(g + i)`, or `acc += k - g[i]` as in
// counting the zeros of a 0/1 array):
//   rX = K; rX += rI; rT = *(uSZ *)(rX + off); rA +=/-= rT; [rA +=/-= k;]
//   rI += SZ; test
// with the add folded into the load (so rX's sum is dead after it), rA
// neither rT, rI nor rX, SZ 1, 4 or 8, and rA's operations of one width
// (64 or 32 bits). Its trips are known and its loads proven, so the whole
// run is: rA +/-= the sum of trips elements from K + init + off, plus trips
// * k (integer sums modulo 2^width do not depend on the order), rT = the
// last element if it is read after the loop, rI = its last value
// (emit_reduction).
void Emitter::find_reduction(CountedLoop& l) {
  const size_t x = l.head;
  if (x + 6 > l.test_pc || insns_[x].code != kLdImm64 || folded_add_.empty() ||
      !folded_add_[x + 2]) {
    return;
  }
  const Insn& ld = insns_[x];
  const Insn& add = insns_[x + 2];
  const Insn& load = insns_[x + 3];
  const Insn& acc = insns_[x + 4];
  const uint8_t cls = insn_class(acc.code);
  const bool acc_sub = acc.code == (cls | kSrcX | kAluSub);
  int64_t k = 0;
  size_t step_pc = x + 5;
  const Insn& plus = insns_[x + 5];
  if (plus.dst == acc.dst &&
      (plus.code == (cls | kSrcK | kAluAdd) || plus.code == (cls | kSrcK | kAluSub))) {
    k = insn_op(plus.code) == kAluAdd ? int64_t{plus.imm} : -int64_t{plus.imm};
    ++step_pc;
  }
  const Insn& step = insns_[step_pc];
  const int sz = size_bytes(insn_size(load.code));
  if (step_pc + 1 != l.test_pc || add.dst != ld.dst || add.src != l.reg ||
      load.code != (kClassLdx | kModeMem | insn_size(load.code)) || load.src != ld.dst ||
      (sz != 1 && sz != 4 && sz != 8) || probe_[x + 3] ||
      (cls != kClassAlu64 && cls != kClassAlu) ||
      (acc.code != (cls | kSrcX | kAluAdd) && !acc_sub) || acc.src != load.dst ||
      acc.dst == load.dst || acc.dst == l.reg || acc.dst == ld.dst || acc.dst == 10 ||
      !(written_[step_pc] >> l.reg & 1) || step.dst != l.reg ||
      l.step != static_cast<uint64_t>(sz)) {
    return;
  }
  l.reduce = true;
  l.red_size = static_cast<uint8_t>(sz);
  l.red_acc = acc.dst;
  l.red_acc32 = cls == kClassAlu;
  l.red_sub = acc_sub;
  l.red_per_trip = static_cast<uint64_t>(k);
  l.red_tmp = load.dst;
  l.red_start = (static_cast<uint64_t>(static_cast<uint32_t>(ld.imm)) |
                 (static_cast<uint64_t>(static_cast<uint32_t>(insns_[x + 1].imm)) << 32)) +
                l.init + static_cast<uint64_t>(int64_t{load.off});
  const uint32_t exit = l.test_pc == l.back ? l.back + 1 : node_[l.test_pc].to;
  l.red_exit = exit;
  l.red_tmp_live = exit >= n_ || (live_in_[exit] >> load.dst & 1) != 0;
}

bool Emitter::run_keeps_state() const {
  for (size_t pc = 0; pc < n_; ++pc) {
    const Insn& in = insns_[pc];
    const uint8_t cls = insn_class(in.code);
    if (in.code == kLdImm64) {
      ++pc;
      continue;
    }
    const bool mem = cls == kClassLdx || cls == kClassSt || cls == kClassStx;
    if ((mem && access_[pc].kind != AccessFact::kStack) || cls == kClassLd || in.code == kCall ||
        in.code == kCallx || in.code == (kClassJmp | kJmpJcond)) {
      return false;
    }
  }
  return true;
}

}  // namespace userbpf::vm::jit
