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
// run or onto the call runs the original instructions.
//
// A loop's counter update and its test or goto (`add K` and the jump right
// after it) are one dispatch too (fused_add_jump_code, program.h).
#include "isa/decode.h"
#include "isa/opcodes.h"
#include "maps/bpf_obj.h"
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
  prog.interp_insns = std::move(out);
  prog.interp_obj_calls = std::move(calls);
}

}  // namespace userbpf::vm
