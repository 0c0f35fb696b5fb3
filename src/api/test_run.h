// Running a program like the kernel's BPF_PROG_TEST_RUN: builds the context
// its type expects (xdp_md or __sk_buff over a packet, or the caller's blob),
// runs it `repeat` times and reports r0, mean time and the data after the run.
#pragma once

#include "api/internal.h"

namespace userbpf::internal {

Result<RunResult> test_run(RuntimeImpl& rt, vm::Program& prog, const RunOptions& opts);

}  // namespace userbpf::internal
