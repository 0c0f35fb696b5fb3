// The JIT engine's interface: compile a prepared Program to machine code,
// run it (same results and errors as vm::interpret), show the code.
//
// Contexts: jit_compile() may be called from any thread (it serializes on a
// lock and publishes Program::jit once); jit_run() from any context the
// interpreter may run in, signal handlers included, once the program is
// compiled (ensure_jit() compiles and so must not be called from a signal
// handler).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "vm/program.h"
#include "vm/run_context.h"

namespace userbpf::vm {

// Whether this build has a JIT for the host (x86-64 only).
bool jit_supported();

struct JitOptions {
  // Internal, for tests of the exception table: loads and stores at these pcs
  // compile as PROBE_MEM32 accesses, [probe_base + (u32)reg + off], unchecked;
  // a fault on an unmapped page yields 0 for a load and drops a store.
  // The arena map will set these for its accesses.
  std::vector<uint32_t> probe_pcs;
  uint64_t probe_base = 0;
  // Vectorized loops (array sums) use SSE2 even where the CPU has AVX2
  // (tests run both forms).
  bool no_avx2 = false;
};

// Compiles prog (prepared) if not compiled yet and publishes prog.jit.
Status ensure_jit(Program& prog);
// Compiles prog with opts, replacing nothing: fails with EEXIST if already compiled.
Status jit_compile(Program& prog, const JitOptions& opts);

// Runs the compiled prog with r1 = rc.ctx; like interpret(). EINVAL if not compiled.
Result<uint64_t> jit_run(Program& prog, RunContext& rc);
// Sets loop up to run the compiled prog on rc (RunLoop: run_context.h).
// EINVAL if not compiled.
Status begin_jit_loop(RunLoop& loop, Program& prog, RunContext& rc);
// Like interpret_callback(), on the JIT.
Result<uint64_t> jit_run_callback(Program& prog, RunContext& rc, uint64_t fn,
                                  const uint64_t (&args)[5]);

// The machine code of a compiled program: bytes, and the code offset of every
// BPF pc (UINT32_MAX for the second slot of ld_imm64).
struct JitCode {
  const uint8_t* code = nullptr;
  size_t size = 0;
  std::vector<uint32_t> pc_offset;
};
Result<JitCode> jit_code(const Program& prog);

// Disassembly of the compiled program, each BPF pc's instructions under a
// "; pc N" line (capstone if the build has it, else hex bytes).
Result<std::string> jit_disassemble(const Program& prog);

// Nanoseconds the last compile of prog took (for benchmarks).
uint64_t jit_compile_ns(const Program& prog);
// Loads and stores the compiled code checks at run time (the others were
// proven inside the frame, a map value or an object: emit_facts.cc).
uint32_t jit_checked_accesses(const Program& prog);
// How the compiled code runs the program's simple loops (emit_facts.cc,
// find_loop_plans): constants kept in registers for a whole loop, and loops
// whose budget is charged once at their entry.
struct JitLoopStats {
  uint32_t hoisted_consts = 0;
  uint32_t charged_at_entry = 0;
  uint32_t vectorized = 0;  // array sums run as SSE2 code
};
JitLoopStats jit_loop_stats(const Program& prog);

}  // namespace userbpf::vm
