// `userbpf exec MEMORY_HEX`: the plugin protocol of public ISA conformance
// suites. The program arrives as hex bytes on stdin, the input memory as hex
// in the first argument; r1 points to that memory and r2 holds its size; r0
// is printed in hex on stdout. A program that fails to load or faults exits
// non-zero with the reason on stderr. `--engine interp|jit` picks the engine
// (default: the JIT where supported, like `userbpf run`).
#include <cinttypes>
#include <cstring>
#include <iostream>
#include <iterator>

#include "cli.h"
#include "helpers/registry.h"
#include "vm/jit/jit.h"
#include "vm/run_context.h"

namespace userbpf::cli {

int cmd_exec(const Args& args) {
  enum class Pick { kDefault, kInterp, kJit } pick = Pick::kDefault;
  std::vector<uint8_t> memory;
  bool have_memory = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::printf(
          "usage: userbpf exec [--engine interp|jit] [MEMORY_HEX] < PROGRAM_HEX\n"
          "  --engine interp|jit   execution engine (default: the JIT where supported)\n");
      return 0;
    } else if (a == "--engine") {
      if (i + 1 >= args.size()) return fail_msg("exec: --engine needs interp or jit");
      const std::string& v = args[++i];
      if (v == "interp")
        pick = Pick::kInterp;
      else if (v == "jit")
        pick = Pick::kJit;
      else
        return fail_msg("exec: unknown engine '%s' (interp or jit)", v.c_str());
    } else if (!have_memory) {
      if (!parse_hex(a, memory)) return fail_msg("exec: memory argument is not hex");
      have_memory = true;
    } else {
      return fail_msg("exec: unexpected argument '%s' (see userbpf exec --help)", a.c_str());
    }
  }
  const bool use_jit = pick != Pick::kInterp && vm::jit_supported();
  if (pick == Pick::kJit && !use_jit) return fail_msg("exec: no JIT for this machine");
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::vector<uint8_t> code;
  if (!parse_hex(text, code)) return fail_msg("exec: program on stdin is not hex");
  if (code.empty() || code.size() % sizeof(isa::Insn) != 0)
    return fail_msg("exec: program is %zu bytes, not a non-empty multiple of 8", code.size());

  vm::Program prog;
  prog.name = "exec";
  prog.insns.resize(code.size() / sizeof(isa::Insn));
  std::memcpy(prog.insns.data(), code.data(), code.size());
  prog.helpers = helpers::helper_table();
  Status st = vm::prepare_program(prog);
  if (!st.ok()) return fail(st.error());

  vm::RunContext rc;
  rc.prog = &prog;
  rc.ctx = memory.empty() ? nullptr : memory.data();
  rc.ctx_size = memory.size();
  rc.r2 = memory.size();
  if (use_jit) {
    Status jst = vm::ensure_jit(prog);
    if (!jst.ok()) return fail(jst.error());
  }
  auto r = use_jit ? vm::jit_run(prog, rc) : vm::interpret(prog, rc);
  if (!r.ok()) return fail(r.error());
  std::printf("%" PRIx64 "\n", r.value());
  return 0;
}

}  // namespace userbpf::cli
