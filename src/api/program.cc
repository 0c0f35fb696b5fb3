// Program: a loaded program's identity, disassembly, statistics and runs.
#include <cstdio>

#include "api/internal.h"
#include "api/test_run.h"
#include "isa/disasm.h"
#include "vm/jit/jit.h"

namespace userbpf {

const std::string& Program::name() const {
  return h_->prog->name;
}
const std::string& Program::section() const {
  return h_->prog->section;
}
const char* Program::type_name() const {
  return vm::prog_type_name(h_->prog->type);
}
bool Program::sleepable() const {
  return h_->prog->sleepable;
}
size_t Program::insn_count() const {
  return h_->prog->insns.size();
}

std::string Program::disassemble() const {
  const vm::Program& p = *h_->prog;
  isa::DisasmOptions opts;
  opts.symbol = p.name;
  // Name what the linked form holds as numbers: maps, helpers, kfuncs.
  opts.note = [&p](size_t, const isa::Insn& insn) -> std::string {
    char buf[160];
    if (insn.code == isa::kLdImm64 &&
        (insn.src == isa::kPseudoMapIdx || insn.src == isa::kPseudoMapIdxValue)) {
      if (insn.imm < 0 || static_cast<size_t>(insn.imm) >= p.maps.size()) return {};
      const char* name = p.maps[static_cast<size_t>(insn.imm)]->attr.name.c_str();
      if (insn.src == isa::kPseudoMapIdx) return std::string("map ") + name;
      std::snprintf(buf, sizeof(buf), "map %s value + 0x%x", name,
                    static_cast<uint32_t>((&insn)[1].imm));
      return buf;
    }
    if (insn.code == isa::kCall && insn.src == isa::kPseudoCallHelper && p.helpers &&
        insn.imm >= 0 && static_cast<uint32_t>(insn.imm) < vm::kMaxHelperId && p.helpers[insn.imm])
      return p.helpers[insn.imm]->name;
    if (insn.code == isa::kCall && insn.src == isa::kPseudoKfuncCall && insn.imm >= 0 &&
        static_cast<size_t>(insn.imm) < p.kfuncs.size())
      return p.kfuncs[static_cast<size_t>(insn.imm)]->name;
    return {};
  };
  return isa::disassemble_program(p.insns.data(), p.insns.size(), opts);
}

Result<std::string> Program::disassemble_jited() const {
  if (!vm::jit_supported()) return make_error(ENOTSUP, "no JIT for this machine");
  USERBPF_TRY(vm::ensure_jit(*h_->prog));
  return vm::jit_disassemble(*h_->prog);
}

Result<RunResult> Program::run(const RunOptions& opts) const {
  return internal::test_run(*h_->rt, *h_->prog, opts);
}

ProgramStats Program::stats() const {
  const auto& s = h_->prog->stats;
  return ProgramStats{
      s.run_cnt.load(std::memory_order_relaxed), s.run_time_ns.load(std::memory_order_relaxed),
      s.faults.load(std::memory_order_relaxed), s.misses.load(std::memory_order_relaxed)};
}

}  // namespace userbpf
