// The disassembler: BPF instructions in the syntax llvm-objdump-19 -d prints
// (the "pseudo-C" BPF assembly), one instruction or a whole program.
//
// The syntax is llvm-objdump's default (-mcpu generic): loads and stores name
// 64-bit registers (`r1 = *(u32 *)(r1 + 0x4)`); 32-bit atomics, which the
// default decoder cannot show, use the text of `llvm-objdump --mcpu=v4`
// (`lock *(u32 *)(r1 + 0x0) += w2`; the default decoder only knows the legacy
// xadd and prints a fetching add as a plain one). One deliberate difference: ld_ind with a
// nonzero imm prints it (`skb[r1 + 0x4]`); llvm-objdump drops it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "isa/insn.h"

namespace userbpf::isa {

// One instruction, e.g. "if r1 > 0x5 goto +0x3", without the trailing
// "<symbol+offset>" llvm-objdump adds to jumps. next is the following slot
// (the upper half of an ld_imm64), nullptr if there is none. Malformed
// instructions print as "<unknown>", like llvm-objdump.
std::string format_insn(const Insn& insn, const Insn* next = nullptr);

struct DisasmOptions {
  // Name used in jump annotations "<symbol+0x40>" (byte offset of the target),
  // as llvm-objdump prints them for a function symbol at offset 0.
  std::string symbol = "prog";
  bool raw_bytes = true;  // the instruction bytes column
  // Notes on what llvm-objdump shows as plain numbers in the linked form:
  // "  ; map #1", "  ; map #1 value + 0x8", "  ; func pc 12", "  ; call pc 12",
  // "  ; kfunc #0".
  bool pseudo_notes = true;
  // Optional note appended as "  ; note" (helper names, map names, ...);
  // return an empty string for none. Replaces the pseudo note when nonempty.
  std::function<std::string(size_t pc, const Insn& insn)> note;
};

// A whole program, one line per instruction: "<pc>:\t<bytes>\t<text>", pc in
// instruction slots (an ld_imm64 takes two and prints both slots' bytes).
std::string disassemble_program(const Insn* insns, size_t count, const DisasmOptions& opts = {});

}  // namespace userbpf::isa
