// ElfFile: header and section-table validation on the raw image, then
// section, symbol and relocation access through libelf (elf_memory).
//
// The raw checks come first so that libelf is only ever asked about ranges
// known to lie inside the image; libelf's own checks are a second line.
#include "loader/elf_file.h"

#include <gelf.h>
#include <libelf.h>

#include <cinttypes>
#include <cstring>

namespace userbpf::loader {

namespace {

#ifndef EM_BPF
#define EM_BPF 247
#endif

// a + b <= limit without overflow.
bool range_ok(uint64_t off, uint64_t len, uint64_t limit) {
  return off <= limit && len <= limit - off;
}

const char* elf_err() {
  const char* msg = elf_errmsg(-1);
  return msg ? msg : "unknown libelf error";
}

// Validates the ELF header, the section header table and every section's
// file range on the raw bytes.
Status check_raw_headers(const uint8_t* p, size_t size) {
  if (size < sizeof(Elf64_Ehdr))
    return make_error(EINVAL, "ELF: file too small for an ELF header (%zu bytes, need %zu)", size,
                      sizeof(Elf64_Ehdr));
  Elf64_Ehdr eh;
  std::memcpy(&eh, p, sizeof(eh));
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return make_error(EINVAL, "ELF: bad magic, not an ELF file");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64)
    return make_error(EINVAL, "ELF: class %u is not ELFCLASS64 (BPF objects are 64-bit)",
                      eh.e_ident[EI_CLASS]);
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
    return make_error(EINVAL, "ELF: data encoding %u is not little-endian (ELFDATA2LSB)",
                      eh.e_ident[EI_DATA]);
  if (eh.e_ident[EI_VERSION] != EV_CURRENT || eh.e_version != EV_CURRENT)
    return make_error(EINVAL, "ELF: unsupported ELF version %u", eh.e_ident[EI_VERSION]);
  if (eh.e_type != ET_REL)
    return make_error(EINVAL, "ELF: e_type %u is not ET_REL (expected a relocatable object)",
                      eh.e_type);
  if (eh.e_machine != EM_BPF)
    return make_error(EINVAL, "ELF: e_machine %u is not EM_BPF (%u): not a BPF object",
                      eh.e_machine, EM_BPF);
  if (eh.e_ehsize != sizeof(Elf64_Ehdr))
    return make_error(EINVAL, "ELF: e_ehsize %u, expected %zu", eh.e_ehsize, sizeof(Elf64_Ehdr));
  if (eh.e_phnum != 0 || eh.e_phoff != 0)
    return make_error(
        EINVAL, "ELF: relocatable object has program headers (e_phoff 0x%" PRIx64 ", e_phnum %u)",
        eh.e_phoff, eh.e_phnum);
  if (eh.e_shoff == 0) return make_error(EINVAL, "ELF: no section header table (e_shoff 0)");
  if (eh.e_shentsize != sizeof(Elf64_Shdr))
    return make_error(EINVAL, "ELF: e_shentsize %u, expected %zu", eh.e_shentsize,
                      sizeof(Elf64_Shdr));
  if (eh.e_shoff % 8 != 0)
    return make_error(EINVAL, "ELF: e_shoff 0x%" PRIx64 " is not 8-byte aligned", eh.e_shoff);
  if (!range_ok(eh.e_shoff, sizeof(Elf64_Shdr), size))
    return make_error(EINVAL,
                      "ELF: section header table at 0x%" PRIx64 " is past the end (size %zu)",
                      eh.e_shoff, size);
  Elf64_Shdr sh0;
  std::memcpy(&sh0, p + eh.e_shoff, sizeof(sh0));
  uint64_t shnum = eh.e_shnum != 0 ? eh.e_shnum : sh0.sh_size;  // extended numbering
  if (shnum == 0) return make_error(EINVAL, "ELF: no sections");
  if (shnum > (size - eh.e_shoff) / sizeof(Elf64_Shdr))
    return make_error(EINVAL,
                      "ELF: section header table (0x%" PRIx64 " + %" PRIu64
                      " entries) runs past the end of the file (size %zu)",
                      eh.e_shoff, shnum, size);
  uint64_t shstrndx = eh.e_shstrndx == SHN_XINDEX ? sh0.sh_link : eh.e_shstrndx;
  if (shstrndx == SHN_UNDEF || shstrndx >= shnum)
    return make_error(
        EINVAL, "ELF: section name table index %" PRIu64 " out of range (%" PRIu64 " sections)",
        shstrndx, shnum);
  for (uint64_t i = 0; i < shnum; i++) {
    Elf64_Shdr sh;
    std::memcpy(&sh, p + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    if (sh.sh_type == SHT_NULL || sh.sh_type == SHT_NOBITS) continue;
    if (!range_ok(sh.sh_offset, sh.sh_size, size))
      return make_error(EINVAL,
                        "ELF: section #%" PRIu64 " data [0x%" PRIx64 ", +0x%" PRIx64
                        ") runs past the end of the file (size %zu)",
                        i, sh.sh_offset, sh.sh_size, size);
  }
  return Status::Ok();
}

Elf* as_elf(void* p) {
  return static_cast<Elf*>(p);
}

}  // namespace

const char* reloc_type_name(uint32_t type) {
  switch (type) {
    case kRBpfNone:
      return "R_BPF_NONE";
    case kRBpf64_64:
      return "R_BPF_64_64";
    case kRBpf64Abs64:
      return "R_BPF_64_ABS64";
    case kRBpf64Abs32:
      return "R_BPF_64_ABS32";
    case kRBpf64NoDyld32:
      return "R_BPF_64_NODYLD32";
    case kRBpf64_32:
      return "R_BPF_64_32";
  }
  return "unknown";
}

void ElfFile::ElfDeleter::operator()(void* elf) const {
  elf_end(as_elf(elf));
}

ElfFile::~ElfFile() = default;

Result<std::unique_ptr<ElfFile>> ElfFile::open(const void* data, size_t size) {
  if (data == nullptr && size != 0) return make_error(EINVAL, "ELF: null image");
  auto file = std::unique_ptr<ElfFile>(new ElfFile());
  file->image_.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
  USERBPF_TRY(check_raw_headers(file->image_.data(), size));

  if (elf_version(EV_CURRENT) == EV_NONE)
    return make_error(EINVAL, "ELF: libelf initialization failed: %s", elf_err());
  Elf* elf = elf_memory(reinterpret_cast<char*>(file->image_.data()), size);
  if (elf == nullptr) return make_error(EINVAL, "ELF: libelf cannot read the image: %s", elf_err());
  file->elf_.reset(elf);
  if (elf_kind(elf) != ELF_K_ELF) return make_error(EINVAL, "ELF: not an ELF object");

  USERBPF_TRY(file->load_sections());
  USERBPF_TRY(file->load_symbols());
  return file;
}

Status ElfFile::load_sections() {
  Elf* elf = as_elf(elf_.get());
  size_t shnum = 0, shstrndx = 0;
  if (elf_getshdrnum(elf, &shnum) != 0 || shnum == 0)
    return make_error(EINVAL, "ELF: cannot read the section count: %s", elf_err());
  if (elf_getshdrstrndx(elf, &shstrndx) != 0 || shstrndx >= shnum)
    return make_error(EINVAL, "ELF: cannot find the section name table: %s", elf_err());

  sections_.resize(shnum);
  for (size_t i = 0; i < shnum; i++) {
    ElfSection& s = sections_[i];
    s.index = static_cast<uint32_t>(i);
    Elf_Scn* scn = elf_getscn(elf, i);
    GElf_Shdr sh;
    if (scn == nullptr || gelf_getshdr(scn, &sh) == nullptr)
      return make_error(EINVAL, "ELF: cannot read section header #%zu: %s", i, elf_err());
    s.type = sh.sh_type;
    s.flags = sh.sh_flags;
    s.offset = sh.sh_offset;
    s.size = sh.sh_size;
    s.link = sh.sh_link;
    s.info = sh.sh_info;
    s.addralign = sh.sh_addralign;
    s.entsize = sh.sh_entsize;
    if (i == 0) continue;  // the null section has no name
    const char* name = elf_strptr(elf, shstrndx, sh.sh_name);
    if (name == nullptr)
      return make_error(EINVAL,
                        "ELF: section #%zu: name offset 0x%x is not a string of the "
                        "section name table (section #%zu): %s",
                        i, sh.sh_name, shstrndx, elf_err());
    s.name = name;
  }
  if (sections_[shstrndx].type != SHT_STRTAB)
    return make_error(EINVAL, "ELF: section name table #%zu is not SHT_STRTAB", shstrndx);

  for (ElfSection& s : sections_) {
    if (s.type != SHT_PROGBITS || s.size == 0 || (s.flags & SHF_COMPRESSED)) continue;
    Elf_Data* d = elf_getdata(elf_getscn(elf, s.index), nullptr);
    if (d == nullptr || d->d_size != s.size || d->d_buf == nullptr)
      return make_error(EINVAL,
                        "ELF: cannot read data of section '%s' (#%u, offset 0x%" PRIx64
                        ", size 0x%" PRIx64 "): %s",
                        s.name.c_str(), s.index, s.offset, s.size, elf_err());
    s.data = std::span<const uint8_t>(static_cast<const uint8_t*>(d->d_buf), d->d_size);
  }
  return Status::Ok();
}

Status ElfFile::load_symbols() {
  Elf* elf = as_elf(elf_.get());
  for (const ElfSection& s : sections_) {
    if (s.type == SHT_SYMTAB_SHNDX)
      return make_error(EINVAL,
                        "ELF: section '%s': extended symbol section indexes "
                        "(SHT_SYMTAB_SHNDX) are not supported",
                        s.name.c_str());
    if (s.type != SHT_SYMTAB) continue;
    if (symtab_index_ != 0)
      return make_error(EINVAL, "ELF: more than one symbol table (sections #%u and #%u)",
                        symtab_index_, s.index);
    symtab_index_ = s.index;
  }
  if (symtab_index_ == 0) return Status::Ok();  // checked by the loader when it needs one

  const ElfSection& st = sections_[symtab_index_];
  if (st.entsize != sizeof(Elf64_Sym) || st.size % sizeof(Elf64_Sym) != 0)
    return make_error(EINVAL,
                      "ELF: symbol table '%s': entry size %" PRIu64 " / size %" PRIu64
                      " do not match Elf64_Sym (%zu bytes)",
                      st.name.c_str(), st.entsize, st.size, sizeof(Elf64_Sym));
  if (st.link == 0 || st.link >= sections_.size() || sections_[st.link].type != SHT_STRTAB)
    return make_error(EINVAL,
                      "ELF: symbol table '%s': string table index %u is not a "
                      "SHT_STRTAB section",
                      st.name.c_str(), st.link);
  if (st.size == 0) return Status::Ok();
  Elf_Data* d = elf_getdata(elf_getscn(elf, st.index), nullptr);
  if (d == nullptr || d->d_size != st.size)
    return make_error(EINVAL, "ELF: cannot read symbol table '%s': %s", st.name.c_str(), elf_err());

  size_t count = st.size / sizeof(Elf64_Sym);
  symbols_.resize(count);
  for (size_t i = 0; i < count; i++) {
    GElf_Sym sym;
    if (gelf_getsym(d, static_cast<int>(i), &sym) == nullptr)
      return make_error(EINVAL, "ELF: cannot read symbol #%zu: %s", i, elf_err());
    ElfSymbol& out = symbols_[i];
    out.index = static_cast<uint32_t>(i);
    const char* name = elf_strptr(elf, st.link, sym.st_name);
    if (name == nullptr)
      return make_error(EINVAL, "ELF: symbol #%zu: name offset 0x%x outside string table '%s'", i,
                        sym.st_name, sections_[st.link].name.c_str());
    out.name = name;
    out.bind = GELF_ST_BIND(sym.st_info);
    out.type = GELF_ST_TYPE(sym.st_info);
    out.shndx = sym.st_shndx;
    out.value = sym.st_value;
    out.size = sym.st_size;
    if (sym.st_shndx == SHN_XINDEX)
      return make_error(EINVAL, "ELF: symbol #%zu '%s': extended section index not supported", i,
                        name);
    if (sym.st_shndx != SHN_UNDEF && sym.st_shndx < SHN_LORESERVE &&
        sym.st_shndx >= sections_.size())
      return make_error(EINVAL,
                        "ELF: symbol #%zu '%s': section index %u out of range (%zu "
                        "sections)",
                        i, name, sym.st_shndx, sections_.size());
  }
  return Status::Ok();
}

const ElfSection* ElfFile::find_section(std::string_view name) const {
  for (const ElfSection& s : sections_)
    if (s.index != 0 && s.name == name) return &s;
  return nullptr;
}

Result<std::vector<ElfRel>> ElfFile::relocations(const ElfSection& rel) const {
  if (rel.type != SHT_REL)
    return make_error(EINVAL, "ELF: section '%s' is not a SHT_REL section", rel.name.c_str());
  if (rel.entsize != sizeof(Elf64_Rel) || rel.size % sizeof(Elf64_Rel) != 0)
    return make_error(EINVAL,
                      "ELF: relocation section '%s': entry size %" PRIu64 " / size %" PRIu64
                      " do not match Elf64_Rel (%zu bytes)",
                      rel.name.c_str(), rel.entsize, rel.size, sizeof(Elf64_Rel));
  if (symtab_index_ == 0 || rel.link != symtab_index_)
    return make_error(EINVAL,
                      "ELF: relocation section '%s': symbol table link %u is not the "
                      "symbol table (#%u)",
                      rel.name.c_str(), rel.link, symtab_index_);
  std::vector<ElfRel> out;
  if (rel.size == 0) return out;
  Elf* elf = as_elf(elf_.get());
  Elf_Data* d = elf_getdata(elf_getscn(elf, rel.index), nullptr);
  if (d == nullptr || d->d_size != rel.size)
    return make_error(EINVAL, "ELF: cannot read relocation section '%s': %s", rel.name.c_str(),
                      elf_err());
  size_t count = rel.size / sizeof(Elf64_Rel);
  out.resize(count);
  for (size_t i = 0; i < count; i++) {
    GElf_Rel r;
    if (gelf_getrel(d, static_cast<int>(i), &r) == nullptr)
      return make_error(EINVAL, "ELF: cannot read relocation #%zu of '%s': %s", i, rel.name.c_str(),
                        elf_err());
    out[i].offset = r.r_offset;
    out[i].sym = static_cast<uint32_t>(GELF_R_SYM(r.r_info));
    out[i].type = static_cast<uint32_t>(GELF_R_TYPE(r.r_info));
    if (out[i].sym >= symbols_.size())
      return make_error(EINVAL,
                        "ELF: relocation #%zu in '%s' (offset 0x%" PRIx64
                        "): symbol index %u out of range (%zu symbols)",
                        i, rel.name.c_str(), r.r_offset, out[i].sym, symbols_.size());
  }
  return out;
}

}  // namespace userbpf::loader
