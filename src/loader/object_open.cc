// open_object(): ELF -> BTF -> license/version -> maps -> programs ->
// relocations -> CO-RE (type_id_local only), producing an ObjectSpec the caller may adjust
// before load_object().
#include <elf.h>

#include <cinttypes>
#include <cstring>
#include <optional>

#include "loader/btf_ext.h"
#include "loader/open_internal.h"

namespace userbpf::loader {

namespace {

std::string object_name(const std::string& path) {
  std::string name =
      path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  for (const char* suffix : {".bpf.o", ".o"}) {
    size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0) {
      name.resize(name.size() - n);
      break;
    }
  }
  return name;
}

Result<const ElfSection*> usable_section(const ElfFile& elf, const char* name) {
  const ElfSection* s = elf.find_section(name);
  if (s == nullptr) return s;
  if (s->type != SHT_PROGBITS)
    return make_error(EINVAL, "section '%s' has type %u, expected SHT_PROGBITS", name, s->type);
  if (s->flags & SHF_COMPRESSED)
    return make_error(EINVAL, "section '%s' is compressed (SHF_COMPRESSED is not supported)", name);
  return s;
}

Status read_license_version(const ElfFile& elf, ObjectSpec& spec) {
  auto lic = usable_section(elf, "license");
  if (!lic.ok()) return lic.take_error();
  if (*lic) {
    const auto& d = (*lic)->data;
    size_t n = 0;
    while (n < d.size() && d[n] != 0) n++;
    spec.license.assign(reinterpret_cast<const char*>(d.data()), n);
  }
  auto ver = usable_section(elf, "version");
  if (!ver.ok()) return ver.take_error();
  if (*ver) {
    if ((*ver)->size != sizeof(uint32_t))
      return make_error(EINVAL, "section 'version': size %" PRIu64 ", expected 4", (*ver)->size);
    std::memcpy(&spec.kern_version, (*ver)->data.data(), sizeof(uint32_t));
  }
  return Status::Ok();
}

constexpr uint32_t kCoreTypeIdLocal = 6;  // BPF_CORE_TYPE_ID_LOCAL

// BPF_CORE_TYPE_ID_LOCAL (bpf_core_type_id_local(), what bpf_obj_new passes):
// the type's id in the object's own BTF, written into the ld_imm64 or mov
// that loads it (libbpf's bpf_core_patch_insn for this kind).
Status apply_type_id_local(OpenContext& ctx, const CoreRelo& r, uint32_t shndx) {
  uint32_t prog_idx = 0;
  const uint64_t insn = r.insn_off / sizeof(isa::Insn);
  if (r.insn_off % sizeof(isa::Insn) != 0 || !find_func(ctx, shndx, insn, &prog_idx))
    return make_error(EINVAL,
                      "section '%s': CO-RE %s relocation at byte offset %u is not on an "
                      "instruction of a function",
                      r.section.c_str(), core_relo_kind_name(r.kind), r.insn_off);
  ProgSpec& p = ctx.spec.progs[prog_idx];
  const size_t k = insn - p.section_insn_off;
  if (ctx.btf->type_by_id(r.type_id) == nullptr)
    return make_error(EINVAL, "program '%s': CO-RE %s relocation names type [%u], not in BTF",
                      p.name.c_str(), core_relo_kind_name(r.kind), r.type_id);
  isa::Insn& in = p.insns[k];
  const uint8_t cls = isa::insn_class(in.code);
  if (in.code == isa::kLdImm64 && k + 1 < p.insns.size()) {
    in.imm = static_cast<int32_t>(r.type_id);
    p.insns[k + 1].imm = 0;
  } else if ((cls == isa::kClassAlu || cls == isa::kClassAlu64) &&
             isa::insn_op(in.code) == isa::kAluMov && isa::insn_src(in.code) == isa::kSrcK) {
    in.imm = static_cast<int32_t>(r.type_id);
  } else {
    return make_error(EINVAL,
                      "program '%s': CO-RE %s relocation at insn %zu on opcode 0x%02x "
                      "(expected ld_imm64 or mov with an immediate)",
                      p.name.c_str(), core_relo_kind_name(r.kind), k, in.code);
  }
  return Status::Ok();
}

// CO-RE relocations: BPF_CORE_TYPE_ID_LOCAL needs only the object's own BTF
// and is applied; every other kind needs the running kernel's BTF, which user
// space lacks: applying none would silently read the wrong offsets, so the
// object is refused.
Status apply_core_relos(OpenContext& ctx) {
  if (ctx.btf == nullptr) return Status::Ok();  // .BTF.ext is meaningless without .BTF
  auto ext = usable_section(ctx.elf, ".BTF.ext");
  if (!ext.ok()) return ext.take_error();
  if (*ext == nullptr) return Status::Ok();
  auto relos = parse_core_relos((*ext)->data, *ctx.btf);
  if (!relos.ok()) return relos.take_error();
  size_t unsupported = 0;
  const CoreRelo* first = nullptr;
  for (const CoreRelo& r : *relos) {
    if (r.kind != kCoreTypeIdLocal) {
      if (!first) first = &r;
      unsupported++;
    }
  }
  if (first) {
    const CoreRelo& r = *first;
    std::string prog = "?";
    if (const ElfSection* s = ctx.elf.find_section(r.section))
      if (const ProgSpec* p = find_func(ctx, s->index, r.insn_off / sizeof(isa::Insn), nullptr))
        prog = p->name;
    return make_error(ENOTSUP,
                      "program '%s' (section '%s'): CO-RE relocations are not supported "
                      "(%zu in the object; first at byte offset %u: %s of type [%u] '%.*s', access "
                      "'%s'; only type_id_local is)",
                      prog.c_str(), r.section.c_str(), unsupported, r.insn_off,
                      core_relo_kind_name(r.kind), r.type_id,
                      static_cast<int>(ctx.btf->type_name(r.type_id).size()),
                      ctx.btf->type_name(r.type_id).data(), r.access.c_str());
  }
  for (const CoreRelo& r : *relos) {
    const ElfSection* s = ctx.elf.find_section(r.section);
    if (s == nullptr)
      return make_error(EINVAL, ".BTF.ext: CO-RE relocation for missing section '%s'",
                        r.section.c_str());
    USERBPF_TRY(apply_type_id_local(ctx, r, s->index));
  }
  return Status::Ok();
}

}  // namespace

Result<ObjectSpec> open_object(const void* data, size_t size, const std::string& name) {
  auto elf = ElfFile::open(data, size);
  if (!elf.ok()) return elf.take_error();
  const ElfFile& file = **elf;

  if (file.symtab_index() == 0)
    return make_error(EINVAL,
                      "ELF: no symbol table (SHT_SYMTAB); programs and maps are found "
                      "through their symbols");
  ObjectSpec spec;
  spec.name = object_name(name);

  auto btf_sec = usable_section(file, ".BTF");
  if (!btf_sec.ok()) return btf_sec.take_error();
  std::optional<Btf> btf;
  if (*btf_sec) {
    auto parsed = Btf::parse((*btf_sec)->data);
    if (!parsed.ok()) return parsed.take_error();
    btf.emplace(std::move(*parsed));
    spec.btf = btf->raw();
  }
  USERBPF_TRY(read_license_version(file, spec));

  OpenContext ctx(file, btf ? &*btf : nullptr, spec);
  USERBPF_TRY(collect_maps(ctx));
  USERBPF_TRY(collect_programs(ctx));
  USERBPF_TRY(collect_relocations(ctx));
  USERBPF_TRY(apply_core_relos(ctx));
  return spec;
}

}  // namespace userbpf::loader
