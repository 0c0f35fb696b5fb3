// The x86-64 JIT's internals shared by the code generator (emit.cc), the run
// entry and its slow paths (run.cc) and the fault handler (extable.cc).
//
// Register mapping (the kernel's, so helpers take r1-r5 in the SysV argument
// registers and return r0 in rax):
//   r0 rax  r1 rdi  r2 rsi  r3 rdx  r4 rcx  r5 r8
//   r6 rbx  r7 r13  r8 r14  r9 r15  r10 rbp (frame pointer of the BPF stack)
//   r12 = JitState*, r9 = instruction budget left, r10/r11 scratch.
//   A program with may_goto that never names BPF r9 keeps the run's may_goto
//   budget (s.may_goto_left) in r15 instead (emit.cc, emit_entry).
//
// JitState invariants (one run on one thread, like InterpState, which it
// embeds so the interpreter's region and fault logic is reused unchanged):
//   - the BPF stack is a separate 8 x 512-byte array; the current frame chain
//     is [rbp - 512, stack_top); a frame below zeroed_lo has not been cleared.
//   - s.budget is exact whenever C code runs (the JIT stores r9 before every
//     call out and reloads it after); s.may_goto_left too whenever C code
//     that may run program code runs; s.depth is derived from cur_rbp.
//   - entry_rsp is the native stack pointer of the innermost entry from C
//     (run or callback); a fault restores it (and the host's rbx, r13-r15,
//     saved by the entry function's frame just below it) and returns 0 to
//     that C caller, which sees s.stop != kRunning and unwinds the same way.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "vm/interp_state.h"
#include "vm/jit/jit.h"

namespace userbpf::vm {

namespace jit {

struct JitState {
  interp::InterpState s;   // first member: a JitState* is an InterpState*
  uintptr_t top_minus[4];  // stack_top - size, for sizes 1, 2, 4, 8
  uintptr_t frame_limit;   // a call needs rbp >= this (kMaxCallFrames)
  uintptr_t zeroed_lo;     // lowest stack byte cleared this run
  uintptr_t entry_rsp;
  uintptr_t cur_rbp;  // r10 at the call out in progress
  const JitImage* image;
  uint64_t cpu = 0;  // RunContext::cpu of the run (per-CPU array copies)
};

// One exception-table entry: a probe access at [start, end) of the code;
// a fault there resumes at end with the destination register (dst_greg, an
// index into mcontext gregs, or -1 for stores) set to 0.
struct ExtableEntry {
  uint32_t start;
  uint32_t end;
  int32_t dst_greg;
};

// Native entry: enter(body, state, rbp, args[5]) runs the function whose body
// (the code after its prologue) is at body, with rbp as its frame pointer,
// and returns r0 (0 after a fault).
using EnterFn = uint64_t (*)(const void* body, JitState* st, uintptr_t rbp, const uint64_t* args);
// Bytes of a function's prologue (emit.cc): its body starts this far after
// its entry.
inline constexpr uint32_t kPrologueBytes = 11;

}  // namespace jit

// Invariant: immutable after publication; code is mapped read+exec only.
struct JitImage {
  uint8_t* code = nullptr;  // mmap'd, PROT_READ|PROT_EXEC
  size_t map_size = 0;
  size_t code_size = 0;
  jit::EnterFn enter = nullptr;
  std::vector<uint32_t> pc_offset;         // code offset of each pc (UINT32_MAX: none)
  std::vector<jit::ExtableEntry> extable;  // sorted by start
  int extable_slot = -1;
  uint64_t compile_ns = 0;
  uint32_t checked_accesses = 0;  // jit_checked_accesses()
  JitLoopStats loop_stats;        // jit_loop_stats()
  // Whether a run may write memory (a store, an atomic, or a helper or kfunc
  // call): if not, the stack stays as zeroed and need not be cleared again.
  bool writes_memory = true;
  // Whether a run changes no JitState field but the budget (and the stop,
  // when it faults): no calls, may_goto, packet loads or atomics, and every
  // load and store proven inside the current frame (emit_facts.cc).
  bool keeps_state = false;
  ~JitImage();
};

namespace jit {

// Builds the image of a prepared program (emit.cc).
Result<JitImage*> compile_x86_64(const Program& prog, const JitOptions& opts);

// Called from generated code (run.cc). Each returns nonzero to continue.
// packed = pc << 8 | write | atomic << 1 | log2(size) << 2
uint64_t jit_check_access(JitState* st, uint64_t addr, uint64_t packed);
uint64_t jit_check_helper(JitState* st, const HelperProto* proto, const uint64_t* regs);
void jit_grant_return(JitState* st, const HelperProto* proto, const uint64_t* args, uint64_t r0);
// jit_grant_return of a map helper whose map is known at compile time.
void jit_grant_map_value(JitState* st, const maps::Map* map, uint64_t r0);
// kind: kFault* below; value: the bad address/value, pc: the instruction.
enum : uint32_t { kFaultBudget, kFaultDepth, kFaultInvalid, kFaultCallx };
void jit_fault(JitState* st, uint32_t kind, uint32_t pc, uint64_t value);
// ld_abs/ld_ind: the big-endian packet bytes, or 0 with s.stop = kAborted.
uint64_t jit_load_packet(JitState* st, int64_t off, uint64_t size);
// callx: the native address of the function value names, or 0 with a fault.
uint64_t jit_callx_target(JitState* st, uint64_t value, uint32_t pc);

// Exception table registry (extable.cc): installs the SIGSEGV handler on
// first use. register_extable returns the slot, -1 if the table is full.
int register_extable(const JitImage* image);
void unregister_extable(int slot);

}  // namespace jit
}  // namespace userbpf::vm
