// Programs of an object: every executable section split into functions by
// its STT_FUNC symbols. Global functions outside .text are entry programs
// (type from the section name); .text functions and static functions are
// subprograms.
#include <elf.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "isa/insn.h"
#include "loader/open_internal.h"

namespace userbpf::loader {

namespace {

constexpr uint64_t kInsnSize = sizeof(isa::Insn);

// Jumps must stay inside their function, as the kernel's check_subprogs
// requires; a jump that left it would land in unrelated code once the
// function is linked into another program.
Status check_jumps(const ProgSpec& p) {
  const auto n = static_cast<int64_t>(p.insns.size());
  for (int64_t i = 0; i < n; i++) {
    const isa::Insn& insn = p.insns[i];
    if (insn.code == isa::kLdImm64) {
      if (i + 1 >= n)
        return make_error(EINVAL,
                          "program '%s' (section '%s'): ld_imm64 at insn %" PRId64
                          " is cut off by the end of the function",
                          p.name.c_str(), p.section.c_str(), i);
      i++;
      continue;
    }
    uint8_t cls = isa::insn_class(insn.code);
    if (cls != isa::kClassJmp && cls != isa::kClassJmp32) continue;
    uint8_t op = isa::insn_op(insn.code);
    if (op == isa::kJmpCall || op == isa::kJmpExit || op > isa::kJmpJcond) continue;
    if (cls == isa::kClassJmp32 && op == isa::kJmpJcond) continue;  // not an opcode
    int64_t off = (cls == isa::kClassJmp32 && op == isa::kJmpJa) ? insn.imm : insn.off;
    int64_t target = i + off + 1;
    if (target < 0 || target >= n)
      return make_error(EINVAL,
                        "program '%s' (section '%s'): jump at insn %" PRId64
                        " targets insn %" PRId64 ", outside the function (%" PRId64 " insns)",
                        p.name.c_str(), p.section.c_str(), i, target, n);
  }
  return Status::Ok();
}

Status collect_section(OpenContext& ctx, const ElfSection& s) {
  if (s.type != SHT_PROGBITS)
    return make_error(EINVAL, "executable section '%s' has type %u, expected SHT_PROGBITS",
                      s.name.c_str(), s.type);
  if (s.size == 0) return Status::Ok();
  if (s.flags & SHF_COMPRESSED)
    return make_error(EINVAL, "executable section '%s' is compressed", s.name.c_str());
  if (s.size % kInsnSize != 0)
    return make_error(EINVAL,
                      "executable section '%s': size %" PRIu64 " is not a multiple of %" PRIu64,
                      s.name.c_str(), s.size, kInsnSize);
  bool text = s.name == ".text";
  const SectionDef* def = nullptr;
  if (!text) {
    def = find_section_def(s.name);
    if (def == nullptr)
      return make_error(EINVAL,
                        "section '%s': unknown program section name (not one of libbpf's "
                        "SEC() names)",
                        s.name.c_str());
  }

  std::vector<const ElfSymbol*> funcs;
  for (const ElfSymbol& sym : ctx.elf.symbols())
    if (sym.shndx == s.index && sym.type == STT_FUNC) funcs.push_back(&sym);
  if (funcs.empty())
    return make_error(EINVAL, "executable section '%s' (%" PRIu64 " bytes) has no function symbols",
                      s.name.c_str(), s.size);
  std::sort(funcs.begin(), funcs.end(),
            [](const ElfSymbol* a, const ElfSymbol* b) { return a->value < b->value; });

  std::vector<uint32_t>& index = ctx.funcs_by_shndx[s.index];
  uint64_t prev_end = 0;
  for (const ElfSymbol* sym : funcs) {
    if (sym->name.empty())
      return make_error(EINVAL, "section '%s': function symbol #%u has no name", s.name.c_str(),
                        sym->index);
    if (sym->value % kInsnSize != 0 || sym->size % kInsnSize != 0 || sym->size == 0)
      return make_error(EINVAL,
                        "section '%s': function '%s' at offset 0x%" PRIx64 " size 0x%" PRIx64
                        " is not a non-empty whole number of instructions",
                        s.name.c_str(), sym->name.c_str(), sym->value, sym->size);
    if (sym->value > s.size || sym->size > s.size - sym->value)
      return make_error(EINVAL,
                        "section '%s': function '%s' [0x%" PRIx64 ", +0x%" PRIx64
                        ") crosses the section end (0x%" PRIx64 ")",
                        s.name.c_str(), sym->name.c_str(), sym->value, sym->size, s.size);
    if (sym->value < prev_end)
      return make_error(EINVAL,
                        "section '%s': function '%s' at offset 0x%" PRIx64
                        " overlaps the previous function (ends at 0x%" PRIx64 ")",
                        s.name.c_str(), sym->name.c_str(), sym->value, prev_end);
    prev_end = sym->value + sym->size;

    ProgSpec p;
    p.name = sym->name;
    p.section = s.name;
    p.is_subprog = text || sym->bind == STB_LOCAL;
    if (def != nullptr) {
      p.type = def->type;
      p.sleepable = def->sleepable;
    }
    p.section_insn_off = static_cast<uint32_t>(sym->value / kInsnSize);
    p.insns.resize(sym->size / kInsnSize);
    std::memcpy(p.insns.data(), s.data.data() + sym->value, sym->size);
    USERBPF_TRY(check_jumps(p));
    index.push_back(static_cast<uint32_t>(ctx.spec.progs.size()));
    ctx.spec.progs.push_back(std::move(p));
  }
  return Status::Ok();
}

}  // namespace

Status collect_programs(OpenContext& ctx) {
  for (const ElfSection& s : ctx.elf.sections())
    if (s.index != 0 && (s.flags & SHF_EXECINSTR)) USERBPF_TRY(collect_section(ctx, s));
  return Status::Ok();
}

const ProgSpec* find_func(const OpenContext& ctx, uint32_t shndx, uint64_t insn,
                          uint32_t* prog_idx) {
  auto it = ctx.funcs_by_shndx.find(shndx);
  if (it == ctx.funcs_by_shndx.end()) return nullptr;
  const std::vector<uint32_t>& funcs = it->second;
  // Last function starting at or before insn.
  auto pos = std::upper_bound(funcs.begin(), funcs.end(), insn, [&](uint64_t v, uint32_t idx) {
    return v < ctx.spec.progs[idx].section_insn_off;
  });
  if (pos == funcs.begin()) return nullptr;
  const ProgSpec& p = ctx.spec.progs[*(pos - 1)];
  if (insn >= p.section_insn_off + p.insns.size()) return nullptr;
  if (prog_idx) *prog_idx = *(pos - 1);
  return &p;
}

}  // namespace userbpf::loader
