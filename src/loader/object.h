// The loader's interface: a BPF ELF object parsed into specs (open), then
// maps created, relocations applied and programs prepared (load), following
// libbpf's open -> load life cycle so callers can adjust map attributes and
// global data between the two.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "maps/registry.h"
#include "vm/program.h"

namespace userbpf::loader {

// A global variable of a data section: its ELF symbol (STT_OBJECT, any
// binding), which locates it inside the section's single array value.
struct GlobalVarSpec {
  std::string name;
  uint32_t offset = 0;  // within the section (the map's value)
  uint32_t size = 0;
};

// A map as the object declares it: a BTF-defined map in .maps, or a global
// data section (.data, .rodata, .bss, .data.*, .rodata.*) as a single-entry
// array whose value is the section's bytes.
struct MapSpec {
  maps::MapAttr attr;
  std::string section;        // ".maps", ".data", ".rodata.str1.1", ...
  std::vector<uint8_t> init;  // initial value for global data (value_size bytes)
  bool is_global_data = false;
  bool readonly = false;  // .rodata*: frozen after load
  uint32_t btf_key_type_id = 0;
  uint32_t btf_value_type_id = 0;
  std::vector<GlobalVarSpec> vars;  // global data: its variables, by ELF symbol
};

// A relocation the loader will apply at load time.
struct RelocSpec {
  enum class Kind : uint8_t {
    kMap,       // ld_imm64 of a map: src=kPseudoMapIdx
    kMapValue,  // ld_imm64 of a global variable: src=kPseudoMapIdxValue
    kCall,      // bpf-to-bpf call to another function (maybe another section)
    kFunc,      // ld_imm64 of a function address (callback): src=kPseudoFunc
    kKfunc,     // call of an extern kfunc, resolved by name
  };
  Kind kind;
  uint32_t insn_idx = 0;     // within the program's own instructions
  uint32_t map_idx = 0;      // kMap/kMapValue: index into ObjectSpec::maps
  uint32_t offset = 0;       // kMapValue: offset in the value
  std::string symbol;        // kCall/kFunc: target function; kKfunc: kfunc name
  uint32_t target_insn = 0;  // kCall/kFunc: target instruction within the symbol's section
  std::string target_section;
};

// A function in an executable section: an entry program (global function in
// a SEC() other than .text) or a subprogram (.text or static).
struct ProgSpec {
  std::string name;
  std::string section;
  vm::ProgType type = vm::ProgType::kUNSPEC;
  bool sleepable = false;
  bool is_subprog = false;
  uint32_t section_insn_off = 0;  // first instruction within its section
  std::vector<isa::Insn> insns;   // its instructions as in the ELF
  std::vector<RelocSpec> relocs;
};

struct ObjectSpec {
  std::string name;  // object name (file name without .bpf.o / .o)
  std::string license;
  uint32_t kern_version = 0;
  std::vector<MapSpec> maps;
  std::vector<ProgSpec> progs;  // entry programs and subprograms
  std::vector<uint8_t> btf;     // raw .BTF, kept for later consumers
};

// Parses an ELF BPF object. Every malformed input is an Error (EINVAL, or
// ENOTSUP for unsupported relocations), never a crash.
Result<ObjectSpec> open_object(const void* data, size_t size, const std::string& name);

struct LoadedObject {
  std::vector<maps::MapPtr> maps;                      // same order as ObjectSpec::maps
  std::vector<std::unique_ptr<vm::Program>> programs;  // entry programs only, object order
};

// Creates the maps (global data initialized, .rodata frozen), links each
// entry program with the subprograms it reaches, applies relocations,
// resolves helper ids and kfuncs, and prepares every program.
// Maps are created in domain (nullptr: mem::default_mem_domain()).
Result<std::unique_ptr<LoadedObject>> load_object(const ObjectSpec& spec,
                                                  mem::MemDomain* domain = nullptr);

// libbpf section name -> program type and sleepability (one table).
struct SectionDef {
  const char* prefix;  // "xdp", "tp", "kprobe", "fentry.s" ... (no trailing '/')
  vm::ProgType type;
  bool sleepable;
  bool exact;  // the whole name must match (no "/..." suffix); else the
               // name is prefix or prefix + "/..." (libbpf's "kprobe+")
};
const SectionDef* find_section_def(const std::string& section);

}  // namespace userbpf::loader
