// Test scaffolding for the JIT: run a prepared program on the JIT (compiling
// it on first use) and on the interpreter, and compare everything observable.
#pragma once

#include <memory>

#include "maps/map.h"
#include "vm/jit/jit.h"
#include "vm/vm_test_util.h"

namespace userbpf::test {

struct MapDeleter {
  void operator()(maps::Map* m) const { m->ops->free(m); }
};
using MapPtr = std::unique_ptr<maps::Map, MapDeleter>;

inline Result<uint64_t> run_on_jit(vm::Program& prog, vm::RunContext& rc) {
  Status st = vm::ensure_jit(prog);
  if (!st.ok()) return st.take_error();
  return vm::jit_run(prog, rc);
}

}  // namespace userbpf::test

namespace userbpf::test {

// Everything a run shows: result or error, fault record, budget left, and
// the context bytes after the run.
struct EngineRun {
  bool ok = false;
  uint64_t r0 = 0;
  int err = 0;
  std::string message;
  vm::Fault fault;
  uint64_t budget_left = 0;
  std::vector<uint8_t> ctx;
};

inline EngineRun run_engine(vm::Program& prog, bool jit, std::vector<uint8_t> ctx,
                            uint64_t budget = 1ull << 32) {
  vm::RunContext rc;
  rc.ctx = ctx.empty() ? nullptr : ctx.data();
  rc.ctx_size = ctx.size();
  rc.insn_budget = budget;
  Result<uint64_t> r = jit ? run_on_jit(prog, rc) : vm::interpret(prog, rc);
  EngineRun out;
  out.ok = r.ok();
  if (r.ok()) {
    out.r0 = r.value();
  } else {
    out.err = r.error().code;
    out.message = r.error().message;
  }
  out.fault = rc.fault;
  out.budget_left = rc.insn_budget;
  out.ctx = std::move(ctx);
  return out;
}

// Runs prog on both engines with the same inputs; expects identical outcomes.
// Returns the JIT's run.
inline EngineRun expect_same(vm::Program& prog, const std::vector<uint8_t>& ctx = {},
                             uint64_t budget = 1ull << 32, const std::string& what = "",
                             bool exact_addr = true) {
  EngineRun i = run_engine(prog, false, ctx, budget);
  EngineRun j = run_engine(prog, true, ctx, budget);
  EXPECT_NE(prog.jit.load(), nullptr) << what;
  EXPECT_EQ(i.ok, j.ok) << what << "\ninterp: " << i.message << "\njit: " << j.message;
  EXPECT_EQ(i.r0, j.r0) << what;
  EXPECT_EQ(i.err, j.err) << what;
  if (exact_addr) {
    EXPECT_EQ(i.message, j.message) << what;
    EXPECT_EQ(i.fault.addr, j.fault.addr) << what;
  } else {
    EXPECT_EQ(i.message.substr(0, i.message.rfind(" at ")),
              j.message.substr(0, j.message.rfind(" at ")))
        << what;
  }
  EXPECT_EQ(i.fault.pc, j.fault.pc) << what;
  EXPECT_EQ(i.fault.what, j.fault.what) << what;
  // After a fault the interpreter leaves the budget as of its last call
  // (it is not written back on every stop); only a completed run defines it.
  if (i.ok) EXPECT_EQ(i.budget_left, j.budget_left) << what;
  EXPECT_EQ(i.ctx, j.ctx) << what;
  return j;
}

}  // namespace userbpf::test
