// Inserting instructions into a linked program (insn_patch.h).
#include "loader/insn_patch.h"

#include <cinttypes>

namespace userbpf::loader {

using isa::Insn;

Status insert_patches(std::vector<Insn>& insns, const std::vector<InsnPatch>& patches) {
  const size_t n = insns.size();
  // lands[i]: new pc of a reference to old pc i (its patch, if it has one);
  // at[i]: new pc of the instruction itself.
  std::vector<int64_t> lands(n + 1), at(n + 1);
  {
    size_t k = 0;
    int64_t added = 0;
    for (size_t i = 0; i <= n; i++) {
      lands[i] = static_cast<int64_t>(i) + added;
      if (k < patches.size() && patches[k].pc == i)
        added += static_cast<int64_t>(patches[k++].insns.size());
      at[i] = static_cast<int64_t>(i) + added;
    }
  }
  std::vector<Insn> out;
  out.reserve(static_cast<size_t>(at[n]));
  size_t k = 0;
  for (size_t pc = 0; pc < n; pc++) {
    if (k < patches.size() && patches[k].pc == pc) {
      out.insert(out.end(), patches[k].insns.begin(), patches[k].insns.end());
      k++;
    }
    Insn in = insns[pc];
    const uint8_t cls = isa::insn_class(in.code);
    const uint8_t op = isa::insn_op(in.code);
    const bool func_ref = (in.code == isa::kLdImm64 && in.src == isa::kPseudoFunc) ||
                          (in.code == isa::kCall && in.src == isa::kPseudoCall);
    const bool jump = (cls == isa::kClassJmp || cls == isa::kClassJmp32) && op != isa::kJmpCall &&
                      op != isa::kJmpExit;
    const bool by_imm = func_ref || (jump && cls == isa::kClassJmp32 && op == isa::kJmpJa);
    if (func_ref || jump) {
      const int64_t target = static_cast<int64_t>(pc) + 1 + (by_imm ? in.imm : in.off);
      if (target >= 0 && target <= static_cast<int64_t>(n)) {
        const int64_t rel = lands[static_cast<size_t>(target)] - at[pc] - 1;
        if (by_imm) {
          in.imm = static_cast<int32_t>(rel);  // |rel| < 2^31: programs are far shorter
        } else if (rel < INT16_MIN || rel > INT16_MAX) {
          return make_error(E2BIG,
                            "insn %zu: jump offset %" PRId64
                            " does not fit after inserting "
                            "instructions",
                            pc, rel);
        } else {
          in.off = static_cast<int16_t>(rel);
        }
      }
    }
    out.push_back(in);
    if (in.code == isa::kLdImm64 && pc + 1 < n) out.push_back(insns[++pc]);
  }
  insns = std::move(out);
  return Status::Ok();
}

}  // namespace userbpf::loader
