// Program: a loaded program's identity, disassembly, statistics and runs.
#include "api/internal.h"
#include "api/test_run.h"
#include "isa/disasm.h"

namespace userbpf {

const std::string& Program::name() const { return h_->prog->name; }
const std::string& Program::section() const { return h_->prog->section; }
const char* Program::type_name() const { return vm::prog_type_name(h_->prog->type); }
bool Program::sleepable() const { return h_->prog->sleepable; }
size_t Program::insn_count() const { return h_->prog->insns.size(); }

std::string Program::disassemble() const {
  return isa::disassemble_program(h_->prog->insns.data(), h_->prog->insns.size());
}

Result<RunResult> Program::run(const RunOptions& opts) const {
  return internal::test_run(*h_->rt, *h_->prog, opts);
}

ProgramStats Program::stats() const {
  const auto& s = h_->prog->stats;
  return ProgramStats{s.run_cnt.load(std::memory_order_relaxed),
                      s.run_time_ns.load(std::memory_order_relaxed),
                      s.faults.load(std::memory_order_relaxed),
                      s.misses.load(std::memory_order_relaxed)};
}

}  // namespace userbpf
