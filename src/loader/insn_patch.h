// Inserting instructions into a linked program, the kernel's
// bpf_patch_insn_data: the loader's kfunc fixups (object_link_obj.cc) put
// argument setup in front of calls.
//
// Every pc-relative reference moves with the code: jump offsets (off; imm
// for gotol), bpf-to-bpf calls and function addresses (ld_imm64
// BPF_PSEUDO_FUNC). A reference to an instruction that gets a patch lands on
// the patch's first instruction, so every path to it runs the patch first.
// References that point outside the program are left for prepare_program()
// to reject.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/result.h"
#include "isa/insn.h"

namespace userbpf::loader {

struct InsnPatch {
  size_t pc = 0;                 // insert in front of the instruction at pc
  std::vector<isa::Insn> insns;  // straight-line code: no jumps, calls or exits
};

// Applies patches (sorted by pc, at most one per pc, none at the second half
// of an ld_imm64). E2BIG if a jump's 16-bit offset no longer fits; insns is
// unchanged then.
Status insert_patches(std::vector<isa::Insn>& insns, const std::vector<InsnPatch>& patches);

}  // namespace userbpf::loader
