// open_object(): ELF -> BTF -> license/version -> maps -> programs ->
// relocations -> CO-RE check, producing an ObjectSpec the caller may adjust
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

// CO-RE relocations need the running kernel's BTF, which user space lacks:
// applying none would silently read the wrong offsets, so refuse the object.
Status check_core_relos(const OpenContext& ctx) {
  if (ctx.btf == nullptr) return Status::Ok();  // .BTF.ext is meaningless without .BTF
  auto ext = usable_section(ctx.elf, ".BTF.ext");
  if (!ext.ok()) return ext.take_error();
  if (*ext == nullptr) return Status::Ok();
  auto relos = parse_core_relos((*ext)->data, *ctx.btf);
  if (!relos.ok()) return relos.take_error();
  if (relos->empty()) return Status::Ok();
  const CoreRelo& r = relos->front();
  std::string prog = "?";
  if (const ElfSection* s = ctx.elf.find_section(r.section))
    if (const ProgSpec* p = find_func(ctx, s->index, r.insn_off / sizeof(isa::Insn), nullptr))
      prog = p->name;
  return make_error(ENOTSUP,
                    "program '%s' (section '%s'): CO-RE relocations are not supported "
                    "(%zu in the object; first at byte offset %u: %s of type [%u] '%.*s', access "
                    "'%s')",
                    prog.c_str(), r.section.c_str(), relos->size(), r.insn_off,
                    core_relo_kind_name(r.kind), r.type_id,
                    static_cast<int>(ctx.btf->type_name(r.type_id).size()),
                    ctx.btf->type_name(r.type_id).data(), r.access.c_str());
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
  USERBPF_TRY(check_core_relos(ctx));
  return spec;
}

}  // namespace userbpf::loader
