// build_interp_form(): the interpreter's form of a prepared program.
//
// bpf_obj_new and bpf_obj_drop are a program's malloc and free; the loader
// gives each call the moves that set its arguments (r1 = size or object,
// r2 = the domain, as an ld_imm64) after clang's own. Interpreted one by
// one, a pair with its moves is 13 dispatches, and the dispatches cost more
// than the allocator. Here the moves before such a call and the call become
// one instruction (kExecObjNew / kExecObjDrop, program.h), and with it the
// `if r0 == 0 goto` that usually follows bpf_obj_new.
//
// The moves fused are the longest run right before the call of moves of a
// constant (mov, ld_imm64) or of a register (mov64) into r1-r5: the call
// clobbers r1-r5, so of those moves only the values they leave in r1 and r2
// matter. Only the fused run's first instruction changes; a jump into the
// run or onto the call runs the original instructions. The call writes
// kClobberedReg only into the r1-r5 some path reads afterwards.
//
// A loop's counter update and its test or goto (`add K` and the jump right
// after it) are one dispatch too (fused_add_jump_code, program.h).
//
// In programs with obj calls, the facts (find_obj_facts) say which loads
// and stores lie inside an object the run holds (they get
// obj_access_code: no check) and which drops get an object whose class is
// known (kExecObjDropKnown, and its new kExecObjNewKnown).
#include "isa/decode.h"
#include "isa/opcodes.h"
#include "maps/bpf_obj.h"
#include "mem/domain.h"
#include "vm/program.h"

namespace userbpf::vm {
namespace {

using isa::Insn;

// Largest object the fused bpf_obj_new allocates inline (obj_new_fast).
constexpr uint32_t kInlineObjMax = 48;

// What a run of moves has left in r1-r5 so far.
struct ArgVals {
  struct Val {
    bool is_const = false;
    uint8_t reg = 0;  // !is_const: the register's value before the run
    uint64_t v = 0;
  };
  Val r[6];
  void reset() {
    for (uint8_t i = 1; i <= 5; i++) r[i] = Val{false, i, 0};
  }
};

// Whether in (at pc; an ld_imm64 uses in and the next slot) moves a
// constant or a register into one of r1-r5; if so, applies it to vals.
bool apply_arg_move(const Insn* in, ArgVals& vals) {
  if (in->dst < 1 || in->dst > 5) return false;
  ArgVals::Val& d = vals.r[in->dst];
  if (in->code == isa::kLdImm64 && in->src == 0) {
    d = {true, 0,
         static_cast<uint64_t>(static_cast<uint32_t>(in[0].imm)) |
             static_cast<uint64_t>(static_cast<uint32_t>(in[1].imm)) << 32};
    return true;
  }
  if (in->code == (isa::kClassAlu64 | isa::kSrcK | isa::kAluMov)) {
    d = {true, 0, static_cast<uint64_t>(static_cast<int64_t>(in->imm))};
    return true;
  }
  if (in->code == (isa::kClassAlu | isa::kSrcK | isa::kAluMov)) {
    d = {true, 0, static_cast<uint32_t>(in->imm)};
    return true;
  }
  if (in->code == (isa::kClassAlu64 | isa::kSrcX | isa::kAluMov) && in->off == 0) {
    d = in->src >= 1 && in->src <= 5 ? vals.r[in->src] : ArgVals::Val{false, in->src, 0};
    return true;
  }
  return false;
}

InterpObjCall make_obj_call(const Program& prog, const HelperProto& proto, const ArgVals& vals,
                            uint32_t call_off, const Insn* after) {
  InterpObjCall f;
  f.slot_fn = proto.slot_fn;
  f.call_off = call_off;
  for (int i = 0; i < 2; i++) {
    const ArgVals::Val& v = vals.r[i + 1];
    if (v.is_const)
      f.arg[i] = v.v;
    else
      f.arg_reg[i] = v.reg;
  }
  f.null_branch = after != nullptr && after->code == (isa::kClassJmp | isa::kSrcK | isa::kJmpJeq) &&
                  after->dst == 0 && after->imm == 0;
  // r2 is the domain the loader passes (slot_fn takes it as one): the
  // inline path is for the program's own.
  const bool const_domain =
      f.arg_reg[1] == InterpObjCall::kArgConst && prog.mem_domain != nullptr &&
      f.arg[1] == static_cast<uint64_t>(reinterpret_cast<uintptr_t>(prog.mem_domain));
  if (const_domain && proto.obj_call == HelperProto::ObjCall::kDrop) {
    f.domain = prog.mem_domain;
    f.owned = maps::obj_owned_state(*prog.mem_domain, 0);
  }
  if (const_domain && proto.obj_call == HelperProto::ObjCall::kNew &&
      f.arg_reg[0] == InterpObjCall::kArgConst && f.arg[0] >= 1 && f.arg[0] <= kInlineObjMax) {
    f.domain = prog.mem_domain;
    f.size = static_cast<uint32_t>(f.arg[0]);
    f.cls = static_cast<uint32_t>(maps::obj_class(f.size));
    f.owned = maps::obj_owned_state(*prog.mem_domain, f.size);
  }
  return f;
}

// ---- which of r1-r5 are read after a call ------------------------------------
// A call leaves r1-r5 holding kClobberedReg, the value a program that reads
// them anyway sees. A fused call writes it only into the registers some
// path reads before writing them (InterpObjCall::clobber): for the others
// the value is never seen.

constexpr uint8_t kArgRegs = 0x3e;  // bits 1-5

constexpr uint8_t arg_bit(uint8_t r) {
  return r >= 1 && r <= 5 ? static_cast<uint8_t>(1u << r) : 0;
}

// The r1-r5 that insn (at pc, of the main function if main) reads and the
// ones it certainly writes. Reads may be over-counted, writes never.
void args_used_and_set(const Program& prog, const Insn& insn, bool main, uint8_t* use,
                       uint8_t* set) {
  *use = *set = 0;
  const uint8_t code = insn.code;
  if (code == kExecMovsx64 || code == kExecMovsx32 || code == kExecAddrSpaceCast) {
    *use = arg_bit(insn.src);
    *set = arg_bit(insn.dst);
    return;
  }
  switch (isa::opcode_info(code).kind) {
    case isa::OpKind::kAluBin:
      if ((code & 0xf0) == isa::kAluMov) {
        *use = (code & isa::kSrcX) ? arg_bit(insn.src) : 0;
      } else {
        *use = arg_bit(insn.dst) | ((code & isa::kSrcX) ? arg_bit(insn.src) : 0);
      }
      *set = arg_bit(insn.dst);
      return;
    case isa::OpKind::kAluNeg:
    case isa::OpKind::kAluEnd:
      *use = *set = arg_bit(insn.dst);
      return;
    case isa::OpKind::kLdImm64:
      *set = arg_bit(insn.dst);
      return;
    case isa::OpKind::kLdx:
    case isa::OpKind::kLdxSx:
      *use = arg_bit(insn.src);
      *set = arg_bit(insn.dst);
      return;
    case isa::OpKind::kSt:
      *use = arg_bit(insn.dst);
      return;
    case isa::OpKind::kStx:
    case isa::OpKind::kAtomic:
      *use = arg_bit(insn.dst) | arg_bit(insn.src);
      return;
    case isa::OpKind::kLdInd:
      *use = arg_bit(insn.src);
      return;
    case isa::OpKind::kJmpCond:
      *use = arg_bit(insn.dst) | ((code & isa::kSrcX) ? arg_bit(insn.src) : 0);
      return;
    case isa::OpKind::kCall: {
      const HelperProto* proto = nullptr;
      if (isa::is_helper_call(insn) && prog.helpers && insn.imm >= 0 &&
          static_cast<uint32_t>(insn.imm) < kMaxHelperId)
        proto = prog.helpers[insn.imm];
      else if (isa::is_kfunc_call(insn) && insn.imm >= 0 &&
               static_cast<size_t>(insn.imm) < prog.kfuncs.size())
        proto = prog.kfuncs[static_cast<size_t>(insn.imm)];
      if (proto == nullptr) {  // a bpf-to-bpf call: the callee's arguments, its r1-r5 after
        *use = kArgRegs;
        return;
      }
      for (uint8_t a = 0; a < 5; a++)
        if (proto->args[a] != ArgKind::kNone) *use |= arg_bit(static_cast<uint8_t>(a + 1));
      *set = kArgRegs;
      return;
    }
    case isa::OpKind::kCallx:
      *use = kArgRegs;
      return;
    case isa::OpKind::kExit:
      // A function's caller (or the helper of a callback) may read what its
      // r1-r5 hold; the host reads only the program's r0.
      *use = main ? 0 : kArgRegs;
      return;
    default:  // ja, may_goto, ld_abs
      return;
  }
}

// For each pc, the r1-r5 some path from the instruction after it reads
// before writing (a worklist over the instructions' predecessors).
std::vector<uint8_t> args_live_after(const Program& prog) {
  const std::vector<Insn>& in = prog.exec_insns;
  const size_t n = in.size();
  const size_t main_end = prog.func_entries.size() > 1 ? prog.func_entries[1] : n;
  std::vector<uint8_t> use(n, 0), set(n, 0), live_in(n, 0), live_out(n, 0);
  std::vector<std::vector<uint32_t>> preds(n);
  std::vector<uint32_t> work;  // every instruction (not ld_imm64's second slots)
  for (size_t pc = 0; pc < n; ++pc) {
    const Insn& insn = in[pc];
    work.push_back(static_cast<uint32_t>(pc));
    args_used_and_set(prog, insn, pc < main_end, &use[pc], &set[pc]);
    const isa::OpKind kind = isa::opcode_info(insn.code).kind;
    const size_t next = pc + (insn.code == isa::kLdImm64 ? 2 : 1);
    auto edge = [&](int64_t to) {
      if (to >= 0 && static_cast<size_t>(to) < n) preds[static_cast<size_t>(to)].push_back(pc);
    };
    if (kind == isa::OpKind::kJa) {
      edge(isa::branch_target(insn, pc));
    } else if (kind == isa::OpKind::kJmpCond || kind == isa::OpKind::kJcond) {
      edge(isa::branch_target(insn, pc));
      edge(static_cast<int64_t>(next));
    } else if (kind != isa::OpKind::kExit) {
      edge(static_cast<int64_t>(next));
    }
    if (insn.code == isa::kLdImm64) ++pc;
  }
  std::vector<bool> queued(n, true);
  while (!work.empty()) {
    const uint32_t pc = work.back();
    work.pop_back();
    queued[pc] = false;
    const auto li = static_cast<uint8_t>(use[pc] | (live_out[pc] & ~set[pc]));
    if (li == live_in[pc]) continue;  // (0 the first time: nothing to pass on)
    live_in[pc] = li;
    for (uint32_t p : preds[pc]) {
      const auto lo = static_cast<uint8_t>(live_out[p] | li);
      if (lo == live_out[p]) continue;
      live_out[p] = lo;
      if (!queued[p]) {
        queued[p] = true;
        work.push_back(p);
      }
    }
  }
  return live_out;
}

// ---- objects the run holds ----------------------------------------------------
// The kernel's verifier knows which registers point into an object the
// program allocated and how big it is, so its accesses need no check and
// its bpf_obj_drop knows the class. A forward pass over straight-line code
// finds the easy cases, as the JIT's facts do (jit/x86_64/emit_facts.cc):
// after a bpf_obj_new, r0 is the object or null, not null where
// `if r0 == 0 goto` falls through, and the fact follows register moves and
// constant adds. Everything is forgotten at jump targets and function
// entries, and an object fact at any call (a callee could publish or drop
// the object): while a fact lives, its object is the run's own and was never
// published, and no one else may free it (bpf_obj.h: only the owning run
// moves an owned object on). Were it freed anyway (a program that hands the
// pointer on as a number: no verifier here refuses that), an unchecked
// access would still land in the data of an object of that class, never in
// the allocator's headers or state words: an object's memory stays an
// object of its class for the domain's life.
struct ObjFacts {
  std::vector<bool> access;         // per pc: a load or store inside an object
  std::vector<uint32_t> drop;       // per drop's call pc: its object's size (not null), or 0
  std::vector<uint32_t> drop_from;  // and the call pc of the new that made it
};

ObjFacts find_obj_facts(const Program& prog) {
  const std::vector<Insn>& in = prog.exec_insns;
  const size_t n = in.size();
  ObjFacts out{std::vector<bool>(n, false), std::vector<uint32_t>(n, 0),
               std::vector<uint32_t>(n, 0)};
  std::vector<bool> target(n, false);
  for (uint32_t e : prog.func_entries)
    if (e < n) target[e] = true;
  for (size_t pc = 0; pc < n; ++pc) {
    const isa::OpKind kind = isa::opcode_info(in[pc].code).kind;
    if (kind == isa::OpKind::kJa || kind == isa::OpKind::kJmpCond || kind == isa::OpKind::kJcond) {
      const int64_t t = isa::branch_target(in[pc], pc);
      if (t >= 0 && static_cast<size_t>(t) < n) target[static_cast<size_t>(t)] = true;
    }
    if (in[pc].code == isa::kLdImm64) ++pc;
  }
  // kConst: a constant (off), only to see the size a new gets in r1.
  struct Fact {
    enum Kind : uint8_t { kNone, kConst, kObjOrNull, kObj } kind = kNone;
    int64_t off = 0;      // from the object's data, or the constant
    uint32_t size = 0;    // the object's bytes
    uint32_t origin = 0;  // the call pc of its bpf_obj_new
  };
  auto constant = [](uint64_t v) { return Fact{Fact::kConst, static_cast<int64_t>(v)}; };
  constexpr int64_t kMaxOff = int64_t{1} << 30;
  Fact f[isa::kNumRegs];
  // At jump targets, exits and calls (r0-r5, and every object fact: all
  // there is but the constants in r6-r9, which nothing here needs).
  auto forget = [&] {
    for (Fact& x : f) x = Fact{};
  };
  // Whether an access of size bytes at [f[base] + off) lies in an object.
  auto inside = [&](int base, int16_t off, uint32_t size) {
    const Fact& b = f[base];
    const int64_t lo = b.off + off;
    return b.kind == Fact::kObj && lo >= 0 && lo + size <= b.size;
  };
  for (size_t pc = 0; pc < n; ++pc) {
    if (target[pc]) forget();
    const Insn& insn = in[pc];
    const uint8_t code = insn.code;
    if (code == kExecMovsx64 || code == kExecMovsx32 || code == kExecAddrSpaceCast) {
      f[insn.dst] = Fact{};
      continue;
    }
    switch (isa::opcode_info(code).kind) {
      case isa::OpKind::kLdImm64:
        f[insn.dst] = Fact{};
        if (insn.src == 0 && pc + 1 < n)
          f[insn.dst] = constant(static_cast<uint32_t>(insn.imm) |
                                 uint64_t{static_cast<uint32_t>(in[pc + 1].imm)} << 32);
        ++pc;
        break;
      case isa::OpKind::kAluBin: {
        Fact& d = f[insn.dst];
        if (code == (isa::kClassAlu64 | isa::kSrcX | isa::kAluMov)) {
          d = f[insn.src];
        } else if (code == (isa::kClassAlu64 | isa::kSrcK | isa::kAluMov)) {
          d = constant(static_cast<uint64_t>(int64_t{insn.imm}));
        } else if (code == (isa::kClassAlu | isa::kSrcK | isa::kAluMov)) {
          d = constant(static_cast<uint32_t>(insn.imm));
        } else if ((code == (isa::kClassAlu64 | isa::kSrcK | isa::kAluAdd) ||
                    code == (isa::kClassAlu64 | isa::kSrcK | isa::kAluSub)) &&
                   (d.kind == Fact::kObjOrNull || d.kind == Fact::kObj)) {
          d.off += (code & 0xf0) == isa::kAluAdd ? int64_t{insn.imm} : -int64_t{insn.imm};
          if (d.off > kMaxOff || d.off < -kMaxOff) d = Fact{};
        } else {
          d = Fact{};
        }
        break;
      }
      case isa::OpKind::kAluNeg:
      case isa::OpKind::kAluEnd:
        f[insn.dst] = Fact{};
        break;
      case isa::OpKind::kLdx:
      case isa::OpKind::kLdxSx:
        out.access[pc] = inside(insn.src, insn.off, isa::size_bytes(isa::insn_size(code)));
        f[insn.dst] = Fact{};
        break;
      case isa::OpKind::kSt:
      case isa::OpKind::kStx:
        out.access[pc] = inside(insn.dst, insn.off, isa::size_bytes(isa::insn_size(code)));
        break;
      case isa::OpKind::kAtomic:  // fetch forms write src, cmpxchg r0
        f[insn.dst] = f[insn.src] = f[0] = Fact{};
        break;
      case isa::OpKind::kCall: {
        const HelperProto* proto = nullptr;
        if (isa::is_kfunc_call(insn) && insn.imm >= 0 &&
            static_cast<size_t>(insn.imm) < prog.kfuncs.size())
          proto = prog.kfuncs[static_cast<size_t>(insn.imm)];
        const auto obj = proto ? proto->obj_call : HelperProto::ObjCall::kNone;
        // (Only past the null test: the kernel's verifier refuses to drop a
        // maybe-null pointer, so compiled code always tests first.)
        if (obj == HelperProto::ObjCall::kDrop && f[1].kind == Fact::kObj && f[1].off == 0) {
          out.drop[pc] = f[1].size;
          out.drop_from[pc] = f[1].origin;
        }
        // The object has r1 bytes: the loader's proto says ret_size, and
        // sets r1 to it right before the call, but facts rest only on what
        // this code shows (the call no jump target, r1 that constant).
        const bool sized = f[1].kind == Fact::kConst && proto != nullptr && proto->ret_size != 0 &&
                           f[1].off == int64_t{proto->ret_size};
        forget();
        if (obj == HelperProto::ObjCall::kNew && sized)
          f[0] = Fact{Fact::kObjOrNull, 0, proto->ret_size, static_cast<uint32_t>(pc)};
        break;
      }
      case isa::OpKind::kJmpCond:
        // `if rX == 0 goto`: where it falls through, rX is the object.
        if (code == (isa::kClassJmp | isa::kSrcK | isa::kJmpJeq) && insn.imm == 0 &&
            f[insn.dst].kind == Fact::kObjOrNull && f[insn.dst].off == 0)
          f[insn.dst].kind = Fact::kObj;
        break;
      case isa::OpKind::kJcond:
        break;
      case isa::OpKind::kLdAbs:
      case isa::OpKind::kLdInd:
      case isa::OpKind::kCallx:
      default:  // exit, ja: what follows is reached by a jump only
        forget();
        break;
    }
  }
  return out;
}

}  // namespace

void build_interp_form(Program& prog) {
  const std::vector<Insn>& in = prog.exec_insns;
  std::vector<Insn> out = in;
  std::vector<InterpObjCall> calls;
  const size_t n = in.size();
  ArgVals vals;
  vals.reset();
  size_t run_start = 0;  // first move of the run ending at pc
  for (size_t pc = 0; pc < n; ++pc) {
    const Insn& insn = in[pc];
    if (apply_arg_move(&insn, vals)) {
      if (insn.code == isa::kLdImm64) ++pc;
      continue;
    }
    const HelperProto* proto = nullptr;
    if (isa::is_kfunc_call(insn) && insn.imm >= 0 &&
        static_cast<size_t>(insn.imm) < prog.kfuncs.size())
      proto = prog.kfuncs[static_cast<size_t>(insn.imm)];
    if (proto != nullptr && proto->slot_fn != nullptr &&
        proto->obj_call != HelperProto::ObjCall::kNone) {
      const size_t head = run_start < pc ? run_start : pc;
      out[head].code = proto->obj_call == HelperProto::ObjCall::kNew ? kExecObjNew : kExecObjDrop;
      out[head].imm = static_cast<int32_t>(calls.size());
      calls.push_back(make_obj_call(prog, *proto, vals, static_cast<uint32_t>(pc - head),
                                    pc + 1 < n ? &in[pc + 1] : nullptr));
      out[head].off = static_cast<int16_t>(pc - head + 1 + (calls.back().null_branch ? 1 : 0));
    }
    if (insn.code == isa::kLdImm64) ++pc;
    vals.reset();
    run_start = pc + 1;
  }
  // `add K` and the jump after it (fused_add_jump_code).
  for (size_t pc = 0; pc + 1 < n; ++pc) {
    const uint8_t code = in[pc].code;
    if (code == isa::kLdImm64) {
      ++pc;
      continue;
    }
    if (out[pc].code != code) continue;  // fused above
    const bool add64 = code == (isa::kClassAlu64 | isa::kSrcK | isa::kAluAdd);
    const bool add32 = code == (isa::kClassAlu | isa::kSrcK | isa::kAluAdd);
    if (!add64 && !add32) continue;
    if (const uint8_t fused = fused_add_jump_code(add32, in[pc + 1].code)) out[pc].code = fused;
  }
  if (!calls.empty()) {
    const std::vector<uint8_t> live = args_live_after(prog);
    const ObjFacts facts = find_obj_facts(prog);
    // The known variants: a drop the facts give its object's size (and
    // whose handler needs no null branch and no clobbering), then the news
    // whose objects such drops get.
    std::vector<bool> new_known(n, false);
    for (size_t pc = 0; pc < n; ++pc) {
      if (facts.access[pc] && out[pc].code == in[pc].code) {
        if (const uint8_t c = obj_access_code(in[pc].code)) out[pc].code = c;
      }
      const uint8_t code = out[pc].code;
      if (code != kExecObjNew && code != kExecObjDrop) continue;
      InterpObjCall& f = calls[static_cast<size_t>(out[pc].imm)];
      const size_t call = pc + f.call_off;
      f.clobber = live[call];
      if (f.domain == nullptr) continue;
      if (code == kExecObjNew) {
        f.lists = f.domain->global_ma.class_lists(f.cls);
      } else if (const uint32_t size = facts.drop[call];
                 size != 0 && size <= kInlineObjMax && maps::obj_class(size) >= 0 &&
                 f.arg_reg[0] != InterpObjCall::kArgConst && !f.null_branch && f.clobber == 0) {
        f.size = size;
        f.cls = static_cast<uint32_t>(maps::obj_class(size));
        f.owned = maps::obj_owned_state(*f.domain, size);
        f.freed = maps::obj_free_state(*f.domain, size);
        f.lists = f.domain->global_ma.class_lists(f.cls);
        out[pc].code = kExecObjDropKnown;
        new_known[facts.drop_from[call]] = true;
      }
    }
    for (size_t pc = 0; pc < n; ++pc) {
      if (out[pc].code != kExecObjNew) continue;
      const InterpObjCall& f = calls[static_cast<size_t>(out[pc].imm)];
      if (f.size != 0 && f.clobber == 0 && new_known[pc + f.call_off])
        out[pc].code = kExecObjNewKnown;
    }
  }
  prog.interp_insns = std::move(out);
  prog.interp_obj_calls = std::move(calls);
}

}  // namespace userbpf::vm
