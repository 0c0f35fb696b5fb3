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
//
// Interpreter's form (interp_insns, same length and pcs): the executable form
// with fused obj calls (InterpObjCall) and `add K` + jump pairs
// (fused_add_jump_code), built by build_interp_form().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "isa/insn.h"
#include "isa/opcodes.h"
#include "maps/map.h"
#include "mem/class_lists.h"
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

// A bpf_obj_new / bpf_obj_drop call (a kfunc with a slot_fn) fused with the
// moves that set its arguments, in the interpreter's form: the first of
// those moves (or the call itself) becomes kExecObjNew / kExecObjDrop with
// imm = this entry's index and off = the distance to the instruction after
// the call and its null branch (where a new that got its object goes on:
// read from the instruction, the next pc waits on one load, not two). It does what the moves and
// the call would (r0, r1-r5 clobbered where read later), and the `if r0 == 0 goto` after the call
// if null_branch. The moves and the call keep their instructions, so a jump between them runs them
// one by one.
struct alignas(64) InterpObjCall {  // 128 bytes: its index times a shift
  static constexpr uint8_t kArgConst = 0xff;
  uint64_t (*slot_fn)(uint64_t r1, uint64_t r2, ObjRunState* run) = nullptr;
  uint64_t arg[2] = {};                         // r1, r2 when constant
  uint8_t arg_reg[2] = {kArgConst, kArgConst};  // else the register read
  bool null_branch = false;
  uint32_t call_off = 0;  // from the fused instruction to the call
  // The inline fast path (maps/bpf_obj_fast.h) when r2 is a constant
  // domain: new also needs a constant size of 1..48 bytes (its class in
  // cls). nullptr: always the call.
  mem::MemDomain* domain = nullptr;
  // maps::obj_owned_state(*domain, size). A drop has a size when the
  // program's facts give its object (interp_form.cc: a bpf_obj_new of the
  // run with no call in between); size 0 otherwise, with the state word of
  // an owned object without its size and slot.
  uint64_t owned = 0;
  uint32_t size = 0;
  uint32_t cls = 0;
  mem::ClassLists lists;  // of cls, when size != 0
  uint64_t freed = 0;     // drop with a size: maps::obj_free_state(*domain, size)
  // Bits 1-5: the r1-r5 that a path after the call may read before writing
  // them, set to kClobberedReg by the call; the others are never seen.
  uint8_t clobber = 0x3e;
};

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
  // The interpreter's form: exec_insns with fused obj calls (their entries
  // in interp_obj_calls) and add + jump pairs.
  std::vector<isa::Insn> interp_insns;
  std::vector<InterpObjCall> interp_obj_calls;
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
// The interpreter's form only (interp_insns): fused obj calls (kExecObjNewKnown
// and kExecObjDropKnown below are their variants the facts settle).
inline constexpr uint8_t kExecObjNew = 0xe7;   // InterpObjCall of a bpf_obj_new
inline constexpr uint8_t kExecObjDrop = 0xe4;  // InterpObjCall of a bpf_obj_drop

// The interpreter's form only: an add of an immediate (ALU64 or ALU32)
// fused with the jump after it (a loop's counter and its test or its goto).
// The add's slot gets the fused code; the jump keeps its own, and its
// fields are read from there. Codes: the ISA's invalid bytes not used
// above, in order; fused_add_jump_code gives 0 for a pair with none.
namespace fused_detail {
constexpr bool is_exec_code(uint8_t c) {
  return c == kExecMovsx64 || c == kExecMovsx32 || c == kExecAddrSpaceCast || c == kExecObjNew ||
         c == kExecObjDrop;
}
// The n-th byte that is invalid in the ISA and no other kExec code, or 0.
constexpr uint8_t free_code(unsigned n) {
  for (unsigned c = 1; c < 256; c++) {
    const auto b = static_cast<uint8_t>(c);
    if (isa::opcode_info(b).kind != isa::OpKind::kInvalid || is_exec_code(b)) continue;
    if (n-- == 0) return b;
  }
  return 0;
}
// 0..10 for the 11 conditional jump ops, -1 for others.
constexpr int cond_index(uint8_t op) {
  constexpr uint8_t kOps[] = {isa::kJmpJeq, isa::kJmpJgt,  isa::kJmpJge,  isa::kJmpJset,
                              isa::kJmpJne, isa::kJmpJsgt, isa::kJmpJsge, isa::kJmpJlt,
                              isa::kJmpJle, isa::kJmpJslt, isa::kJmpJsle};
  for (int i = 0; i < 11; i++)
    if (kOps[i] == op) return i;
  return -1;
}
}  // namespace fused_detail

// The fused code of `add K` (ALU32 if alu32) followed by jump_code: a
// conditional jump (JMP or JMP32, K or X) or JMP's ja; 0 if none.
constexpr uint8_t fused_add_jump_code(bool alu32, uint8_t jump_code) {
  const uint8_t cls = isa::insn_class(jump_code);
  if (cls != isa::kClassJmp && cls != isa::kClassJmp32) return 0;
  unsigned k;
  if (jump_code == (isa::kClassJmp | isa::kJmpJa)) {
    k = 44;
  } else {
    const int cond = fused_detail::cond_index(jump_code & 0xf0);
    if (cond < 0) return 0;
    k = static_cast<unsigned>(cond) * 4 + (cls == isa::kClassJmp32 ? 2 : 0) +
        ((jump_code & isa::kSrcX) ? 1 : 0);
  }
  return fused_detail::free_code((alu32 ? 45 : 0) + k);
}

// The interpreter's form only: a load or store (mode MEM) that the
// program's facts prove inside an object the run holds (interp_form.cc), so
// it runs with no check. Codes: the free bytes after the fused add + jump
// pairs, one per load or store code; obj_access_code gives 0 for others.
constexpr uint8_t obj_access_code(uint8_t code) {
  constexpr uint8_t kCodes[] = {isa::kClassLdx | isa::kModeMem | isa::kSizeB,
                                isa::kClassLdx | isa::kModeMem | isa::kSizeH,
                                isa::kClassLdx | isa::kModeMem | isa::kSizeW,
                                isa::kClassLdx | isa::kModeMem | isa::kSizeDw,
                                isa::kClassLdx | isa::kModeMemsx | isa::kSizeB,
                                isa::kClassLdx | isa::kModeMemsx | isa::kSizeH,
                                isa::kClassLdx | isa::kModeMemsx | isa::kSizeW,
                                isa::kClassSt | isa::kModeMem | isa::kSizeB,
                                isa::kClassSt | isa::kModeMem | isa::kSizeH,
                                isa::kClassSt | isa::kModeMem | isa::kSizeW,
                                isa::kClassSt | isa::kModeMem | isa::kSizeDw,
                                isa::kClassStx | isa::kModeMem | isa::kSizeB,
                                isa::kClassStx | isa::kModeMem | isa::kSizeH,
                                isa::kClassStx | isa::kModeMem | isa::kSizeW,
                                isa::kClassStx | isa::kModeMem | isa::kSizeDw};
  for (unsigned i = 0; i < sizeof(kCodes); i++)
    if (kCodes[i] == code) return fused_detail::free_code(90 + i);
  return 0;
}
// Fused obj calls the facts settle (interp_form.cc): a bpf_obj_drop whose
// object the facts follow from its bpf_obj_new (its InterpObjCall has the
// size; r1 is a register), and that new, with the inline path (it needs no
// ObjMemo entry, and no region cache: its accesses there are unchecked).
// Both clobber no register (clobber == 0), and the drop has no null branch.
inline constexpr uint8_t kExecObjNewKnown = fused_detail::free_code(105);
inline constexpr uint8_t kExecObjDropKnown = fused_detail::free_code(106);
static_assert(kExecObjDropKnown != 0, "not enough free opcode bytes for the fusions");

// Checks the linked form (valid opcodes and variants, registers, r10 never
// written, jumps and calls inside the program and not into the middle of an
// ld_imm64, known helpers and kfuncs, map indexes in range, exit reachable as
// the last instruction of every path's end) and builds exec_insns. Errors
// name the pc.
Status prepare_program(Program& prog);

// Builds prog.interp_insns and interp_obj_calls from exec_insns (called by
// prepare_program; interp_form.cc).
void build_interp_form(Program& prog);

// Callback values (BPF_PSEUDO_FUNC) in the interpreter's executable form: the
// target pc tagged so helpers can pass it back to RunContext::call_fn.
inline constexpr uint64_t kCallbackTag = 0xcb00'0000'0000'0000ull;
constexpr uint64_t make_callback_value(uint32_t pc) {
  return kCallbackTag | pc;
}

}  // namespace userbpf::vm
