// A bounds-checked view of a BPF ELF relocatable object, read through libelf:
// the section table, the symbol table and REL sections, with every index and
// offset validated before anything else in the loader looks at them.
//
// Invariants once ElfFile::open() succeeded:
//   - the file is ELFCLASS64, ELFDATA2LSB, ET_REL, EM_BPF;
//   - sections()[i].index == i, and every non-NOBITS section lies inside the
//     image: data.size() == size (NOBITS and unread types: data is empty);
//   - there is at most one SHT_SYMTAB; every symbol's shndx is either a
//     special index (SHN_UNDEF, >= SHN_LORESERVE) or < sections().size(), and
//     its name is a NUL-terminated string of the linked string table;
//   - relocations() returns entries whose symbol index is < symbols().size().
// Offsets within a section (symbol values, relocation offsets) are NOT checked
// against that section's size here: their meaning depends on the section, so
// the callers check them and name the section and offset in their errors.
//
// Contexts: host only (loader). The object owns a private copy of the image
// (libelf may keep pointers into it), so the caller's buffer can go away.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace userbpf::loader {

struct ElfSection {
  uint32_t index = 0;
  std::string name;
  uint32_t type = 0;    // SHT_*
  uint64_t flags = 0;   // SHF_*
  uint64_t offset = 0;  // file offset, for diagnostics
  uint64_t size = 0;    // sh_size (NOBITS: bytes it occupies once loaded)
  uint32_t link = 0;
  uint32_t info = 0;
  uint64_t addralign = 0;
  uint64_t entsize = 0;
  std::span<const uint8_t> data;  // the section's bytes (PROGBITS only)
};

struct ElfSymbol {
  uint32_t index = 0;
  std::string name;
  uint8_t bind = 0;    // STB_*
  uint8_t type = 0;    // STT_*
  uint32_t shndx = 0;  // SHN_UNDEF, a section index, or a special index
  uint64_t value = 0;
  uint64_t size = 0;
};

struct ElfRel {
  uint64_t offset = 0;  // within the target section
  uint32_t sym = 0;     // index into ElfFile::symbols()
  uint32_t type = 0;    // R_BPF_*
};

// BPF relocation types (LLVM's ELF/RelocationTypes/BPF.def).
inline constexpr uint32_t kRBpfNone = 0;
inline constexpr uint32_t kRBpf64_64 = 1;
inline constexpr uint32_t kRBpf64Abs64 = 2;
inline constexpr uint32_t kRBpf64Abs32 = 3;
inline constexpr uint32_t kRBpf64NoDyld32 = 4;
inline constexpr uint32_t kRBpf64_32 = 10;
const char* reloc_type_name(uint32_t type);

class ElfFile {
 public:
  // Copies the image and validates headers, section table and symbols.
  // Errors are EINVAL and name the header field, section or symbol.
  static Result<std::unique_ptr<ElfFile>> open(const void* data, size_t size);
  ~ElfFile();
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  const std::vector<ElfSection>& sections() const { return sections_; }
  const ElfSection* section(uint32_t index) const {
    return index < sections_.size() ? &sections_[index] : nullptr;
  }
  const ElfSection* find_section(std::string_view name) const;
  const std::vector<ElfSymbol>& symbols() const { return symbols_; }
  uint32_t symtab_index() const { return symtab_index_; }  // 0: none

  // Entries of a SHT_REL section, symbol indexes checked.
  Result<std::vector<ElfRel>> relocations(const ElfSection& rel) const;

 private:
  ElfFile() = default;
  Status load_sections();
  Status load_symbols();

  std::vector<uint8_t> image_;
  struct ElfDeleter {
    void operator()(void* elf) const;
  };
  std::unique_ptr<void, ElfDeleter> elf_;  // Elf*, kept opaque to keep <libelf.h> out of headers
  std::vector<ElfSection> sections_;
  std::vector<ElfSymbol> symbols_;
  uint32_t symtab_index_ = 0;
};

}  // namespace userbpf::loader
