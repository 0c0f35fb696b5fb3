// Shared state of open_object() while it turns an ElfFile into an
// ObjectSpec: the steps (maps, programs, relocations) live in their own files
// and communicate through OpenContext. Internal to src/loader.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loader/btf.h"
#include "loader/elf_file.h"
#include "loader/object.h"

namespace userbpf::loader {

struct OpenContext {
  OpenContext(const ElfFile& e, const Btf* b, ObjectSpec& s) : elf(e), btf(b), spec(s) {}

  const ElfFile& elf;
  const Btf* btf = nullptr;  // nullptr: the object has no .BTF
  ObjectSpec& spec;

  // Filled by collect_maps().
  uint32_t maps_shndx = 0;                         // the .maps section, 0 if none
  std::map<uint64_t, uint32_t> btf_map_by_offset;  // offset in .maps -> map index
  std::map<uint32_t, uint32_t> data_map_by_shndx;  // data section -> map index

  // Filled by collect_programs(): per executable section, its functions
  // (indexes into spec.progs) sorted by section_insn_off.
  std::map<uint32_t, std::vector<uint32_t>> funcs_by_shndx;
};

// .maps (BTF-defined maps) and global data sections -> spec.maps.
Status collect_maps(OpenContext& ctx);
// Executable sections -> spec.progs (entry programs and subprograms).
Status collect_programs(OpenContext& ctx);
// REL sections -> ProgSpec::relocs, plus calls and callback loads that are
// pc-relative within their section (no ELF relocation) as kCall/kFunc.
Status collect_relocations(OpenContext& ctx);

// The special fields (kptrs, bpf_spin_lock, bpf_timer, bpf_wq) of a map value
// of BTF type value_type_id, sorted; nullptr if it has none (btf_fields.cc).
Result<std::shared_ptr<const maps::FieldTable>> find_special_fields(const Btf& btf,
                                                                    uint32_t value_type_id,
                                                                    uint32_t value_size,
                                                                    const std::string& map);

// Load phase: resolves the type ids of prog's bpf_obj_new_impl /
// bpf_percpu_obj_new_impl calls (object_link_obj.cc); creates the per-CPU
// allocators they need in domain.
Status resolve_obj_new_calls(vm::Program& prog, const Btf* btf, mem::MemDomain& domain);

// The function of section shndx containing instruction insn (section
// relative), or nullptr.
const ProgSpec* find_func(const OpenContext& ctx, uint32_t shndx, uint64_t insn,
                          uint32_t* prog_idx);

}  // namespace userbpf::loader
