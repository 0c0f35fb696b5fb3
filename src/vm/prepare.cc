// prepare_program(): checks a linked program and builds its executable form.
//
// What is checked here is what makes a run safe for the engines without a
// verifier: every instruction well formed (isa::validate_insn), every jump,
// call and callback target inside the program, inside its function and not on
// the second slot of an ld_imm64, every function ending in exit or an
// unconditional jump (so pc never runs off the end), every helper, kfunc and
// map reference resolvable. Memory safety is the engines' run-time job.
#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>

#include "isa/decode.h"
#include "isa/opcodes.h"
#include "vm/program.h"

namespace userbpf::vm {

static_assert(isa::opcode_info(kExecMovsx64).kind == isa::OpKind::kInvalid &&
                  isa::opcode_info(kExecMovsx32).kind == isa::OpKind::kInvalid &&
                  isa::opcode_info(kExecAddrSpaceCast).kind == isa::OpKind::kInvalid &&
                  isa::opcode_info(kExecObjNew).kind == isa::OpKind::kInvalid &&
                  isa::opcode_info(kExecObjDrop).kind == isa::OpKind::kInvalid,
              "executable-form opcodes must be invalid in the ISA");
namespace {

using isa::Insn;

// The kernel's limit for privileged loads (BPF_COMPLEXITY_LIMIT_INSNS); an
// empty or larger program is E2BIG, as in bpf_prog_load().
constexpr size_t kMaxInsns = 1000000;

[[gnu::format(printf, 4, 5)]] Error prog_error(const Program& prog, int code, size_t pc,
                                               const char* fmt, ...) {
  char msg[384];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  return make_error(code, "program '%s': pc %zu: %s", prog.name.c_str(), pc, msg);
}

bool ends_function(const Insn& insn) {
  return insn.code == isa::kExit || insn.code == (isa::kClassJmp | isa::kJmpJa) ||
         insn.code == (isa::kClassJmp32 | isa::kJmpJa);
}

Status check_call_target(const Program& prog, const HelperProto* proto, size_t pc, const char* what,
                         int64_t id) {
  if (proto == nullptr || proto->fn == nullptr) {
    return prog_error(prog, EINVAL, pc, "unknown %s %" PRId64, what, id);
  }
  if (proto->sleepable_only && !prog.sleepable) {
    return prog_error(prog, EINVAL, pc, "%s %s may sleep; program is not sleepable", what,
                      proto->name ? proto->name : "?");
  }
  // The engines call a slot_fn bare: it must need nothing else.
  if (proto->slot_fn != nullptr && !call_needs_nothing(*proto)) {
    return prog_error(prog, EINVAL, pc,
                      "%s %s has a slot_fn but checked arguments, a callback, a packet move or "
                      "a granted return",
                      what, proto->name ? proto->name : "?");
  }
  return Status::Ok();
}

// Resolves an ld_imm64 of a map or map value into its 64-bit address.
Result<uint64_t> resolve_map_ref(const Program& prog, size_t pc, const Insn& lo, const Insn& hi) {
  const uint32_t idx = static_cast<uint32_t>(lo.imm);
  if (idx >= prog.maps.size() || prog.maps[idx] == nullptr) {
    return prog_error(prog, EINVAL, pc, "map index %u out of range (%zu maps)", idx,
                      prog.maps.size());
  }
  maps::Map* map = prog.maps[idx];
  if (lo.src == isa::kPseudoMapFd || lo.src == isa::kPseudoMapIdx) {
    return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(map));
  }
  const uint32_t off = static_cast<uint32_t>(hi.imm);
  void* value =
      map->ops && map->ops->direct_value_addr ? map->ops->direct_value_addr(map) : nullptr;
  if (value == nullptr) {
    return prog_error(prog, EINVAL, pc, "map '%s' has no direct value address",
                      map->attr.name.c_str());
  }
  if (off >= map->attr.value_size) {
    return prog_error(prog, EINVAL, pc, "offset %u past the value of map '%s' (%u bytes)", off,
                      map->attr.name.c_str(), map->attr.value_size);
  }
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(value)) + off;
}

}  // namespace

Status prepare_program(Program& prog) {
  prog.prepared = false;
  const std::vector<Insn>& in = prog.insns;
  const size_t n = in.size();
  if (n == 0 || n > kMaxInsns) {
    return make_error(E2BIG, "program '%s': %zu instructions (must be 1..%zu)", prog.name.c_str(),
                      n, kMaxInsns);
  }

  // Pass 1: each instruction on its own; which slots are ld_imm64 upper halves.
  std::vector<bool> second_slot(n, false);
  for (size_t pc = 0; pc < n; ++pc) {
    const Insn* next = pc + 1 < n ? &in[pc + 1] : nullptr;
    if (const char* why = isa::validate_insn(in[pc], next)) {
      return prog_error(prog, EINVAL, pc, "%s (code 0x%02x)", why, in[pc].code);
    }
    if (isa::is_ld_imm64(in[pc])) second_slot[++pc] = true;
  }

  // Function entries: pc 0, local call targets, callback (pseudo func) targets.
  auto valid_target = [&](int64_t t) {
    return t >= 0 && static_cast<size_t>(t) < n && !second_slot[static_cast<size_t>(t)];
  };
  std::vector<uint32_t> entries{0};
  for (size_t pc = 0; pc < n; ++pc) {
    if (second_slot[pc]) continue;
    const Insn& insn = in[pc];
    if (!isa::is_pseudo_call(insn) && !isa::is_pseudo_func(insn)) continue;
    const int64_t t = isa::branch_target(insn, pc);
    if (!valid_target(t)) {
      return prog_error(prog, EINVAL, pc, "%s target %" PRId64 " out of range",
                        isa::is_pseudo_call(insn) ? "call" : "callback", t);
    }
    entries.push_back(static_cast<uint32_t>(t));
  }
  std::sort(entries.begin(), entries.end());
  entries.erase(std::unique(entries.begin(), entries.end()), entries.end());

  // Pass 2: jumps stay inside their function; functions end in exit or goto;
  // calls and map references resolve. Builds the executable form.
  std::vector<Insn> out = in;
  size_t func = 0;  // index in entries of the function containing pc
  for (size_t pc = 0; pc < n; ++pc) {
    while (func + 1 < entries.size() && entries[func + 1] <= pc) ++func;
    const size_t func_end = func + 1 < entries.size() ? entries[func + 1] : n;
    if (pc + 1 == func_end && (second_slot[pc] || !ends_function(in[pc]))) {
      return prog_error(prog, EINVAL, pc,
                        "last instruction of the function at pc %u is not exit or goto",
                        entries[func]);
    }
    if (second_slot[pc]) continue;
    const Insn& insn = in[pc];
    const isa::OpKind kind = isa::opcode_info(insn.code).kind;

    if (insn.code == (isa::kClassAlu64 | isa::kSrcX | isa::kAluMov) && insn.off != 0) {
      out[pc].code = insn.off == 1 ? kExecAddrSpaceCast : kExecMovsx64;
    } else if (insn.code == (isa::kClassAlu | isa::kSrcX | isa::kAluMov) && insn.off != 0) {
      out[pc].code = kExecMovsx32;
    } else if (kind == isa::OpKind::kJa || kind == isa::OpKind::kJmpCond ||
               kind == isa::OpKind::kJcond) {
      const int64_t t = isa::branch_target(insn, pc);
      if (!valid_target(t) || static_cast<size_t>(t) < entries[func] ||
          static_cast<size_t>(t) >= func_end) {
        return prog_error(prog, EINVAL, pc, "jump to %" PRId64 " outside its function [%u, %zu)", t,
                          entries[func], func_end);
      }
    } else if (isa::is_helper_call(insn)) {
      const HelperProto* proto = nullptr;
      if (prog.helpers != nullptr && insn.imm >= 0 &&
          static_cast<uint32_t>(insn.imm) < kMaxHelperId) {
        proto = prog.helpers[insn.imm];
      }
      USERBPF_TRY(check_call_target(prog, proto, pc, "helper", insn.imm));
    } else if (isa::is_kfunc_call(insn)) {
      if (insn.imm < 0 || static_cast<size_t>(insn.imm) >= prog.kfuncs.size()) {
        return prog_error(prog, EINVAL, pc, "kfunc index %d out of range (%zu kfuncs)", insn.imm,
                          prog.kfuncs.size());
      }
      USERBPF_TRY(check_call_target(prog, prog.kfuncs[insn.imm], pc, "kfunc", insn.imm));
    } else if (kind == isa::OpKind::kLdImm64 && insn.src != 0) {
      uint64_t value = 0;
      switch (insn.src) {
        case isa::kPseudoFunc:
          value = make_callback_value(static_cast<uint32_t>(isa::branch_target(insn, pc)));
          break;
        case isa::kPseudoBtfId:
          return prog_error(prog, EOPNOTSUPP, pc, "ld_imm64 of a kernel BTF id is not supported");
        default: {
          // Map fd kinds (1, 2) are treated as indexes too: user space has no
          // map fds, the loader or the host picks the numbering.
          Result<uint64_t> r = resolve_map_ref(prog, pc, insn, in[pc + 1]);
          if (!r.ok()) return r.take_error();
          value = r.value();
        }
      }
      out[pc].src = 0;
      out[pc].imm = static_cast<int32_t>(static_cast<uint32_t>(value));
      out[pc + 1].imm = static_cast<int32_t>(static_cast<uint32_t>(value >> 32));
    }
  }

  prog.exec_insns = std::move(out);
  prog.func_entries = std::move(entries);
  build_interp_form(prog);
  prog.prepared = true;
  return Status::Ok();
}

}  // namespace userbpf::vm
