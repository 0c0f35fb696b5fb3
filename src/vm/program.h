// A loaded program: its instructions as the loader linked them, the maps and
// kfuncs they reference, and the executable form an engine runs.
//
// Linked form (what the loader produces, what `prog dump` disassembles):
//   - ld_imm64 src=kPseudoMapIdx:       imm = index into maps
//   - ld_imm64 src=kPseudoMapIdxValue:  imm = index into maps, next imm = offset
//   - ld_imm64 src=kPseudoFunc:         imm = target pc - (pc + 1)
//   - call src=kPseudoCall:             imm = target pc - (pc + 1)
//   - call src=kPseudoCallHelper:       imm = kernel helper id (known to helpers)
//   - call src=kPseudoKfuncCall:        imm = index into kfuncs
// Subprograms called from the entry are appended after it, as libbpf does.
//
// Executable form (built by prepare_program()): map references become the
// 64-bit address of the Map or of the value (src cleared), so the interpreter
// treats them as plain constants; pseudo-func loads become the callback
// encoding of the engine (make_callback_value()); sign-extending moves and
// addr_space_cast get opcodes of their own (kExec*), so engines dispatch on
// the opcode byte alone and a plain register move never tests off.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "isa/insn.h"
#include "maps/map.h"
#include "vm/helper_proto.h"
#include "vm/prog_types.h"

namespace userbpf::vm {

struct ProgramStats {
  std::atomic<uint64_t> run_cnt{0};
  std::atomic<uint64_t> run_time_ns{0};
  std::atomic<uint64_t> faults{0};
  std::atomic<uint64_t> misses{0};  // runs skipped (no CPU slot in a signal handler)
};

// The JIT's compiled form of a Program (src/vm/jit); opaque to the rest of vm.
struct JitImage;

struct Program {
  std::string name;     // function name
  std::string section;  // ELF section, e.g. "xdp" or "tp/syscalls/sys_enter_openat"
  ProgType type = ProgType::kUNSPEC;
  bool sleepable = false;
  std::string license;

  std::vector<isa::Insn> insns;            // linked form
  std::vector<maps::Map*> maps;            // referenced maps (owned by the object)
  std::vector<const HelperProto*> kfuncs;  // resolved kfuncs
  HelperTable helpers = nullptr;           // helper protos by kernel id
  // The loader's per-program kfunc protos (bpf_obj_new of one type: the
  // object size as ret_size), pointed to by kfuncs.
  std::vector<std::unique_ptr<HelperProto>> own_kfuncs;
  // Object bytes of bpf_obj_new / bpf_percpu_obj_new by local BTF type id
  // (0: not allocatable), for the kfuncs; filled by the loader.
  std::vector<uint32_t> obj_sizes;
  // The runtime's memory domain (objects, slots); nullptr: the default one.
  mem::MemDomain* mem_domain = nullptr;

  std::vector<isa::Insn> exec_insns;  // executable form
  // First pc of every function (entry 0, bpf-to-bpf call and callback
  // targets), sorted; built by prepare_program(). Callback values must name one.
  std::vector<uint32_t> func_entries;
  bool prepared = false;

  // Machine code built from exec_insns by the JIT on first use (src/vm/jit):
  // jit is published once (release) and never changes after; jit_owner keeps
  // it alive as long as the program.
  std::atomic<JitImage*> jit{nullptr};
  std::shared_ptr<JitImage> jit_owner;

  ProgramStats stats;
};

// Executable-form-only opcodes: bytes the ISA leaves invalid (no program can
// contain them), standing for the off-selected variants of MOV X.
inline constexpr uint8_t kExecMovsx64 = 0xef;        // ALU64 MOV X, off 8/16/32
inline constexpr uint8_t kExecMovsx32 = 0xec;        // ALU MOV X, off 8/16
inline constexpr uint8_t kExecAddrSpaceCast = 0xff;  // ALU64 MOV X, off 1

// Checks the linked form (valid opcodes and variants, registers, r10 never
// written, jumps and calls inside the program and not into the middle of an
// ld_imm64, known helpers and kfuncs, map indexes in range, exit reachable as
// the last instruction of every path's end) and builds exec_insns. Errors
// name the pc.
Status prepare_program(Program& prog);

// Callback values (BPF_PSEUDO_FUNC) in the interpreter's executable form: the
// target pc tagged so helpers can pass it back to RunContext::call_fn.
inline constexpr uint64_t kCallbackTag = 0xcb00'0000'0000'0000ull;
constexpr uint64_t make_callback_value(uint32_t pc) {
  return kCallbackTag | pc;
}

}  // namespace userbpf::vm
