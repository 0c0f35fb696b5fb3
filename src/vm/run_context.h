// The state of one program run that helpers and engines share: the context
// and packet regions, the CPU slot, where bpf_printk output goes, and how a
// helper calls back into the program (bpf_loop, for_each_map_elem).
//
// Contexts: a RunContext lives on the stack of the thread running the program
// (possibly a signal handler); current_run() is that thread's innermost run,
// saved and restored around nested runs, so helpers find it without arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "vm/program.h"

namespace userbpf::vm {

// Where trace_printk / bpf_printk output goes (stderr by default, like
// trace_pipe). write() receives one formatted line, including its newline.
struct PrintSink {
  void (*write)(void* user, const char* data, size_t len) = nullptr;
  void* user = nullptr;
};
void stderr_print(void* user, const char* data, size_t len);
inline PrintSink default_print_sink() {
  return PrintSink{&stderr_print, nullptr};
}

// Why a run stopped early. Engines fill it and return an Error naming it.
struct Fault {
  uint32_t pc = 0;  // interp::kNoFaultPc: none (a run that returned holding objects)
  uint64_t addr = 0;
  std::string what;  // "out-of-bounds load of 4 bytes", "instruction budget exhausted", ...
};

struct RunContext {
  Program* prog = nullptr;

  // r1 at entry, and the region it points to.
  void* ctx = nullptr;
  size_t ctx_size = 0;
  // r2 at entry: 0 normally; the conformance plugin protocol passes the
  // memory size there.
  uint64_t r2 = 0;
  bool ctx_writable = true;

  // Packet region [data_meta, data_end) for xdp/tc/socket programs (may be
  // empty); legacy ld_abs/ld_ind read [data, data_end).
  uint8_t* data_meta = nullptr;
  uint8_t* data = nullptr;
  uint8_t* data_end = nullptr;
  // The buffer the packet lives in (the kernel's data_hard_start and hard
  // end): bpf_xdp_adjust_head/meta may move data_meta/data down towards
  // pkt_buf_start (less the kernel's xdp_frame reservation), adjust_tail may
  // grow data_end up to pkt_buf_end. nullptr when the run has no packet.
  uint8_t* pkt_buf_start = nullptr;
  uint8_t* pkt_buf_end = nullptr;

  uint32_t cpu = 0;  // CPU slot; bpf_get_smp_processor_id()
  uint32_t num_cpus = 1;
  PrintSink print = default_print_sink();

  // Instructions left before the run is stopped as a runaway loop.
  uint64_t insn_budget = 1ull << 32;

  // Calls a callback (a kFunc argument value) with five arguments and
  // returns its r0. Set by the engine running this program. On a fault inside
  // the callback, the engine records it and unwinds the whole run.
  uint64_t (*call_fn)(RunContext* rc, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3,
                      uint64_t a4, uint64_t a5) = nullptr;
  void* engine_state = nullptr;

  // Memory a helper lends the program while a callback it called runs (e.g.
  // for_each_map_elem's copy of an array index): readable, and writable if
  // loan_writable. The helper sets it around call_fn and restores the
  // previous loan afterwards (callbacks nest).
  const void* loan = nullptr;
  size_t loan_size = 0;
  bool loan_writable = false;

  Fault fault;
  bool faulted = false;

  // The bpf_spin_lock word this run holds (helpers_spin_lock.cc), nullptr
  // if none. A run that ends holding it releases it (RunLoop).
  uint32_t* spin_lock = nullptr;
  // The last lock word bpf_spin_lock found to be a lock field of a map of
  // spin_lock_prog (the check is a search over the program's maps).
  const uint32_t* spin_lock_checked = nullptr;
  const Program* spin_lock_prog = nullptr;

  RunContext* outer = nullptr;  // enclosing run on this thread (re-entrancy)
};

// The innermost run on this thread, nullptr outside programs.
RunContext* current_run();

// Makes rc current for the duration of a run (restores the outer one after).
class RunScope {
 public:
  explicit RunScope(RunContext& rc);
  ~RunScope();
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;

 private:
  RunContext& rc_;
};

// Repeated runs of one program on one RunContext (the host API's repeat
// loop, BPF_PROG_TEST_RUN with repeat): the engine's state (its stack, the
// region cache, the fault record, rc's callback hook and its place as the
// thread's current run) is set up once by begin_*_loop(), and each run()
// resets only what a run changes, so an empty program costs a few ns.
// Results are those of interpret()/jit_run() with the same rc; rc.insn_budget
// is each run's budget (and holds what the last run left, as after
// interpret()). Between runs the caller may change rc's packet bounds, cpu
// and budget, nothing else.
// Contexts: one thread, any context an engine may run in; prog and rc outlive
// the loop; loops nest LIFO (a signal handler running a program meanwhile
// uses its own RunContext and loop).
class RunLoop {
 public:
  RunLoop() = default;
  ~RunLoop() {
    if (end_fn != nullptr) end_fn(*this);
  }
  RunLoop(const RunLoop&) = delete;
  RunLoop& operator=(const RunLoop&) = delete;

  // One run from the program's entry with r1 = rc.ctx, r2 = rc.r2 (as they
  // were at begin_*_loop). Inline up to the engine's run: a run that does not
  // stop builds its Result here, where the caller's checks fold away.
  Result<uint64_t> run() { return finish(run_fn(*this, 0, entry_args)); }
  // One run of the function at entry (a callback value's pc) with r1-r5 = args.
  Result<uint64_t> run_at(uint32_t entry, const uint64_t* args) {
    return finish(run_fn(*this, entry, args));
  }

  // For the engines (begin_*_loop): their state lives in `state`. run_fn
  // runs once and returns r0, setting `stopped` if the run did not return
  // normally; stop_fn then gives its result (an Error, or 0 for an aborted
  // run).
  static constexpr size_t kStateBytes = 6 * 1024;
  Program* prog = nullptr;
  RunContext* rc = nullptr;
  uint64_t entry_args[5] = {};
  uint64_t (*run_fn)(RunLoop&, uint32_t entry, const uint64_t* args) = nullptr;
  Result<uint64_t> (*stop_fn)(RunLoop&, uint64_t r0) = nullptr;
  void (*end_fn)(RunLoop&) = nullptr;
  bool stopped = false;
  alignas(64) unsigned char state[kStateBytes];

 private:
  Result<uint64_t> finish(uint64_t r0) {
    if (!stopped && rc->spin_lock == nullptr) [[likely]]
      return r0;
    return finish_slow(r0);
  }
  // A run that stopped, or ended holding a bpf_spin_lock: the lock is
  // released (a fault may come in the middle of the critical section; the
  // kernel's verifier would have refused a program that returns holding
  // it) and a return holding it is an EINVAL error.
  Result<uint64_t> finish_slow(uint64_t r0);
};

// Empties rc's fault record. Only a run that faults writes it (and sets
// faulted first), so a loop clears it once at its start and then only after
// runs that faulted.
inline void clear_fault(RunContext& rc) {
  rc.faulted = false;
  rc.fault.pc = 0;
  rc.fault.addr = 0;
  rc.fault.what.clear();
}

// Whether a run of prog may write memory: a store, an atomic, or a helper
// or kfunc call (which may write through pointers). If not, a stack zeroed
// before a run is still zeroed after it.
bool may_write_memory(const Program& prog);

// Sets loop up to run prog (prepared) in the interpreter on rc.
Status begin_interp_loop(RunLoop& loop, Program& prog, RunContext& rc);

// Runs prog in the interpreter with r1 = rc.ctx. Returns r0, or an Error
// (EFAULT for bad memory access, E2BIG... see interp.cc) whose message names
// the pc and address; rc.fault holds the details.
Result<uint64_t> interpret(Program& prog, RunContext& rc);

// Runs the function a callback value names (make_callback_value(), e.g. a
// timer or work-queue callback registered by an earlier run) as a run of its
// own with r1-r5 = args. EINVAL if fn is not a function of prog; otherwise
// like interpret().
Result<uint64_t> interpret_callback(Program& prog, RunContext& rc, uint64_t fn,
                                    const uint64_t (&args)[5]);

}  // namespace userbpf::vm
