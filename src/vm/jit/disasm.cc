// `prog dump --jited`: the machine code of a compiled program, each BPF pc's
// instructions under a "; pc N" line, through capstone when the build has it
// (USERBPF_HAVE_CAPSTONE), else as hex bytes.
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "vm/jit/jit.h"

#ifdef USERBPF_HAVE_CAPSTONE
#include <capstone/capstone.h>
#endif

namespace userbpf::vm {
namespace {

void append(std::string& out, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void append(std::string& out, const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  out += buf;
}

// Which pc starts at each code offset ("; pc N" headers).
std::string pc_header(const JitCode& c, size_t off, size_t& next_pc) {
  std::string out;
  while (next_pc < c.pc_offset.size() &&
         (c.pc_offset[next_pc] == UINT32_MAX || c.pc_offset[next_pc] <= off)) {
    if (c.pc_offset[next_pc] != UINT32_MAX) append(out, "; pc %zu\n", next_pc);
    ++next_pc;
  }
  return out;
}

}  // namespace

Result<std::string> jit_disassemble(const Program& prog) {
  Result<JitCode> code = jit_code(prog);
  if (!code.ok()) return code.take_error();
  const JitCode& c = code.value();
  std::string out;
  size_t next_pc = 0;
  const size_t body = c.pc_offset.empty() ? 0 : c.pc_offset[0];
  append(out, "; entry trampoline and fault exits: %zu bytes\n", body);
#ifdef USERBPF_HAVE_CAPSTONE
  csh h;
  if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) == CS_ERR_OK) {
    cs_insn* insn = nullptr;
    const size_t n = cs_disasm(h, c.code + body, c.size - body, body, 0, &insn);
    for (size_t i = 0; i < n; ++i) {
      out += pc_header(c, insn[i].address, next_pc);
      append(out, "  %6" PRIx64 ":  %-8s %s\n", insn[i].address, insn[i].mnemonic, insn[i].op_str);
    }
    if (n > 0) cs_free(insn, n);
    cs_close(&h);
    return out;
  }
#endif
  for (size_t off = body; off < c.size; off += 16) {
    out += pc_header(c, off, next_pc);
    append(out, "  %6zx: ", off);
    for (size_t i = off; i < off + 16 && i < c.size; ++i) append(out, " %02x", c.code[i]);
    out += '\n';
  }
  return out;
}

}  // namespace userbpf::vm
