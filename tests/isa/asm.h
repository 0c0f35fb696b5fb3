// A tiny BPF assembler for tests: builds instruction arrays with named
// labels for jumps and calls, e.g.
//   Asm a;
//   a.mov64_imm(0, 0).label("loop").alu64_imm(kAluAdd, 0, 1)
//    .jmp_imm(kJmpJlt, 0, 10, "loop").exit();
//   std::vector<Insn> insns = a.build();
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "isa/insn.h"

namespace userbpf::test {

using isa::Insn;

constexpr Insn make_insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  Insn i{};
  i.code = code;
  i.dst = dst & 0xf;
  i.src = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// A jump/call target: a relative offset or a label resolved by build().
struct Target {
  Target(int off) : off(off) {}        // NOLINT: implicit by design
  Target(const char* l) : label(l) {}  // NOLINT
  int off = 0;
  const char* label = nullptr;
};

class Asm {
 public:
  Asm& emit(Insn i) {
    insns_.push_back(i);
    return *this;
  }
  Asm& label(const std::string& name) {
    labels_[name] = insns_.size();
    return *this;
  }
  size_t pc() const { return insns_.size(); }

  // ALU (off=1 with kAluDiv/kAluMod gives sdiv/smod).
  Asm& alu64_imm(uint8_t op, uint8_t dst, int32_t imm, int16_t off = 0) {
    return emit(make_insn(isa::kClassAlu64 | isa::kSrcK | op, dst, 0, off, imm));
  }
  Asm& alu64_reg(uint8_t op, uint8_t dst, uint8_t src, int16_t off = 0) {
    return emit(make_insn(isa::kClassAlu64 | isa::kSrcX | op, dst, src, off, 0));
  }
  Asm& alu32_imm(uint8_t op, uint8_t dst, int32_t imm, int16_t off = 0) {
    return emit(make_insn(isa::kClassAlu | isa::kSrcK | op, dst, 0, off, imm));
  }
  Asm& alu32_reg(uint8_t op, uint8_t dst, uint8_t src, int16_t off = 0) {
    return emit(make_insn(isa::kClassAlu | isa::kSrcX | op, dst, src, off, 0));
  }
  Asm& mov64_imm(uint8_t dst, int32_t imm) { return alu64_imm(isa::kAluMov, dst, imm); }
  Asm& mov64_reg(uint8_t dst, uint8_t src) { return alu64_reg(isa::kAluMov, dst, src); }
  Asm& mov32_imm(uint8_t dst, int32_t imm) { return alu32_imm(isa::kAluMov, dst, imm); }
  Asm& mov32_reg(uint8_t dst, uint8_t src) { return alu32_reg(isa::kAluMov, dst, src); }
  Asm& movsx64(uint8_t dst, uint8_t src, int16_t bits) {
    return alu64_reg(isa::kAluMov, dst, src, bits);
  }
  Asm& movsx32(uint8_t dst, uint8_t src, int16_t bits) {
    return alu32_reg(isa::kAluMov, dst, src, bits);
  }
  Asm& addr_space_cast(uint8_t dst, uint8_t src, int32_t imm) {
    return emit(make_insn(isa::kClassAlu64 | isa::kSrcX | isa::kAluMov, dst, src, 1, imm));
  }
  Asm& neg64(uint8_t dst) { return alu64_imm(isa::kAluNeg, dst, 0); }
  Asm& neg32(uint8_t dst) { return alu32_imm(isa::kAluNeg, dst, 0); }
  Asm& le(uint8_t dst, int32_t width) {
    return emit(make_insn(isa::kClassAlu | isa::kSrcK | isa::kAluEnd, dst, 0, 0, width));
  }
  Asm& be(uint8_t dst, int32_t width) {
    return emit(make_insn(isa::kClassAlu | isa::kSrcX | isa::kAluEnd, dst, 0, 0, width));
  }
  Asm& bswap(uint8_t dst, int32_t width) {
    return emit(make_insn(isa::kClassAlu64 | isa::kSrcK | isa::kAluEnd, dst, 0, 0, width));
  }
  // r[dst] = value (two slots).
  Asm& ld_imm64(uint8_t dst, uint64_t value, uint8_t src = 0) {
    emit(make_insn(isa::kLdImm64, dst, src, 0, static_cast<int32_t>(value)));
    return emit(make_insn(0, 0, 0, 0, static_cast<int32_t>(value >> 32)));
  }
  Asm& ld_map(uint8_t dst, uint32_t map_idx) { return ld_imm64(dst, map_idx, isa::kPseudoMapIdx); }
  Asm& ld_map_value(uint8_t dst, uint32_t map_idx, uint32_t off) {
    return ld_imm64(dst, (static_cast<uint64_t>(off) << 32) | map_idx, isa::kPseudoMapIdxValue);
  }
  Asm& ld_func(uint8_t dst, Target t) {
    fixups_.push_back({insns_.size(), t, Fix::kImm});
    return ld_imm64(dst, static_cast<uint32_t>(t.off), isa::kPseudoFunc);
  }

  // Memory.
  Asm& ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
    return emit(make_insn(isa::kClassLdx | isa::kModeMem | size, dst, src, off, 0));
  }
  Asm& ldxsx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
    return emit(make_insn(isa::kClassLdx | isa::kModeMemsx | size, dst, src, off, 0));
  }
  Asm& st(uint8_t size, uint8_t dst, int16_t off, int32_t imm) {
    return emit(make_insn(isa::kClassSt | isa::kModeMem | size, dst, 0, off, imm));
  }
  Asm& stx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
    return emit(make_insn(isa::kClassStx | isa::kModeMem | size, dst, src, off, 0));
  }
  Asm& atomic(uint8_t size, int32_t op, uint8_t dst, uint8_t src, int16_t off) {
    return emit(make_insn(isa::kClassStx | isa::kModeAtomic | size, dst, src, off, op));
  }
  Asm& ld_abs(uint8_t size, int32_t imm) {
    return emit(make_insn(isa::kClassLd | isa::kModeAbs | size, 0, 0, 0, imm));
  }
  Asm& ld_ind(uint8_t size, uint8_t src, int32_t imm) {
    return emit(make_insn(isa::kClassLd | isa::kModeInd | size, 0, src, 0, imm));
  }

  // Control flow.
  Asm& ja(Target t) { return jump(make_insn(isa::kClassJmp | isa::kJmpJa, 0, 0, 0, 0), t); }
  Asm& gotol(Target t) {
    fixups_.push_back({insns_.size(), t, Fix::kImm});
    return emit(make_insn(isa::kClassJmp32 | isa::kJmpJa, 0, 0, 0, t.off));
  }
  Asm& jmp_imm(uint8_t op, uint8_t dst, int32_t imm, Target t) {
    return jump(make_insn(isa::kClassJmp | isa::kSrcK | op, dst, 0, 0, imm), t);
  }
  Asm& jmp_reg(uint8_t op, uint8_t dst, uint8_t src, Target t) {
    return jump(make_insn(isa::kClassJmp | isa::kSrcX | op, dst, src, 0, 0), t);
  }
  Asm& jmp32_imm(uint8_t op, uint8_t dst, int32_t imm, Target t) {
    return jump(make_insn(isa::kClassJmp32 | isa::kSrcK | op, dst, 0, 0, imm), t);
  }
  Asm& jmp32_reg(uint8_t op, uint8_t dst, uint8_t src, Target t) {
    return jump(make_insn(isa::kClassJmp32 | isa::kSrcX | op, dst, src, 0, 0), t);
  }
  Asm& may_goto(Target t) {
    return jump(make_insn(isa::kClassJmp | isa::kJmpJcond, 0, 0, 0, 0), t);
  }
  Asm& call_helper(int32_t id) {
    return emit(make_insn(isa::kCall, 0, isa::kPseudoCallHelper, 0, id));
  }
  Asm& call_kfunc(int32_t idx) {
    return emit(make_insn(isa::kCall, 0, isa::kPseudoKfuncCall, 0, idx));
  }
  Asm& call_local(Target t) {
    fixups_.push_back({insns_.size(), t, Fix::kImm});
    return emit(make_insn(isa::kCall, 0, isa::kPseudoCall, 0, t.off));
  }
  Asm& callx(uint8_t reg) { return emit(make_insn(isa::kCallx, reg, 0, 0, 0)); }
  Asm& exit() { return emit(make_insn(isa::kExit, 0, 0, 0, 0)); }

  // Resolves labels (aborts on an unknown one: a bug in the test).
  std::vector<Insn> build() const {
    std::vector<Insn> out = insns_;
    for (const Fixup& f : fixups_) {
      if (f.target.label == nullptr) continue;
      auto it = labels_.find(f.target.label);
      if (it == labels_.end()) std::abort();
      const int64_t rel = static_cast<int64_t>(it->second) - static_cast<int64_t>(f.pc) - 1;
      if (f.kind == Fix::kOff) {
        out[f.pc].off = static_cast<int16_t>(rel);
      } else {
        out[f.pc].imm = static_cast<int32_t>(rel);
      }
    }
    return out;
  }

 private:
  enum class Fix { kOff, kImm };
  struct Fixup {
    size_t pc;
    Target target;
    Fix kind;
  };
  Asm& jump(Insn i, Target t) {
    i.off = static_cast<int16_t>(t.off);
    fixups_.push_back({insns_.size(), t, Fix::kOff});
    return emit(i);
  }

  std::vector<Insn> insns_;
  std::map<std::string, size_t> labels_;
  std::vector<Fixup> fixups_;
};

}  // namespace userbpf::test
