// `userbpf exec MEMORY_HEX`: the plugin protocol of public ISA conformance
// suites. The program arrives as hex bytes on stdin, the input memory as hex
// in the first argument; r1 points to that memory and r2 holds its size; r0
// is printed in hex on stdout. A program that fails to load or faults exits
// non-zero with the reason on stderr.
#include <cinttypes>
#include <cstring>
#include <iostream>
#include <iterator>

#include "cli.h"
#include "helpers/registry.h"
#include "vm/run_context.h"

namespace userbpf::cli {

int cmd_exec(const Args& args) {
  if (!args.empty() && args[0] == "--help") {
    std::printf("usage: userbpf exec [MEMORY_HEX] < PROGRAM_HEX\n");
    return 0;
  }
  std::vector<uint8_t> memory;
  if (!args.empty() && !parse_hex(args[0], memory))
    return fail_msg("exec: memory argument is not hex");
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
  auto r = vm::interpret(prog, rc);
  if (!r.ok()) return fail(r.error());
  std::printf("%" PRIx64 "\n", r.value());
  return 0;
}

}  // namespace userbpf::cli
