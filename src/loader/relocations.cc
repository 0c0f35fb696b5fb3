// Relocations of an object -> RelocSpec per function, following libbpf's
// bpf_program__record_reloc rules:
//   R_BPF_64_64 on ld_imm64: map in .maps (kMap), variable in a data section
//     (kMapValue, offset = symbol value + imm), function address (kFunc,
//     target = (symbol value + imm) / 8);
//   R_BPF_64_32 on call: defined function (kCall, target = symbol value / 8 +
//     imm + 1, so imm = -1 for global functions and the function's index - 1
//     against a section symbol), undefined function (kKfunc, by name).
// Calls and callback loads between functions of one section carry no ELF
// relocation (pc-relative already); they become kCall/kFunc here too, so
// the linker sees every cross-function reference in one form.
#include <elf.h>

#include <algorithm>
#include <cinttypes>

#include "isa/insn.h"
#include "loader/open_internal.h"

namespace userbpf::loader {

namespace {

constexpr uint64_t kInsnSize = sizeof(isa::Insn);

struct RelSite {
  const ElfSection& rel_sec;
  const ElfSection& sec;  // the section relocated
  size_t rel_idx;
  ProgSpec& prog;
  uint32_t insn_idx;  // within prog
};

// "program 'xdp_prog' (section 'xdp', insn 5, relocation #0 in '.relxdp')",
// the prefix of relocation errors.
std::string where(const RelSite& s) {
  return "program '" + s.prog.name + "' (section '" + s.sec.name + "', insn " +
         std::to_string(s.insn_idx) + ", relocation #" + std::to_string(s.rel_idx) + " in '" +
         s.rel_sec.name + "')";
}

// The function of section shndx starting exactly at insn, or an error.
Result<const ProgSpec*> func_at(const OpenContext& ctx, const ElfSection& sec, int64_t insn,
                                const std::string& what) {
  if (insn < 0 || static_cast<uint64_t>(insn) >= sec.size / kInsnSize)
    return make_error(EINVAL,
                      "%s: target insn %" PRId64 " is outside section '%s' (%" PRIu64 " insns)",
                      what.c_str(), insn, sec.name.c_str(), sec.size / kInsnSize);
  const ProgSpec* f = find_func(ctx, sec.index, static_cast<uint64_t>(insn), nullptr);
  if (f == nullptr || f->section_insn_off != insn)
    return make_error(EINVAL,
                      "%s: target insn %" PRId64
                      " of section '%s' is not the start of a "
                      "function",
                      what.c_str(), insn, sec.name.c_str());
  return f;
}

Status reloc_ld_imm64(OpenContext& ctx, const RelSite& s, const ElfSymbol& sym) {
  const isa::Insn& insn = s.prog.insns[s.insn_idx];
  if (insn.code != isa::kLdImm64 || s.insn_idx + 1 >= s.prog.insns.size())
    return make_error(EINVAL, "%s: R_BPF_64_64 on opcode 0x%02x, expected ld_imm64 (0x18)",
                      where(s).c_str(), insn.code);
  if (sym.shndx == SHN_UNDEF)
    return make_error(ENOTSUP,
                      "%s: ld_imm64 of extern '%s' (__ksym/__kconfig variables and "
                      "bpf_ksym_exists()) is not supported",
                      where(s).c_str(), sym.name.c_str());
  if (sym.shndx >= SHN_LORESERVE)
    return make_error(EINVAL,
                      "%s: relocation against '%s' in special section 0x%x (an "
                      "uninitialized common global? compile with -fno-common)",
                      where(s).c_str(), sym.name.c_str(), sym.shndx);
  const ElfSection& ts = *ctx.elf.section(sym.shndx);
  RelocSpec r{};
  r.insn_idx = s.insn_idx;

  if (ts.flags & SHF_EXECINSTR) {
    if (sym.type != STT_FUNC && sym.type != STT_SECTION)
      return make_error(EINVAL,
                        "%s: function address of '%s', which is neither a function nor a "
                        "section symbol",
                        where(s).c_str(), sym.name.c_str());
    int64_t byte = static_cast<int64_t>(sym.value) + insn.imm;
    if (sym.value > INT32_MAX || byte < 0 || byte % kInsnSize != 0)
      return make_error(EINVAL, "%s: function address '%s'+%d is not an instruction offset",
                        where(s).c_str(), sym.name.c_str(), insn.imm);
    auto f = func_at(ctx, ts, byte / static_cast<int64_t>(kInsnSize), where(s));
    if (!f.ok()) return f.take_error();
    r.kind = RelocSpec::Kind::kFunc;
    r.symbol = (*f)->name;
    r.target_section = ts.name;
    r.target_insn = (*f)->section_insn_off;
  } else if (ts.index == ctx.maps_shndx) {
    auto it = ctx.btf_map_by_offset.find(sym.value);
    if (it == ctx.btf_map_by_offset.end())
      return make_error(EINVAL,
                        "%s: '%s' at offset 0x%" PRIx64
                        " of .maps is not a map the BTF "
                        "describes",
                        where(s).c_str(), sym.name.c_str(), sym.value);
    r.kind = RelocSpec::Kind::kMap;
    r.map_idx = it->second;
    r.symbol = sym.name;
  } else if (auto it = ctx.data_map_by_shndx.find(ts.index); it != ctx.data_map_by_shndx.end()) {
    int64_t off = static_cast<int64_t>(sym.value) + insn.imm;
    if (sym.value > UINT32_MAX || off < 0 || static_cast<uint64_t>(off) >= ts.size)
      return make_error(
          EINVAL, "%s: '%s'+%d = offset %" PRId64 " is outside section '%s' (size %" PRIu64 ")",
          where(s).c_str(), sym.name.c_str(), insn.imm, off, ts.name.c_str(), ts.size);
    r.kind = RelocSpec::Kind::kMapValue;
    r.map_idx = it->second;
    r.offset = static_cast<uint32_t>(off);
    r.symbol = sym.name;
  } else {
    return make_error(EINVAL,
                      "%s: '%s' is in section '%s', which is not a map, global data or "
                      "code section",
                      where(s).c_str(), sym.name.c_str(), ts.name.c_str());
  }
  s.prog.relocs.push_back(std::move(r));
  return Status::Ok();
}

Status reloc_call(OpenContext& ctx, const RelSite& s, const ElfSymbol& sym) {
  const isa::Insn& insn = s.prog.insns[s.insn_idx];
  if (insn.code != isa::kCall || insn.src != isa::kPseudoCall)
    return make_error(EINVAL,
                      "%s: R_BPF_64_32 on opcode 0x%02x src %u, expected a bpf-to-bpf call "
                      "(0x85 src 1)",
                      where(s).c_str(), insn.code, insn.src);
  RelocSpec r{};
  r.insn_idx = s.insn_idx;
  if (sym.shndx == SHN_UNDEF) {
    if (sym.name.empty() || (sym.bind != STB_GLOBAL && sym.bind != STB_WEAK) ||
        (sym.type != STT_FUNC && sym.type != STT_NOTYPE))
      return make_error(EINVAL,
                        "%s: call to undefined symbol #%u '%s' that is not an extern "
                        "function",
                        where(s).c_str(), sym.index, sym.name.c_str());
    r.kind = RelocSpec::Kind::kKfunc;
    r.symbol = sym.name;
    s.prog.relocs.push_back(std::move(r));
    return Status::Ok();
  }
  if (sym.shndx >= SHN_LORESERVE)
    return make_error(EINVAL, "%s: call to '%s' in special section 0x%x", where(s).c_str(),
                      sym.name.c_str(), sym.shndx);
  const ElfSection& ts = *ctx.elf.section(sym.shndx);
  if (!(ts.flags & SHF_EXECINSTR))
    return make_error(EINVAL, "%s: call to '%s' in non-executable section '%s'", where(s).c_str(),
                      sym.name.c_str(), ts.name.c_str());
  if ((sym.type != STT_FUNC && sym.type != STT_SECTION) || sym.value % kInsnSize != 0 ||
      sym.value > INT32_MAX)
    return make_error(EINVAL, "%s: call to '%s' (type %u, offset 0x%" PRIx64 ") is not a function",
                      where(s).c_str(), sym.name.c_str(), sym.type, sym.value);
  int64_t target = static_cast<int64_t>(sym.value / kInsnSize) + insn.imm + 1;
  auto f = func_at(ctx, ts, target, where(s));
  if (!f.ok()) return f.take_error();
  r.kind = RelocSpec::Kind::kCall;
  r.symbol = (*f)->name;
  r.target_section = ts.name;
  r.target_insn = (*f)->section_insn_off;
  s.prog.relocs.push_back(std::move(r));
  return Status::Ok();
}

Status code_relocations(OpenContext& ctx, const ElfSection& rel_sec, const ElfSection& sec) {
  auto rels = ctx.elf.relocations(rel_sec);
  if (!rels.ok()) return rels.take_error();
  for (size_t i = 0; i < rels->size(); i++) {
    const ElfRel& rel = (*rels)[i];
    if (rel.type == kRBpfNone) continue;
    if (rel.offset % kInsnSize != 0 || rel.offset >= sec.size)
      return make_error(EINVAL,
                        "relocation #%zu in '%s': offset 0x%" PRIx64
                        " is not an "
                        "instruction of section '%s' (size 0x%" PRIx64 ")",
                        i, rel_sec.name.c_str(), rel.offset, sec.name.c_str(), sec.size);
    uint32_t prog_idx = 0;
    uint64_t sec_insn = rel.offset / kInsnSize;
    // Instructions outside every function (overridden weak code) are skipped, like libbpf.
    if (find_func(ctx, sec.index, sec_insn, &prog_idx) == nullptr) continue;
    ProgSpec& prog = ctx.spec.progs[prog_idx];
    RelSite site{rel_sec, sec, i, prog, static_cast<uint32_t>(sec_insn - prog.section_insn_off)};
    const ElfSymbol& sym = ctx.elf.symbols()[rel.sym];
    switch (rel.type) {
      case kRBpf64_64:
        USERBPF_TRY(reloc_ld_imm64(ctx, site, sym));
        break;
      case kRBpf64_32:
        USERBPF_TRY(reloc_call(ctx, site, sym));
        break;
      default:
        return make_error(ENOTSUP,
                          "relocation #%zu in '%s': type %u (%s) at offset 0x%" PRIx64
                          " of section '%s' is not supported in code",
                          i, rel_sec.name.c_str(), rel.type, reloc_type_name(rel.type), rel.offset,
                          sec.name.c_str());
    }
  }
  return Status::Ok();
}

// Data sections keep their bytes as the compiler wrote them (libbpf does not
// apply these either); only absolute address relocations are expected.
Status data_relocations(OpenContext& ctx, const ElfSection& rel_sec, const ElfSection& sec) {
  auto rels = ctx.elf.relocations(rel_sec);
  if (!rels.ok()) return rels.take_error();
  for (size_t i = 0; i < rels->size(); i++) {
    const ElfRel& rel = (*rels)[i];
    uint64_t width = rel.type == kRBpf64Abs64 ? 8 : rel.type == kRBpf64Abs32 ? 4 : 0;
    if (rel.type == kRBpfNone) continue;
    if (width == 0)
      return make_error(ENOTSUP,
                        "relocation #%zu in '%s': type %u (%s) at offset 0x%" PRIx64
                        " of data section '%s' is not supported",
                        i, rel_sec.name.c_str(), rel.type, reloc_type_name(rel.type), rel.offset,
                        sec.name.c_str());
    if (rel.offset > sec.size || width > sec.size - rel.offset)
      return make_error(EINVAL,
                        "relocation #%zu in '%s': %s at offset 0x%" PRIx64
                        " is outside section '%s' (size 0x%" PRIx64 ")",
                        i, rel_sec.name.c_str(), reloc_type_name(rel.type), rel.offset,
                        sec.name.c_str(), sec.size);
  }
  return Status::Ok();
}

// Cross-function references inside one section without an ELF relocation.
Status local_references(OpenContext& ctx) {
  for (auto& [shndx, funcs] : ctx.funcs_by_shndx) {
    const ElfSection& sec = *ctx.elf.section(shndx);
    for (uint32_t idx : funcs) {
      ProgSpec& p = ctx.spec.progs[idx];
      auto by_insn = [](const RelocSpec& a, const RelocSpec& b) { return a.insn_idx < b.insn_idx; };
      std::sort(p.relocs.begin(), p.relocs.end(), by_insn);
      std::vector<bool> has_reloc(p.insns.size(), false);
      for (size_t k = 0; k < p.relocs.size(); k++) {
        if (k > 0 && p.relocs[k].insn_idx == p.relocs[k - 1].insn_idx)
          return make_error(EINVAL,
                            "program '%s' (section '%s', insn %u): two relocations for the "
                            "same instruction",
                            p.name.c_str(), p.section.c_str(), p.relocs[k].insn_idx);
        has_reloc[p.relocs[k].insn_idx] = true;
      }
      for (uint32_t i = 0; i < p.insns.size(); i++) {
        const isa::Insn& insn = p.insns[i];
        bool ld = insn.code == isa::kLdImm64;
        bool call = insn.code == isa::kCall && insn.src == isa::kPseudoCall;
        auto what = [&] {
          return "program '" + p.name + "' (section '" + p.section + "', insn " +
                 std::to_string(i) + ")";
        };
        if (!has_reloc[i] && ld && insn.src != 0 && insn.src != isa::kPseudoFunc)
          return make_error(EINVAL, "%s: ld_imm64 with pseudo source %u but no relocation",
                            what().c_str(), insn.src);
        if (!has_reloc[i] && insn.code == isa::kCall && insn.src == isa::kPseudoKfuncCall)
          return make_error(EINVAL, "%s: kfunc call without a relocation naming the kfunc",
                            what().c_str());
        if (!has_reloc[i] && ((ld && insn.src == isa::kPseudoFunc) || call)) {
          int64_t target = int64_t{p.section_insn_off} + i + insn.imm + 1;
          auto f = func_at(ctx, sec, target, what());
          if (!f.ok()) return f.take_error();
          RelocSpec r{};
          r.kind = call ? RelocSpec::Kind::kCall : RelocSpec::Kind::kFunc;
          r.insn_idx = i;
          r.symbol = (*f)->name;
          r.target_section = sec.name;
          r.target_insn = (*f)->section_insn_off;
          p.relocs.push_back(std::move(r));
        }
        if (ld) i++;
      }
      std::sort(p.relocs.begin(), p.relocs.end(), by_insn);
    }
  }
  return Status::Ok();
}

}  // namespace

Status collect_relocations(OpenContext& ctx) {
  for (const ElfSection& rel_sec : ctx.elf.sections()) {
    if (rel_sec.type != SHT_REL && rel_sec.type != SHT_RELA) continue;
    const ElfSection* sec = ctx.elf.section(rel_sec.info);
    if (sec == nullptr || sec->index == 0 || sec->index == rel_sec.index)
      return make_error(EINVAL, "relocation section '%s': target section index %u is invalid",
                        rel_sec.name.c_str(), rel_sec.info);
    bool code = (sec->flags & SHF_EXECINSTR) != 0;
    bool maps = sec->index == ctx.maps_shndx;
    bool data = ctx.data_map_by_shndx.count(sec->index) != 0;
    if (!code && !maps && !data) continue;  // debug info, BTF, ...: not applied, as in libbpf
    if (rel_sec.type == SHT_RELA)
      return make_error(ENOTSUP,
                        "relocation section '%s' for '%s' is SHT_RELA; BPF objects use "
                        "SHT_REL",
                        rel_sec.name.c_str(), sec->name.c_str());
    if (code) {
      USERBPF_TRY(code_relocations(ctx, rel_sec, *sec));
    } else if (data) {
      USERBPF_TRY(data_relocations(ctx, rel_sec, *sec));
    } else {
      auto rels = ctx.elf.relocations(rel_sec);
      if (!rels.ok()) return rels.take_error();
      if (!rels->empty()) {
        const ElfRel& r = rels->front();
        return make_error(ENOTSUP,
                          "relocation #0 in '%s': %s against '%s' at offset 0x%" PRIx64
                          " of .maps: map-in-map and prog-array initialization are not supported",
                          rel_sec.name.c_str(), reloc_type_name(r.type),
                          ctx.elf.symbols()[r.sym].name.c_str(), r.offset);
      }
    }
  }
  return local_references(ctx);
}

}  // namespace userbpf::loader
