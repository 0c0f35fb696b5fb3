// The interpreter's per-run state, shared by the dispatch loop (interp.cc) and
// its slow paths (interp_check.cc: memory regions, helper arguments, faults).
//
// Invariants (one run, one thread; a signal handler that runs a program gets
// its own InterpState on its own stack):
//   - stack_top - (depth + 1) * kStackSize .. stack_top is the current chain of
//     frames; frame d's r10 is stack_top - d * kStackSize. Frames deeper than
//     depth are not accessible (popped or not yet pushed).
//   - frames[d] holds the return pc and r6-r9 of frame d while frame d + 1 runs.
//   - frames below `zeroed` were cleared once in this run, so a program never
//     reads host stack bytes, only its own earlier writes.
//   - once stop != kRunning, every level unwinds: run_frames returns 0, call_fn
//     returns 0 without running anything, and interpret() reports the stop.
#pragma once

#include <cstdint>

#include "isa/insn.h"
#include "vm/helper_proto.h"
#include "vm/program.h"
#include "vm/run_context.h"

namespace userbpf::vm::interp {

// may_goto budget per run: the kernel's BPF_MAX_LOOPS.
inline constexpr uint64_t kMayGotoBudget = 8 * 1024 * 1024;
// Regions returned by helpers (kMemOrNull memory, map values) kept for fast
// checks; the oldest is dropped (map values then go back to access_ok).
// Array values take no slot: only the hit cache (interp_check.cc).
inline constexpr int kMaxGrants = 16;
// r1-r5 after a helper or kfunc call: the kernel marks them unreadable; a
// program that reads them anyway sees this recognizable value.
inline constexpr uint64_t kClobberedReg = 0xbadc0ffee0ddf00dull;

// [lo, lo + span): contains() is overflow-safe for any addr and size. No
// default member initializers: the grant array stays uninitialized per run.
struct Region {
  uintptr_t lo;
  uintptr_t span;
  bool writable;
  bool contains(uint64_t addr, uint64_t size) const {
    const uint64_t d = addr - lo;
    return d < span && size <= span - d;
  }
};

struct CallFrame {
  const isa::Insn* ret;      // instruction after the call
  uint64_t callee_saved[4];  // caller's r6-r9
};

enum class Stop : uint8_t { kRunning, kFaulted, kAborted /* ld_abs out of range: r0 = 0 */ };

struct InterpState {
  Program* prog = nullptr;
  RunContext* rc = nullptr;
  const isa::Insn* insns = nullptr;          // prog->interp_insns
  const InterpObjCall* obj_calls = nullptr;  // prog->interp_obj_calls
  uint8_t* stack_top = nullptr;
  int depth = -1;
  int zeroed = 0;
  CallFrame frames[isa::kMaxCallFrames];

  uint64_t budget = 0;  // instructions left (charged on backward jumps and calls)
  uint64_t may_goto_left = kMayGotoBudget;
  uint64_t user_base_hi = 0;           // addr_space_cast as0 -> as1 upper half
  const isa::Insn* call_pc = nullptr;  // helper call in progress (fault pc in callbacks)
  ObjRunState obj;                     // per run (helper_proto.h)

  Region hit{};  // last non-stack region an access hit (span 0: none)
  const maps::Map* hit_map = nullptr;
  Region grants[kMaxGrants];  // [0, min(num_grants, kMaxGrants)) are set
  uint32_t num_grants = 0;

  Stop stop = Stop::kRunning;
  int err = 0;
  uint32_t fault_pc = 0;
  uint64_t fault_addr = 0;
  char what[192];
};

// The upper 32 bits addr_space_cast gives arena pointers converted to user
// (as1) form. Hook for the arena: it will return the high half of the arena's
// user mapping (SPEC.md 6); no arena exists yet, so 0.
inline uint64_t arena_user_base_hi(const Program&) {
  return 0;
}

// Whether v is a callback value naming a function entry of prog.
bool is_callback_value(const Program& prog, uint64_t v);

// Accesses outside the current stack chain and the last-hit cache: context,
// packet, helper-granted memory, map memory. Updates the cache on a hit.
bool check_mem_slow(InterpState& s, uint64_t addr, uint64_t size, bool write);

[[gnu::always_inline]] inline bool check_mem_nonstack(InterpState& s, uint64_t addr, uint64_t size,
                                                      bool write) {
  if (s.hit.contains(addr, size) && (!write || s.hit.writable)) return true;
  return check_mem_slow(s, addr, size, write);
}

// Any region, the stack chain included (helper arguments).
bool check_mem(InterpState& s, uint64_t addr, uint64_t size, bool write);

// Checks a helper's or kfunc's pointer arguments (regs = r0..r5) against its
// proto; on failure records the fault and returns false. On success
// *map_out (if given) = the map of the last kConstMapPtr argument (nullptr
// if none): the map grant_return would find for a kMapValueOrNull return
// (grant_map_value then needs no search).
bool check_helper_args(InterpState& s, const HelperProto& proto, const uint64_t* regs,
                       const maps::Map** map_out = nullptr);

// Remembers the memory a kMemOrNull or kMapValueOrNull helper returned as an
// accessible region (args = r1..r5 as passed). Values of maps whose lookup is
// ArrayLayout indexing only become the hit region: the region logic finds
// them by itself, so they never push other grants out.
void grant_return(InterpState& s, const HelperProto& proto, const uint64_t* args, uint64_t r0);
// grant_return of a kMapValueOrNull helper whose map argument is m, for
// callers that know the map (the JIT's constant maps): no map search.
void grant_map_value(InterpState& s, const maps::Map* m, uint64_t r0);

// Records a fault at pc (stop = kFaulted). what is printf-style.
[[gnu::cold, gnu::format(printf, 5, 6)]] void set_fault(InterpState& s, int err,
                                                        const isa::Insn* pc, uint64_t addr,
                                                        const char* fmt, ...);
// Stops rc's run from inside a helper or kfunc (a bad argument its proto
// cannot describe, e.g. bpf_obj_drop of a pointer the program does not own):
// a fault at the call in progress. Both engines check for it after the call.
[[gnu::cold, gnu::format(printf, 4, 5)]] void fault_in_helper(RunContext* rc, int err,
                                                              uint64_t addr, const char* fmt, ...);
// A rejected load/store/atomic of size bytes at addr.
[[gnu::cold]] void fault_access(InterpState& s, const isa::Insn* pc, uint64_t addr, uint64_t size,
                                bool write, bool atomic);

// A run that stopped while holding objects (ObjRunState::held != 0): one
// that returned (stop still kRunning) faults with EINVAL, as the kernel's
// verifier refuses such a program (unreleased reference; the fault has no
// pc, kNoFaultPc); a fault, or an aborted packet load (r0 0), stays as it
// was. Either way the objects are dropped (maps::obj_drop_owned_by) and
// held is 0. Either engine, once the run is over and before its slot is
// left.
inline constexpr uint32_t kNoFaultPc = UINT32_MAX;
[[gnu::cold]] void release_held_objects(InterpState& s);

// The outcome of a run that returned r0 with state s (either engine): r0, 0
// for an aborted legacy packet load, or the fault as an Error naming
// program, pc and address, also recorded in s.rc->fault.
Result<uint64_t> run_result(const InterpState& s, uint64_t r0);

}  // namespace userbpf::vm::interp
