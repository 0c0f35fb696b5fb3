// The JIT interface on hosts without a JIT backend (built instead of
// x86_64/ on other architectures): nothing compiles, programs run in the
// interpreter, and asking for the JIT is ENOTSUP.
#include "vm/jit/jit.h"

namespace userbpf::vm {

bool jit_supported() {
  return false;
}

Status jit_compile(Program& prog, const JitOptions&) {
  return make_error(ENOTSUP, "program '%s': no JIT for this machine", prog.name.c_str());
}

Status ensure_jit(Program& prog) {
  return jit_compile(prog, JitOptions{});
}

Status begin_jit_loop(RunLoop&, Program& prog, RunContext&) {
  return jit_compile(prog, JitOptions{});
}

Result<uint64_t> jit_run(Program& prog, RunContext&) {
  return jit_compile(prog, JitOptions{}).take_error();
}

Result<uint64_t> jit_run_callback(Program& prog, RunContext&, uint64_t, const uint64_t (&)[5]) {
  return jit_compile(prog, JitOptions{}).take_error();
}

Result<JitCode> jit_code(const Program& prog) {
  return make_error(EINVAL, "program '%s' is not compiled", prog.name.c_str());
}

uint64_t jit_compile_ns(const Program&) {
  return 0;
}

uint32_t jit_checked_accesses(const Program&) {
  return 0;
}

JitLoopStats jit_loop_stats(const Program&) {
  return {};
}

}  // namespace userbpf::vm
