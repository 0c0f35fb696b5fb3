// Map definitions of an object: BTF-defined maps in .maps (libbpf's
// parse_btf_map_def rules) and global data sections (.data, .rodata, .bss and
// their named variants) as single-entry arrays.
#include <elf.h>

#include <cinttypes>

#include "loader/open_internal.h"

namespace userbpf::loader {

namespace {

constexpr uint32_t kMapTypeArray = 2;
// array_map_alloc_check() refuses larger values with E2BIG (x86-64: 4 MiB).
constexpr uint64_t kMaxGlobalDataSize = uint64_t{4} << 20;

std::string sv(std::string_view s) {
  return std::string(s);
}

// An integer attribute: __uint(name, val) is `int (*name)[val]`, a pointer to
// an array of val elements; __ulong(name, val) is an enum with one value.
Result<uint64_t> map_field_int(const Btf& btf, const std::string& map, const std::string& field,
                               uint32_t type) {
  auto id = btf.skip_mods_and_typedefs(type);
  if (!id.ok()) return id.take_error();
  const BtfType* t = btf.type_by_id(*id);
  if (t && (t->kind == BtfKind::kEnum || t->kind == BtfKind::kEnum64) && t->vlen == 1)
    return static_cast<uint64_t>(btf.enum_values(*t)[0].value);
  if (t == nullptr || t->kind != BtfKind::kPtr)
    return make_error(EINVAL,
                      ".maps: map '%s': attribute '%s': expected PTR (from __uint()), got %s",
                      map.c_str(), field.c_str(), t ? btf_kind_name(t->kind) : "void");
  const BtfType* arr = btf.type_by_id(t->size_or_type);
  if (arr == nullptr || arr->kind != BtfKind::kArray)
    return make_error(EINVAL,
                      ".maps: map '%s': attribute '%s': expected PTR to ARRAY, got PTR to %s",
                      map.c_str(), field.c_str(), arr ? btf_kind_name(arr->kind) : "void");
  return uint64_t{btf.array(*arr).nelems};
}

Result<uint32_t> map_field_u32(const Btf& btf, const std::string& map, const std::string& field,
                               uint32_t type) {
  auto v = map_field_int(btf, map, field, type);
  if (!v.ok()) return v.take_error();
  if (*v > UINT32_MAX)
    return make_error(EINVAL, ".maps: map '%s': attribute '%s' value %" PRIu64 " exceeds 32 bits",
                      map.c_str(), field.c_str(), *v);
  return static_cast<uint32_t>(*v);
}

// __type(name, T) is `typeof(T) *name`: the pointee gives the type id and size.
Status map_field_type(const Btf& btf, const std::string& map, const std::string& field,
                      uint32_t type, uint32_t& size, uint32_t& type_id) {
  auto id = btf.skip_mods_and_typedefs(type);
  if (!id.ok()) return id.take_error();
  const BtfType* t = btf.type_by_id(*id);
  if (t == nullptr || t->kind != BtfKind::kPtr)
    return make_error(EINVAL, ".maps: map '%s': '%s' spec is not PTR (use __type(%s, T)), got %s",
                      map.c_str(), field.c_str(), field.c_str(),
                      t ? btf_kind_name(t->kind) : "void");
  auto sz = btf.resolve_size(t->size_or_type);
  if (!sz.ok())
    return make_error(EINVAL, ".maps: map '%s': cannot size '%s' type [%u]: %s", map.c_str(),
                      field.c_str(), t->size_or_type, sz.error().message.c_str());
  if (*sz > UINT32_MAX)
    return make_error(EINVAL, ".maps: map '%s': '%s' type too large", map.c_str(), field.c_str());
  if (size != 0 && size != *sz)
    return make_error(EINVAL, ".maps: map '%s': conflicting %s size %u != %" PRIu64, map.c_str(),
                      field.c_str(), size, *sz);
  size = static_cast<uint32_t>(*sz);
  type_id = t->size_or_type;
  return Status::Ok();
}

Status set_size(const std::string& map, const char* field, uint32_t& size, uint32_t v) {
  if (size != 0 && size != v)
    return make_error(EINVAL, ".maps: map '%s': conflicting %s %u != %u", map.c_str(), field, size,
                      v);
  size = v;
  return Status::Ok();
}

Result<MapSpec> parse_btf_map(const Btf& btf, const BtfVarSecinfo& vi, uint64_t maps_size,
                              uint32_t idx) {
  const BtfType* var = btf.type_by_id(vi.type);
  if (var == nullptr || var->kind != BtfKind::kVar)
    return make_error(EINVAL, ".maps: DATASEC entry #%u: type [%u] is %s, expected VAR", idx,
                      vi.type, var ? btf_kind_name(var->kind) : "void");
  std::string name = sv(btf.str(var->name_off));
  if (name.empty()) return make_error(EINVAL, ".maps: DATASEC entry #%u: map without a name", idx);
  uint32_t linkage = btf.var_linkage(*var);
  if (linkage != kBtfVarStatic && linkage != kBtfVarGlobalAllocated)
    return make_error(ENOTSUP, ".maps: map '%s': unsupported linkage %u (extern map?)",
                      name.c_str(), linkage);
  if (uint64_t{vi.offset} + vi.size > maps_size)
    return make_error(EINVAL,
                      ".maps: map '%s': definition [%u, +%u) outside the .maps section "
                      "(size %" PRIu64 ")",
                      name.c_str(), vi.offset, vi.size, maps_size);
  auto def_id = btf.skip_mods_and_typedefs(var->size_or_type);
  if (!def_id.ok()) return def_id.take_error();
  const BtfType* def = btf.type_by_id(*def_id);
  if (def == nullptr || def->kind != BtfKind::kStruct)
    return make_error(EINVAL, ".maps: map '%s': definition is %s, expected STRUCT", name.c_str(),
                      def ? btf_kind_name(def->kind) : "void");
  if (def->size_or_type > vi.size)
    return make_error(EINVAL, ".maps: map '%s': definition size %u larger than its variable (%u)",
                      name.c_str(), def->size_or_type, vi.size);

  MapSpec spec;
  spec.section = ".maps";
  spec.attr.name = name;
  maps::MapAttr& a = spec.attr;
  for (const BtfMember& m : btf.members(*def)) {
    std::string field = sv(btf.str(m.name_off));
    if (field == "type") {
      auto v = map_field_u32(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      a.type = *v;
    } else if (field == "max_entries") {
      auto v = map_field_u32(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      a.max_entries = *v;
    } else if (field == "map_flags") {
      auto v = map_field_u32(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      a.map_flags = *v;
    } else if (field == "numa_node" || field == "pinning") {
      // Accepted for compatibility, no meaning in user space.
      auto v = map_field_int(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
    } else if (field == "map_extra") {
      auto v = map_field_int(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      a.map_extra = *v;
    } else if (field == "key_size") {
      auto v = map_field_u32(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      USERBPF_TRY(set_size(name, "key size", a.key_size, *v));
    } else if (field == "value_size") {
      auto v = map_field_u32(btf, name, field, m.type);
      if (!v.ok()) return v.take_error();
      USERBPF_TRY(set_size(name, "value size", a.value_size, *v));
    } else if (field == "key") {
      USERBPF_TRY(map_field_type(btf, name, "key", m.type, a.key_size, spec.btf_key_type_id));
    } else if (field == "value") {
      USERBPF_TRY(map_field_type(btf, name, "value", m.type, a.value_size, spec.btf_value_type_id));
    } else if (field == "values") {
      return make_error(ENOTSUP,
                        ".maps: map '%s': 'values' (map-in-map or prog array "
                        "initialization) is not supported",
                        name.c_str());
    } else {
      return make_error(ENOTSUP, ".maps: map '%s': unknown field '%s'", name.c_str(),
                        field.c_str());
    }
  }
  if (spec.btf_value_type_id != 0) {
    auto fields = find_special_fields(btf, spec.btf_value_type_id, a.value_size, name);
    if (!fields.ok()) return fields.take_error();
    a.fields = std::move(*fields);
  }
  return spec;
}

// Clang leaves the offsets of global variables in a DATASEC at 0 and lets
// the loader take them from the ELF symbols (libbpf's btf_fixup_datasec);
// static variables carry their real offsets.
Status fixup_var_offset(const OpenContext& ctx, const std::vector<const ElfSymbol*>& syms,
                        BtfVarSecinfo& vi) {
  const BtfType* var = ctx.btf->type_by_id(vi.type);
  if (var == nullptr || var->kind != BtfKind::kVar ||
      ctx.btf->var_linkage(*var) != kBtfVarGlobalAllocated)
    return Status::Ok();  // parse_btf_map() reports bad entries
  std::string_view name = ctx.btf->str(var->name_off);
  for (const ElfSymbol* sym : syms) {
    if (sym->name != name) continue;
    if (sym->value > UINT32_MAX)
      return make_error(EINVAL, ".maps: map '%s': symbol offset 0x%" PRIx64 " out of range",
                        sym->name.c_str(), sym->value);
    vi.offset = static_cast<uint32_t>(sym->value);
    return Status::Ok();
  }
  return make_error(EINVAL,
                    ".maps: map '%.*s': no global ELF symbol in section '.maps' for its "
                    "BTF variable",
                    static_cast<int>(name.size()), name.data());
}

Status collect_btf_maps(OpenContext& ctx, const ElfSection& sec) {
  ctx.maps_shndx = sec.index;
  if (sec.size == 0) return Status::Ok();
  if (ctx.btf == nullptr)
    return make_error(EINVAL,
                      "section '.maps' (%" PRIu64
                      " bytes) describes maps with BTF, but the "
                      "object has no .BTF section (compile with clang -g)",
                      sec.size);
  uint32_t ds_id = ctx.btf->find_by_name_kind(".maps", BtfKind::kDatasec);
  if (ds_id == 0)
    return make_error(EINVAL,
                      "section '.maps' (%" PRIu64
                      " bytes): the .BTF section has no "
                      "DATASEC '.maps' describing its maps",
                      sec.size);
  std::vector<const ElfSymbol*> syms;  // global objects in .maps
  for (const ElfSymbol& sym : ctx.elf.symbols())
    if (sym.shndx == sec.index && sym.type == STT_OBJECT &&
        (sym.bind == STB_GLOBAL || sym.bind == STB_WEAK))
      syms.push_back(&sym);
  auto vars = ctx.btf->datasec_vars(*ctx.btf->type_by_id(ds_id));
  for (uint32_t i = 0; i < vars.size(); i++) {
    USERBPF_TRY(fixup_var_offset(ctx, syms, vars[i]));
    auto m = parse_btf_map(*ctx.btf, vars[i], sec.size, i);
    if (!m.ok()) return m.take_error();
    if (ctx.btf_map_by_offset.count(vars[i].offset))
      return make_error(EINVAL, ".maps: map '%s' at offset %u overlaps another map",
                        m->attr.name.c_str(), vars[i].offset);
    ctx.btf_map_by_offset[vars[i].offset] = static_cast<uint32_t>(ctx.spec.maps.size());
    ctx.spec.maps.push_back(std::move(*m));
  }
  return Status::Ok();
}

bool is_named(const std::string& name, const char* base) {
  size_t n = std::char_traits<char>::length(base);
  return name.compare(0, n, base) == 0 && (name.size() == n || name[n] == '.');
}

}  // namespace

Status collect_maps(OpenContext& ctx) {
  // BTF-defined maps come first, then global data in section order (libbpf's
  // bpf_object__init_maps order), so map indexes match libbpf's.
  if (const ElfSection* s = ctx.elf.find_section(".maps")) USERBPF_TRY(collect_btf_maps(ctx, *s));

  for (const ElfSection& s : ctx.elf.sections()) {
    if (s.index == 0) continue;
    if (s.name == "maps" && s.type == SHT_PROGBITS && s.size != 0)
      return make_error(ENOTSUP,
                        "legacy section 'maps' (struct bpf_map_def) is not supported; "
                        "declare maps with BTF in SEC(\".maps\")");
    if ((s.name == ".struct_ops" || s.name == ".struct_ops.link") && s.size != 0)
      return make_error(ENOTSUP,
                        "section '%s' (%" PRIu64
                        " bytes of struct_ops maps) is not "
                        "supported: struct_ops maps register kernel callbacks",
                        s.name.c_str(), s.size);
    if (s.name == ".addr_space.1")
      return make_error(ENOTSUP,
                        "section '.addr_space.1' (%" PRIu64
                        " bytes of __arena global "
                        "variables) is not supported yet: arena maps are not implemented",
                        s.size);
    bool data =
        s.type == SHT_PROGBITS && (is_named(s.name, ".data") || is_named(s.name, ".rodata"));
    bool bss = s.type == SHT_NOBITS && is_named(s.name, ".bss");
    if ((!data && !bss) || (s.flags & SHF_EXECINSTR) || s.size == 0) continue;
    if (s.flags & SHF_COMPRESSED)
      return make_error(EINVAL, "data section '%s' is compressed", s.name.c_str());
    if (s.size > kMaxGlobalDataSize)
      return make_error(E2BIG,
                        "data section '%s' (%" PRIu64 " bytes) exceeds the %" PRIu64
                        "-byte limit of an array map value (the kernel's KMALLOC_MAX_SIZE)",
                        s.name.c_str(), s.size, kMaxGlobalDataSize);
    MapSpec m;
    m.section = s.name;
    m.is_global_data = true;
    m.readonly = is_named(s.name, ".rodata");
    m.attr.type = kMapTypeArray;
    m.attr.key_size = 4;
    m.attr.value_size = static_cast<uint32_t>(s.size);
    m.attr.max_entries = 1;
    m.attr.map_flags = m.readonly ? maps::kBpfFRdonlyProg : 0;
    m.attr.name = s.name;
    if (bss)
      m.init.assign(s.size, 0);
    else
      m.init.assign(s.data.begin(), s.data.end());
    if (ctx.btf) m.btf_value_type_id = ctx.btf->find_by_name_kind(s.name, BtfKind::kDatasec);
    for (const ElfSymbol& sym : ctx.elf.symbols()) {
      if (sym.shndx != s.index || sym.type != STT_OBJECT || sym.name.empty()) continue;
      if (sym.value > s.size || sym.size > s.size - sym.value) continue;  // not inside: ignored
      m.vars.push_back(GlobalVarSpec{sym.name, static_cast<uint32_t>(sym.value),
                                     static_cast<uint32_t>(sym.size)});
    }
    ctx.data_map_by_shndx[s.index] = static_cast<uint32_t>(ctx.spec.maps.size());
    ctx.spec.maps.push_back(std::move(m));
  }
  return Status::Ok();
}

}  // namespace userbpf::loader
