// load_object(): creates the object's maps, links every entry program with
// the subprograms it reaches (libbpf's bpf_object__reloc_code order),
// rewrites references into the linked form of vm/program.h, resolves kfuncs
// and checks helper ids, then prepares each program.
#include <cinttypes>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "helpers/registry.h"
#include "loader/object.h"
#include "loader/open_internal.h"
#include "maps/registry.h"
#include "mem/domain.h"

namespace userbpf::loader {

namespace {

Error with_prefix(const std::string& prefix, Error e) {
  e.message = prefix + ": " + e.message;
  return e;
}

Status init_global_data(const MapSpec& ms, maps::Map* map) {
  if (ms.init.size() != ms.attr.value_size)
    return make_error(EINVAL, "map '%s': initial value has %zu bytes, value_size is %u",
                      ms.attr.name.c_str(), ms.init.size(), ms.attr.value_size);
  bool zero = true;
  for (uint8_t b : ms.init) zero = zero && b == 0;
  if (!zero) {
    void* value = map->ops->direct_value_addr ? map->ops->direct_value_addr(map) : nullptr;
    if (value != nullptr) {
      std::memcpy(value, ms.init.data(), ms.init.size());
    } else {
      uint32_t key = 0;
      long err = map->ops->update_elem
                     ? map->ops->update_elem(map, &key, ms.init.data(), maps::kBpfAny)
                     : -EOPNOTSUPP;
      if (err < 0)
        return make_error(static_cast<int>(-err),
                          "map '%s': cannot write its initial value (errno %ld)",
                          ms.attr.name.c_str(), -err);
    }
  }
  if (ms.readonly) map->frozen.store(true, std::memory_order_release);
  return Status::Ok();
}

class Linker {
 public:
  Linker(const ObjectSpec& spec, const std::vector<maps::Map*>& maps) : spec_(spec), maps_(maps) {
    for (uint32_t i = 0; i < spec.progs.size(); i++)
      funcs_.emplace(std::make_pair(spec.progs[i].section, spec.progs[i].section_insn_off), i);
  }

  Result<std::unique_ptr<vm::Program>> link(uint32_t entry);

 private:
  Status apply(vm::Program& prog, std::vector<int64_t>& placed, uint32_t func, uint32_t base,
               const RelocSpec& r, std::vector<std::pair<uint32_t, uint32_t>>& stack);
  Result<uint32_t> kfunc_index(vm::Program& prog, const std::string& name);

  const ObjectSpec& spec_;
  const std::vector<maps::Map*>& maps_;
  std::map<std::pair<std::string, uint32_t>, uint32_t> funcs_;
  std::map<std::string, uint32_t> kfunc_idx_;
};

Result<uint32_t> Linker::kfunc_index(vm::Program& prog, const std::string& name) {
  if (auto it = kfunc_idx_.find(name); it != kfunc_idx_.end()) return it->second;
  const vm::HelperProto* proto = helpers::find_kfunc(name);
  if (proto == nullptr) return make_error(ENOENT, "unknown kfunc '%s'", name.c_str());
  auto idx = static_cast<uint32_t>(prog.kfuncs.size());
  prog.kfuncs.push_back(proto);
  kfunc_idx_[name] = idx;
  return idx;
}

Status Linker::apply(vm::Program& prog, std::vector<int64_t>& placed, uint32_t func, uint32_t base,
                     const RelocSpec& r, std::vector<std::pair<uint32_t, uint32_t>>& stack) {
  const ProgSpec& f = spec_.progs[func];
  bool ld = r.kind != RelocSpec::Kind::kCall && r.kind != RelocSpec::Kind::kKfunc;
  if (r.insn_idx >= f.insns.size() || (ld && r.insn_idx + 1 >= f.insns.size()))
    return make_error(EINVAL, "function '%s': relocation at insn %u outside its %zu insns",
                      f.name.c_str(), r.insn_idx, f.insns.size());
  const size_t pc = base + r.insn_idx;
  isa::Insn& insn = prog.insns[pc];
  if (ld ? insn.code != isa::kLdImm64 : insn.code != isa::kCall)
    return make_error(EINVAL, "function '%s': relocation at insn %u on opcode 0x%02x",
                      f.name.c_str(), r.insn_idx, insn.code);
  switch (r.kind) {
    case RelocSpec::Kind::kMap:
    case RelocSpec::Kind::kMapValue: {
      if (r.map_idx >= maps_.size())
        return make_error(EINVAL, "function '%s' insn %u: map index %u out of range (%zu maps)",
                          f.name.c_str(), r.insn_idx, r.map_idx, maps_.size());
      bool value = r.kind == RelocSpec::Kind::kMapValue;
      if (value && r.offset >= maps_[r.map_idx]->attr.value_size)
        return make_error(EINVAL,
                          "function '%s' insn %u: offset %u outside map '%s' value (%u bytes)",
                          f.name.c_str(), r.insn_idx, r.offset, maps_[r.map_idx]->attr.name.c_str(),
                          maps_[r.map_idx]->attr.value_size);
      insn.src = value ? isa::kPseudoMapIdxValue : isa::kPseudoMapIdx;
      insn.imm = static_cast<int32_t>(r.map_idx);
      prog.insns[pc + 1].imm = value ? static_cast<int32_t>(r.offset) : 0;
      return Status::Ok();
    }
    case RelocSpec::Kind::kKfunc: {
      auto idx = kfunc_index(prog, r.symbol);
      if (!idx.ok()) return with_prefix("insn " + std::to_string(pc), idx.take_error());
      insn.src = isa::kPseudoKfuncCall;
      insn.off = 0;
      insn.imm = static_cast<int32_t>(*idx);
      return Status::Ok();
    }
    case RelocSpec::Kind::kCall:
    case RelocSpec::Kind::kFunc: {
      auto it = funcs_.find({r.target_section, r.target_insn});
      if (it == funcs_.end())
        return make_error(
            EINVAL, "function '%s' insn %u: no function '%s' at insn %u of section '%s'",
            f.name.c_str(), r.insn_idx, r.symbol.c_str(), r.target_insn, r.target_section.c_str());
      uint32_t g = it->second;
      if (placed[g] < 0) {
        placed[g] = static_cast<int64_t>(prog.insns.size());
        const auto& gi = spec_.progs[g].insns;
        prog.insns.insert(prog.insns.end(), gi.begin(), gi.end());
        stack.emplace_back(g, 0);
      }
      isa::Insn& site = prog.insns[pc];  // insert() may have moved the vector
      site.src = r.kind == RelocSpec::Kind::kCall ? isa::kPseudoCall : isa::kPseudoFunc;
      site.imm = static_cast<int32_t>(placed[g] - static_cast<int64_t>(pc) - 1);
      if (r.kind == RelocSpec::Kind::kFunc) prog.insns[pc + 1].imm = 0;
      return Status::Ok();
    }
  }
  return make_error(EINVAL, "function '%s': unknown relocation kind %u", f.name.c_str(),
                    static_cast<unsigned>(r.kind));
}

Result<std::unique_ptr<vm::Program>> Linker::link(uint32_t entry) {
  const ProgSpec& e = spec_.progs[entry];
  auto prog = std::make_unique<vm::Program>();
  prog->name = e.name;
  prog->section = e.section;
  prog->type = e.type;
  prog->sleepable = e.sleepable;
  prog->license = spec_.license;
  prog->maps = maps_;
  prog->helpers = helpers::helper_table();
  prog->insns = e.insns;
  kfunc_idx_.clear();

  // Depth-first, each function appended once when first referenced and its
  // own references processed before the caller's next one (libbpf's order).
  std::vector<int64_t> placed(spec_.progs.size(), -1);
  placed[entry] = 0;
  std::vector<std::pair<uint32_t, uint32_t>> stack{{entry, 0}};  // (function, next reloc)
  while (!stack.empty()) {
    auto [func, next] = stack.back();
    const ProgSpec& f = spec_.progs[func];
    if (next == f.relocs.size()) {
      stack.pop_back();
      continue;
    }
    stack.back().second++;
    USERBPF_TRY(
        apply(*prog, placed, func, static_cast<uint32_t>(placed[func]), f.relocs[next], stack));
  }

  for (size_t pc = 0; pc < prog->insns.size(); pc++) {
    const isa::Insn& insn = prog->insns[pc];
    if (insn.code == isa::kLdImm64) {
      pc++;
      continue;
    }
    if (insn.code == isa::kCall && insn.src == isa::kPseudoCallHelper &&
        helpers::find_helper(static_cast<uint32_t>(insn.imm)) == nullptr)
      return make_error(EINVAL, "unknown helper id %d (call at insn %zu)", insn.imm, pc);
  }
  return prog;
}

}  // namespace

Result<std::unique_ptr<LoadedObject>> load_object(const ObjectSpec& spec, mem::MemDomain* domain) {
  auto obj = std::make_unique<LoadedObject>();
  std::vector<maps::Map*> raw_maps;
  for (const MapSpec& ms : spec.maps) {
    std::string what = "section '" + ms.section + "'";
    if (!ms.is_global_data && !ms.init.empty())
      return make_error(EINVAL, "%s: map '%s': only global data maps take an initial value",
                        what.c_str(), ms.attr.name.c_str());
    maps::MapAttr attr = ms.attr;
    attr.domain = domain;
    auto m = maps::create_map(attr);
    if (!m.ok()) return with_prefix(what, m.take_error());
    obj->maps.emplace_back(*m);
    raw_maps.push_back(*m);
    if (ms.is_global_data) USERBPF_TRY(init_global_data(ms, *m));
  }

  std::optional<Btf> btf;
  if (!spec.btf.empty()) {
    auto parsed = Btf::parse(spec.btf);
    if (!parsed.ok()) return parsed.take_error();
    btf.emplace(std::move(*parsed));
  }
  mem::MemDomain& mem = domain ? *domain : mem::default_mem_domain();

  Linker linker(spec, raw_maps);
  for (uint32_t i = 0; i < spec.progs.size(); i++) {
    const ProgSpec& p = spec.progs[i];
    if (p.is_subprog) continue;
    std::string what = "program '" + p.name + "' (section '" + p.section + "')";
    auto prog = linker.link(i);
    if (!prog.ok()) return with_prefix(what, prog.take_error());
    (*prog)->mem_domain = &mem;
    if (Status st = resolve_obj_new_calls(**prog, btf ? &*btf : nullptr, mem); !st.ok())
      return with_prefix(what, st.take_error());
    // prepare_program() errors already name the program and pc.
    USERBPF_TRY(vm::prepare_program(**prog));
    obj->programs.push_back(std::move(*prog));
  }
  return obj;
}

}  // namespace userbpf::loader
