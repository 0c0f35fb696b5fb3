// Load-time resolution of bpf_obj_new_impl / bpf_percpu_obj_new_impl calls:
// what the kernel verifier does in check_kfunc_call + fixup_kfunc_call. The
// type id in r1 must be a constant at the call (bpf_core_type_id_local());
// a small constant propagation over the linked program finds it. The type
// must be a struct of the object's BTF within the allocator's sizes; its size
// goes into Program::obj_sizes and into a per-type copy of the kfunc's proto
// (ret_size: the object's bytes, which the JIT's facts follow; the engines'
// region logic finds objects by address, obj_region).
//
// Then the fixup proper: before each resolved bpf_obj_new call the loader
// inserts `r1 = size; r2 = domain` (ld_imm64), before each bpf_obj_drop call
// `r2 = domain`, and points the calls at the *_resolved kfuncs
// (helpers/helpers_obj.h), which need no lookup at run time. r1 and r2 are
// dead after a call, so the program sees no difference; jumps to a call land
// on its inserted instructions (as in the kernel's bpf_patch_insn_data), so
// no path reaches a rewritten call without them.
#include <cinttypes>
#include <cstring>
#include <map>
#include <string>

#include "helpers/helpers_obj.h"
#include "loader/insn_patch.h"
#include "loader/open_internal.h"
#include "maps/bpf_obj.h"
#include "mem/domain.h"

namespace userbpf::loader {
namespace {

using isa::Insn;

// Register value at a pc: not reached yet, a known constant, or anything.
struct RegVal {
  enum Kind : uint8_t { kUnreached, kConst, kTop } kind = kUnreached;
  uint64_t v = 0;
  bool operator==(const RegVal&) const = default;
};
struct RegState {
  RegVal r[isa::kNumRegs];
  bool operator==(const RegState&) const = default;
};

RegState all_top() {
  RegState s;
  for (RegVal& v : s.r) v.kind = RegVal::kTop;
  return s;
}

RegVal meet(const RegVal& a, const RegVal& b) {
  if (a.kind == RegVal::kUnreached) return b;
  if (b.kind == RegVal::kUnreached) return a;
  if (a.kind == RegVal::kConst && b.kind == RegVal::kConst && a.v == b.v) return a;
  return RegVal{RegVal::kTop, 0};
}

// Constants in registers at every pc (forward data flow to a fixed point).
// Function entries (the program's, bpf-to-bpf call and callback targets)
// start with unknown registers; calls clobber r0-r5.
std::vector<RegState> propagate_constants(const std::vector<Insn>& insns) {
  const size_t n = insns.size();
  std::vector<RegState> in(n);
  std::vector<bool> queued(n, false);
  std::vector<size_t> work;
  auto push = [&](size_t pc, const RegState& s) {
    if (pc >= n) return;
    RegState m;
    for (int i = 0; i < isa::kNumRegs; i++) m.r[i] = meet(in[pc].r[i], s.r[i]);
    if (m == in[pc] && in[pc].r[0].kind != RegVal::kUnreached) return;
    in[pc] = m;
    if (!queued[pc]) {
      queued[pc] = true;
      work.push_back(pc);
    }
  };
  push(0, all_top());
  for (size_t pc = 0; pc < n; pc++) {
    const Insn& in_ = insns[pc];
    if (in_.code == isa::kLdImm64) {
      if (in_.src == isa::kPseudoFunc) push(pc + 1 + in_.imm, all_top());
      pc++;
    } else if (in_.code == isa::kCall && in_.src == isa::kPseudoCall) {
      push(pc + 1 + in_.imm, all_top());
    }
  }
  const RegVal top{RegVal::kTop, 0};
  while (!work.empty()) {
    const size_t pc = work.back();
    work.pop_back();
    queued[pc] = false;
    RegState s = in[pc];
    const Insn& i = insns[pc];
    const uint8_t cls = isa::insn_class(i.code);
    const uint8_t op = isa::insn_op(i.code);
    RegVal* dst = i.dst < isa::kNumRegs ? &s.r[i.dst] : nullptr;
    if (i.code == isa::kLdImm64) {
      if (pc + 1 >= n) continue;
      if (dst)
        *dst = i.src == 0 ? RegVal{RegVal::kConst,
                                   static_cast<uint32_t>(i.imm) |
                                       uint64_t{static_cast<uint32_t>(insns[pc + 1].imm)} << 32}
                          : top;
      push(pc + 2, s);
      continue;
    }
    switch (cls) {
      case isa::kClassAlu:
      case isa::kClassAlu64: {
        if (!dst) break;
        const bool is64 = cls == isa::kClassAlu64;
        if (op == isa::kAluMov && i.off == 0) {
          RegVal v = isa::insn_src(i.code) == isa::kSrcK
                         ? RegVal{RegVal::kConst, static_cast<uint64_t>(int64_t{i.imm})}
                         : (i.src < isa::kNumRegs ? s.r[i.src] : top);
          if (v.kind == RegVal::kConst && !is64) v.v &= 0xffffffffu;
          *dst = v;
        } else {
          *dst = top;
        }
        break;
      }
      case isa::kClassLdx:
        if (dst) *dst = top;
        break;
      case isa::kClassLd:  // legacy ld_abs/ld_ind: r0 result, r1-r5 clobbered
        for (int r = 0; r <= 5; r++) s.r[r] = top;
        break;
      case isa::kClassStx:
        if (isa::insn_mode(i.code) == isa::kModeAtomic && (i.imm & isa::kAtomicFetch)) {
          if (i.imm == isa::kAtomicCmpxchg)
            s.r[0] = top;
          else if (i.src < isa::kNumRegs)
            s.r[i.src] = top;
        }
        break;
      case isa::kClassJmp:
      case isa::kClassJmp32:
        if (op == isa::kJmpExit) continue;
        if (op == isa::kJmpCall) {
          for (int r = 0; r <= 5; r++) s.r[r] = top;
          break;
        }
        if (op == isa::kJmpJa) {
          push(pc + 1 + (cls == isa::kClassJmp ? i.off : i.imm), s);
          continue;
        }
        push(pc + 1 + i.off, s);  // conditional jumps and may_goto
        break;
      default:
        break;
    }
    push(pc + 1, s);
  }
  return in;
}

bool is_obj_new(const vm::HelperProto* p, bool* percpu) {
  if (p == nullptr || p->name == nullptr) return false;
  *percpu = std::strcmp(p->name, "bpf_percpu_obj_new_impl") == 0;
  return *percpu || std::strcmp(p->name, "bpf_obj_new_impl") == 0;
}

bool is_obj_drop(const vm::HelperProto* p, bool* percpu) {
  if (p == nullptr || p->name == nullptr) return false;
  *percpu = std::strcmp(p->name, "bpf_percpu_obj_drop_impl") == 0;
  return *percpu || std::strcmp(p->name, "bpf_obj_drop_impl") == 0;
}

Insn mov64_imm(uint8_t dst, int32_t imm) {
  return Insn{static_cast<uint8_t>(isa::kClassAlu64 | isa::kAluMov | isa::kSrcK), dst, 0, 0, imm};
}

// ld_imm64 dst = v: two instructions.
void push_ld_imm64(std::vector<Insn>& out, uint8_t dst, uint64_t v) {
  out.push_back(Insn{isa::kLdImm64, dst, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v))});
  out.push_back(Insn{0, 0, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v >> 32))});
}

}  // namespace

Status resolve_obj_new_calls(vm::Program& prog, const Btf* btf, mem::MemDomain& domain) {
  bool any_new = false, any_drop = false, percpu = false;
  for (const vm::HelperProto* k : prog.kfuncs) {
    any_new = any_new || is_obj_new(k, &percpu);
    any_drop = any_drop || is_obj_drop(k, &percpu);
  }
  if (!any_new && !any_drop) return Status::Ok();
  const std::vector<RegState> regs =
      any_new ? propagate_constants(prog.insns) : std::vector<RegState>{};
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> proto_for;  // (kfunc idx, type) -> idx
  std::map<uint32_t, uint32_t> drop_proto_for;                  // kfunc idx -> idx
  std::vector<InsnPatch> patches;
  const auto dom = reinterpret_cast<uint64_t>(&domain);
  for (size_t pc = 0; pc < prog.insns.size(); pc++) {
    Insn& in = prog.insns[pc];
    if (in.code == isa::kLdImm64) {
      pc++;
      continue;
    }
    if (in.code != isa::kCall || in.src != isa::kPseudoKfuncCall || in.imm < 0 ||
        static_cast<size_t>(in.imm) >= prog.kfuncs.size())
      continue;
    const vm::HelperProto* kf = prog.kfuncs[static_cast<size_t>(in.imm)];
    if (is_obj_drop(kf, &percpu)) {
      const auto idx = static_cast<uint32_t>(in.imm);
      auto it = drop_proto_for.find(idx);
      if (it == drop_proto_for.end()) {
        auto p = std::make_unique<vm::HelperProto>(*kf);
        p->fn = percpu ? &helpers::bpf_percpu_obj_drop_resolved : &helpers::bpf_obj_drop_resolved;
        if (!percpu) {
          p->slot_fn = &helpers::bpf_obj_drop_in_slot;
          p->obj_call = vm::HelperProto::ObjCall::kDrop;
        }
        prog.kfuncs.push_back(p.get());
        prog.own_kfuncs.push_back(std::move(p));
        it = drop_proto_for.emplace(idx, static_cast<uint32_t>(prog.kfuncs.size() - 1)).first;
      }
      in.imm = static_cast<int32_t>(it->second);
      InsnPatch patch{pc, {}};
      push_ld_imm64(patch.insns, 2, dom);
      patches.push_back(std::move(patch));
      continue;
    }
    if (!is_obj_new(kf, &percpu)) continue;
    const char* name = kf->name;
    const RegVal& r1 = regs[pc].r[1];
    if (r1.kind == RegVal::kUnreached) continue;  // dead code
    if (r1.kind != RegVal::kConst)
      return make_error(EINVAL,
                        "insn %zu: %s: the type id in r1 is not a constant (pass "
                        "bpf_core_type_id_local(struct ...))",
                        pc, name);
    const BtfType* t =
        btf && r1.v <= UINT32_MAX ? btf->type_by_id(static_cast<uint32_t>(r1.v)) : nullptr;
    if (t == nullptr || t->kind != BtfKind::kStruct)
      return make_error(EINVAL,
                        "insn %zu: %s: type id %" PRIu64
                        " is %s, expected a struct of "
                        "the object's BTF",
                        pc, name, r1.v, t ? btf_kind_name(t->kind) : "not in the object's BTF");
    const auto type_id = static_cast<uint32_t>(r1.v);
    const std::string tname(btf->type_name(type_id));
    const uint32_t size = t->size_or_type;
    const uint32_t max = percpu ? maps::kPercpuObjMaxSize : maps::kObjMaxSize;
    if (size == 0 || size > max)
      return make_error(size ? E2BIG : EINVAL,
                        "insn %zu: %s: struct %s is %u bytes; objects must be 1..%u bytes", pc,
                        name, tname.c_str(), size, max);
    auto fields = find_special_fields(*btf, type_id, size, "struct " + tname);
    if (!fields.ok()) return fields.take_error();
    if (*fields)
      return make_error(ENOTSUP,
                        "insn %zu: %s: struct %s has special fields (kptr, bpf_spin_lock, ...); "
                        "objects holding them are not supported",
                        pc, name, tname.c_str());
    if (percpu && !domain.percpu_ma(static_cast<uint32_t>(maps::percpu_obj_class(size))))
      return make_error(ENOMEM, "insn %zu: %s: cannot create the per-CPU allocator for %u bytes",
                        pc, name, size);
    if (prog.obj_sizes.size() <= type_id) prog.obj_sizes.resize(type_id + 1, 0);
    prog.obj_sizes[type_id] = size;
    const auto key = std::make_pair(static_cast<uint32_t>(in.imm), type_id);
    auto it = proto_for.find(key);
    if (it == proto_for.end()) {
      auto p = std::make_unique<vm::HelperProto>(*kf);
      p->fn = percpu ? &helpers::bpf_percpu_obj_new_resolved : &helpers::bpf_obj_new_resolved;
      if (!percpu) {
        p->slot_fn = &helpers::bpf_obj_new_in_slot;
        p->obj_call = vm::HelperProto::ObjCall::kNew;
      }
      if (!percpu) {  // a per-CPU object is reached through bpf_this_cpu_ptr
        p->ret = vm::RetKind::kMemOrNull;
        p->ret_size = size;
      }
      prog.kfuncs.push_back(p.get());
      prog.own_kfuncs.push_back(std::move(p));
      it = proto_for.emplace(key, static_cast<uint32_t>(prog.kfuncs.size() - 1)).first;
    }
    in.imm = static_cast<int32_t>(it->second);
    InsnPatch patch{pc, {mov64_imm(1, static_cast<int32_t>(size))}};
    push_ld_imm64(patch.insns, 2, dom);
    patches.push_back(std::move(patch));
  }
  return insert_patches(prog.insns, patches);
}

}  // namespace userbpf::loader
