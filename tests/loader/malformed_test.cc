// open_object() on malformed input built by patching valid objects: every
// truncation, corrupted ELF headers, section headers, symbols, relocations,
// instructions, BTF and .BTF.ext. Each must give the documented errno and a
// message naming the place, never a crash.
#include <gtest/gtest.h>

#include "loader_test_util.h"

namespace userbpf::loader {
namespace {

using testing::expect_error;
using testing::open_bytes;
using testing::RawElf;
using testing::read_prog;

class Malformed : public ::testing::Test {
 protected:
  void SetUp() override {
    bytes_ = read_prog("loader_main.bpf.o");
    ASSERT_TRUE(open_bytes(bytes_).ok());
  }
  Result<ObjectSpec> open() { return open_bytes(bytes_); }
  RawElf elf() { return RawElf(bytes_); }
  // Sets a section header field through a callback.
  template <class F>
  void patch_shdr(const std::string& name, F f) {
    RawElf e = elf();
    size_t i = e.find(name);
    Elf64_Shdr sh = e.shdr(i);
    f(sh);
    e.set_shdr(i, sh);
  }
  void patch_rel(const std::string& rel, size_t k, uint64_t offset, uint32_t sym, uint32_t type) {
    Elf64_Rel r{offset, ELF64_R_INFO(sym, type)};
    elf().put(elf().rel_off(rel, k), r);
  }
  Elf64_Rel rel(const std::string& rel, size_t k) {
    return elf().get<Elf64_Rel>(elf().rel_off(rel, k));
  }
  isa::Insn insn(const std::string& sec, size_t k) {
    return elf().get<isa::Insn>(elf().insn_off(sec, k));
  }
  void set_insn(const std::string& sec, size_t k, const isa::Insn& i) {
    elf().put(elf().insn_off(sec, k), i);
  }
  size_t btf_off() { return elf().shdr(elf().find(".BTF")).sh_offset; }

  std::vector<uint8_t> bytes_;
};

TEST(MalformedTruncation, EveryPrefixOfASmallObject) {
  std::vector<uint8_t> full = read_prog("loader_order.bpf.o");
  ASSERT_TRUE(open_bytes(full).ok());
  for (size_t n = 0; n < full.size(); n++) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    auto r = open_bytes(cut);
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes opened";
    ASSERT_EQ(r.error().code, EINVAL) << n << ": " << r.error().message;
  }
}

TEST(MalformedTruncation, PrefixesOfTheMainObject) {
  std::vector<uint8_t> full = read_prog("loader_main.bpf.o");
  for (size_t n = 0; n < full.size(); n += 13) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    auto r = open_bytes(cut);
    ASSERT_FALSE(r.ok()) << n;
    ASSERT_EQ(r.error().code, EINVAL) << n << ": " << r.error().message;
  }
}

TEST(MalformedTruncation, TooSmallAndNotElf) {
  expect_error(open_object(nullptr, 0, "x"), EINVAL, {"too small"});
  std::vector<uint8_t> junk(200, 0x41);
  expect_error(open_bytes(junk), EINVAL, {"bad magic"});
}

TEST_F(Malformed, WrongMachine) {
  elf().put<uint16_t>(offsetof(Elf64_Ehdr, e_machine), EM_X86_64);
  expect_error(open(), EINVAL, {"e_machine 62", "EM_BPF"});
}

TEST_F(Malformed, WrongClass) {
  bytes_[EI_CLASS] = ELFCLASS32;
  expect_error(open(), EINVAL, {"ELFCLASS64"});
}

TEST_F(Malformed, BigEndian) {
  bytes_[EI_DATA] = ELFDATA2MSB;
  expect_error(open(), EINVAL, {"little-endian"});
}

TEST_F(Malformed, NotRelocatable) {
  elf().put<uint16_t>(offsetof(Elf64_Ehdr, e_type), ET_EXEC);
  expect_error(open(), EINVAL, {"e_type 2", "ET_REL"});
}

TEST_F(Malformed, SectionTablePastEnd) {
  elf().put<uint64_t>(offsetof(Elf64_Ehdr, e_shoff), bytes_.size() + 64);
  expect_error(open(), EINVAL, {"section header table"});
}

TEST_F(Malformed, TooManySections) {
  elf().put<uint16_t>(offsetof(Elf64_Ehdr, e_shnum), 0xff00);
  expect_error(open(), EINVAL, {"runs past the end"});
}

TEST_F(Malformed, BadSectionEntrySize) {
  elf().put<uint16_t>(offsetof(Elf64_Ehdr, e_shentsize), 40);
  expect_error(open(), EINVAL, {"e_shentsize 40"});
}

TEST_F(Malformed, SectionNameTableIndexOutOfRange) {
  elf().put<uint16_t>(offsetof(Elf64_Ehdr, e_shstrndx), 500);
  expect_error(open(), EINVAL, {"section name table index 500"});
}

TEST_F(Malformed, SectionDataPastEnd) {
  size_t idx = elf().find("xdp");
  patch_shdr("xdp", [&](Elf64_Shdr& sh) { sh.sh_offset = bytes_.size() - 8; });
  expect_error(open(), EINVAL, {("section #" + std::to_string(idx)).c_str(), "past the end"});
}

TEST_F(Malformed, SectionSizeOverflow) {
  patch_shdr("xdp", [&](Elf64_Shdr& sh) { sh.sh_size = ~uint64_t{0} - 4; });
  expect_error(open(), EINVAL, {"past the end"});
}

TEST_F(Malformed, SectionNameOffsetOutsideNameTable) {
  patch_shdr("tc", [&](Elf64_Shdr& sh) { sh.sh_name = 0x7fffffff; });
  expect_error(open(), EINVAL, {"name offset 0x7fffffff"});
}

TEST_F(Malformed, CodeSectionSizeNotWholeInstructions) {
  patch_shdr("xdp", [&](Elf64_Shdr& sh) { sh.sh_size -= 3; });
  expect_error(open(), EINVAL, {"section 'xdp'", "not a multiple of 8"});
}

TEST_F(Malformed, SymbolTableBadStringLink) {
  patch_shdr(".symtab", [&](Elf64_Shdr& sh) { sh.sh_link = elf().find("xdp"); });
  expect_error(open(), EINVAL, {"string table index"});
}

TEST_F(Malformed, SymbolTableBadEntrySize) {
  patch_shdr(".symtab", [&](Elf64_Shdr& sh) { sh.sh_entsize = 16; });
  expect_error(open(), EINVAL, {"symbol table", "entry size 16"});
}

TEST_F(Malformed, NoSymbolTable) {
  patch_shdr(".symtab", [&](Elf64_Shdr& sh) { sh.sh_type = SHT_PROGBITS; });
  expect_error(open(), EINVAL, {"no symbol table"});
}

TEST_F(Malformed, SymbolSectionIndexOutOfRange) {
  size_t off = elf().sym_off("xdp_prog");
  elf().put<uint16_t>(off + offsetof(Elf64_Sym, st_shndx), 900);
  expect_error(open(), EINVAL, {"'xdp_prog'", "section index 900"});
}

TEST_F(Malformed, SymbolNameOutsideStringTable) {
  size_t off = elf().sym_off("tc_prog");
  elf().put<uint32_t>(off + offsetof(Elf64_Sym, st_name), 0x00ffffff);
  expect_error(open(), EINVAL, {"name offset 0xffffff"});
}

TEST_F(Malformed, FunctionCrossesSectionEnd) {
  size_t off = elf().sym_off("tc_prog");
  elf().put<uint64_t>(off + offsetof(Elf64_Sym, st_size), 0x1000);
  expect_error(open(), EINVAL, {"function 'tc_prog'", "crosses the section end"});
}

TEST_F(Malformed, FunctionNotInstructionAligned) {
  size_t off = elf().sym_off("tc_prog");
  elf().put<uint64_t>(off + offsetof(Elf64_Sym, st_value), 4);
  expect_error(open(), EINVAL, {"function 'tc_prog'", "whole number of instructions"});
}

TEST_F(Malformed, RelocationTargetSectionInvalid) {
  patch_shdr(".relxdp", [&](Elf64_Shdr& sh) { sh.sh_info = 700; });
  expect_error(open(), EINVAL, {"'.relxdp'", "target section index 700"});
}

TEST_F(Malformed, RelocationBadEntrySize) {
  patch_shdr(".relxdp", [&](Elf64_Shdr& sh) { sh.sh_entsize = 24; });
  expect_error(open(), EINVAL, {"'.relxdp'", "entry size 24"});
}

TEST_F(Malformed, RelocationOffsetOutsideSection) {
  Elf64_Rel r = rel(".relxdp", 0);
  patch_rel(".relxdp", 0, 0x4000, ELF64_R_SYM(r.r_info), ELF64_R_TYPE(r.r_info));
  expect_error(open(), EINVAL, {"relocation #0 in '.relxdp'", "offset 0x4000", "section 'xdp'"});
}

TEST_F(Malformed, RelocationOffsetMisaligned) {
  Elf64_Rel r = rel(".relxdp", 0);
  patch_rel(".relxdp", 0, r.r_offset + 3, ELF64_R_SYM(r.r_info), ELF64_R_TYPE(r.r_info));
  expect_error(open(), EINVAL, {"relocation #0 in '.relxdp'", "offset 0x23"});
}

TEST_F(Malformed, RelocationSymbolOutOfRange) {
  Elf64_Rel r = rel(".reltc", 1);
  patch_rel(".reltc", 1, r.r_offset, 5000, ELF64_R_TYPE(r.r_info));
  expect_error(open(), EINVAL, {"relocation #1 in '.reltc'", "symbol index 5000"});
}

TEST_F(Malformed, UnknownRelocationType) {
  Elf64_Rel r = rel(".relxdp", 0);
  patch_rel(".relxdp", 0, r.r_offset, ELF64_R_SYM(r.r_info), 7);
  expect_error(open(), ENOTSUP, {"type 7", "'.relxdp'", "offset 0x20", "section 'xdp'"});
}

TEST_F(Malformed, AbsRelocationInCode) {
  Elf64_Rel r = rel(".relxdp", 0);
  patch_rel(".relxdp", 0, r.r_offset, ELF64_R_SYM(r.r_info), 2);
  expect_error(open(), ENOTSUP, {"R_BPF_64_ABS64", "section 'xdp'"});
}

TEST_F(Malformed, MapRelocationOnWrongInstruction) {
  Elf64_Rel r = rel(".relxdp", 0);  // counts, at insn 4
  patch_rel(".relxdp", 0, 8, ELF64_R_SYM(r.r_info), ELF64_R_TYPE(r.r_info));
  expect_error(open(), EINVAL, {"program 'xdp_prog'", "insn 1", "expected ld_imm64"});
}

TEST_F(Malformed, CallRelocationOnLoad) {
  Elf64_Rel r = rel(".relxdp", 0);  // counts, on the ld_imm64 at insn 4
  patch_rel(".relxdp", 0, r.r_offset, ELF64_R_SYM(r.r_info), 10);
  expect_error(open(), EINVAL, {"program 'xdp_prog'", "R_BPF_64_32", "opcode 0x18"});
}

TEST_F(Malformed, TwoRelocationsOnOneInstruction) {
  Elf64_Rel r0 = rel(".relxdp", 0);
  Elf64_Rel r2 = rel(".relxdp", 2);
  patch_rel(".relxdp", 2, r0.r_offset, ELF64_R_SYM(r2.r_info), ELF64_R_TYPE(r2.r_info));
  expect_error(open(), EINVAL,
               {"program 'xdp_prog'", "insn 4", "two relocations for the same instruction"});
}

TEST_F(Malformed, MapValueOffsetOutsideSection) {
  isa::Insn i = insn("tc", 14);  // .rodata + 4 (the bpf_printk format)
  ASSERT_EQ(i.code, isa::kLdImm64);
  i.imm = 100;
  set_insn("tc", 14, i);
  expect_error(open(), EINVAL, {"program 'tc_prog'", "outside section '.rodata'"});
}

TEST_F(Malformed, JumpOutOfFunction) {
  isa::Insn i = insn("xdp", 7);  // if r0 == 0 goto +3
  ASSERT_EQ(isa::insn_class(i.code), isa::kClassJmp);
  i.off = 100;
  set_insn("xdp", 7, i);
  expect_error(open(), EINVAL, {"program 'xdp_prog'", "jump at insn 7", "targets insn 108"});
}

TEST_F(Malformed, LocalCallIntoTheMiddleOfAFunction) {
  isa::Insn i = insn(".text", 12);  // global_helper: call static_helper (pc-relative)
  ASSERT_EQ(i.code, isa::kCall);
  ASSERT_EQ(i.src, isa::kPseudoCall);
  i.imm -= 1;
  set_insn(".text", 12, i);
  expect_error(open(), EINVAL,
               {"program 'global_helper'", "insn 12", "not the start of a function"});
}

TEST_F(Malformed, LocalCallOutsideSection) {
  isa::Insn i = insn(".text", 12);
  i.imm = 100000;
  set_insn(".text", 12, i);
  expect_error(open(), EINVAL, {"global_helper", "outside section '.text'"});
}

TEST_F(Malformed, LdImm64CutOffAtFunctionEnd) {
  set_insn("xdp", 31, isa::Insn{isa::kLdImm64, 1, 0, 0, 3});  // replaces the exit
  expect_error(open(), EINVAL, {"program 'xdp_prog'", "ld_imm64 at insn 31", "cut off"});
}

TEST_F(Malformed, PseudoMapLoadWithoutRelocation) {
  set_insn("xdp", 0, isa::Insn{isa::kLdImm64, 1, isa::kPseudoMapFd, 0, 3});
  set_insn("xdp", 1, isa::Insn{0, 0, 0, 0, 0});
  expect_error(open(), EINVAL,
               {"program 'xdp_prog'", "insn 0", "pseudo source 1 but no relocation"});
}

TEST_F(Malformed, KfuncCallWithoutRelocation) {
  set_insn("xdp", 0, isa::Insn{isa::kCall, 0, isa::kPseudoKfuncCall, 0, 0});
  expect_error(open(), EINVAL, {"program 'xdp_prog'", "kfunc call without a relocation"});
}

TEST_F(Malformed, RelocationsInMapsSection) {
  patch_shdr(".relsyscall", [&](Elf64_Shdr& sh) { sh.sh_info = elf().find(".maps"); });
  expect_error(open(), ENOTSUP, {"'.relsyscall'", ".maps", "map-in-map"});
}

TEST_F(Malformed, CodeRelocationInDataSection) {
  patch_shdr(".relsyscall", [&](Elf64_Shdr& sh) { sh.sh_info = elf().find(".data"); });
  expect_error(open(), ENOTSUP, {"R_BPF_64_64", "data section '.data'"});
}

TEST_F(Malformed, AbsRelocationInDataSectionIsHarmless) {
  // Retarget the debug-frame relocations (absolute, like a pointer in .data)
  // at .data.
  const std::string rs = ".rel.debug_frame";
  patch_shdr(rs, [&](Elf64_Shdr& sh) { sh.sh_info = elf().find(".data"); });
  size_t n = elf().shdr(elf().find(rs)).sh_size / sizeof(Elf64_Rel);
  ASSERT_GE(n, 2u);
  for (size_t k = 0; k < n; k++)
    patch_rel(rs, k, 0, ELF64_R_SYM(rel(rs, k).r_info), 2);  // ABS64 at 0
  patch_rel(rs, 1, 12, ELF64_R_SYM(rel(rs, 1).r_info), 3);   // ABS32 at 12
  auto spec = open();
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  // Bytes stay as compiled (libbpf does not apply these either).
  EXPECT_EQ(spec->maps[testing::find_map(*spec, ".data")].init[0], 42);
  patch_rel(rs, 1, 13, ELF64_R_SYM(rel(rs, 1).r_info), 3);  // ABS32 past the end
  expect_error(open(), EINVAL, {"R_BPF_64_ABS32", "offset 0xd", "section '.data'"});
  patch_rel(rs, 1, 0, ELF64_R_SYM(rel(rs, 1).r_info), 10);  // a call relocation in data
  expect_error(open(), ENOTSUP, {"R_BPF_64_32", "data section '.data'"});
}

TEST_F(Malformed, MapsWithoutBtf) {
  // Rename .BTF so the object has no BTF: .maps cannot be described.
  bytes_[elf().name_off(elf().find(".BTF")) + 3] = 'X';
  expect_error(open(), EINVAL, {"'.maps'", "no .BTF section"});
}

TEST_F(Malformed, LegacyMapsSection) {
  // ".maps" -> "maps": the pre-BTF struct bpf_map_def section.
  patch_shdr(".maps", [&](Elf64_Shdr& sh) { sh.sh_name += 1; });
  expect_error(open(), ENOTSUP, {"legacy section 'maps'"});
}

TEST_F(Malformed, StructOpsSectionNotSupported) {
  // ".data.names" -> ".struct_ops" (same length), in the section name table.
  size_t off = elf().name_off(elf().find(".data.names"));
  std::memcpy(&bytes_[off], ".struct_ops", 11);
  expect_error(open(), ENOTSUP, {"section '.struct_ops'", "struct_ops maps"});
}

TEST(MalformedVersion, VersionSectionSize) {
  std::vector<uint8_t> bytes = read_prog("loader_mapdefs.bpf.o");
  RawElf e(bytes);
  size_t i = e.find("version");
  Elf64_Shdr sh = e.shdr(i);
  sh.sh_size = 3;
  e.set_shdr(i, sh);
  expect_error(open_bytes(bytes), EINVAL, {"section 'version'", "size 3, expected 4"});
}

TEST_F(Malformed, MapsWithoutDatasec) {
  // Rename the DATASEC in BTF strings: ".maps" -> ".mapz".
  size_t off = btf_off();
  RawElf e = elf();
  uint32_t hdr_len = e.get<uint32_t>(off + 4);
  uint32_t str_off = e.get<uint32_t>(off + 16), str_len = e.get<uint32_t>(off + 20);
  std::string strs(reinterpret_cast<const char*>(&bytes_[off + hdr_len + str_off]), str_len);
  size_t pos = strs.find(std::string(".maps\0", 6));
  ASSERT_NE(pos, std::string::npos);
  bytes_[off + hdr_len + str_off + pos + 4] = 'z';
  expect_error(open(), EINVAL, {"DATASEC '.maps'"});
}

TEST_F(Malformed, BtfBadMagic) {
  elf().put<uint16_t>(btf_off(), 0x9feb);
  expect_error(open(), EINVAL, {"BTF: bad magic 0x9feb"});
}

TEST_F(Malformed, BtfStringSectionPastEnd) {
  elf().put<uint32_t>(btf_off() + 20, 0x7fffffff);
  expect_error(open(), EINVAL, {"BTF: string section"});
}

TEST_F(Malformed, BtfHeaderLength) {
  elf().put<uint32_t>(btf_off() + 4, 0x100000);
  expect_error(open(), EINVAL, {"BTF: header length"});
}

// Finds the first BTF type record of a kind; returns its file offset.
size_t find_btf_record(const std::vector<uint8_t>& b, size_t btf, uint32_t want_kind) {
  RawElf e(const_cast<std::vector<uint8_t>&>(b));
  uint32_t hdr_len = e.get<uint32_t>(btf + 4);
  uint32_t type_off = e.get<uint32_t>(btf + 8), type_len = e.get<uint32_t>(btf + 12);
  size_t p = btf + hdr_len + type_off, end = p + type_len;
  while (p < end) {
    uint32_t info = e.get<uint32_t>(p + 4);
    uint32_t kind = (info >> 24) & 0x1f, vlen = info & 0xffff;
    if (kind == want_kind) return p;
    size_t extra = 0;
    switch (kind) {
      case 1:
      case 14:
      case 17:
        extra = 4;
        break;
      case 3:
        extra = 12;
        break;
      case 4:
      case 5:
      case 15:
      case 19:
        extra = 12 * vlen;
        break;
      case 6:
      case 13:
        extra = 8 * vlen;
        break;
    }
    p += 12 + extra;
  }
  ADD_FAILURE() << "no BTF kind " << want_kind;
  return 0;
}

TEST_F(Malformed, BtfUnknownKind) {
  size_t rec = find_btf_record(bytes_, btf_off(), 2 /* PTR */);
  elf().put<uint32_t>(rec + 4, 30u << 24);
  expect_error(open(), EINVAL, {"unknown kind 30"});
}

TEST_F(Malformed, BtfDanglingTypeReference) {
  size_t rec = find_btf_record(bytes_, btf_off(), 2 /* PTR */);
  elf().put<uint32_t>(rec + 8, 0xfffff);
  expect_error(open(), EINVAL, {"PTR refers to type id 1048575"});
}

TEST_F(Malformed, BtfTypedefLoop) {
  // Point the key typedef (__u32) at itself: resolving the key size loops.
  size_t rec = find_btf_record(bytes_, btf_off(), 8 /* TYPEDEF */);
  RawElf e = elf();
  // Find this record's id by counting from the start.
  size_t btf = btf_off();
  uint32_t hdr_len = e.get<uint32_t>(btf + 4), type_off = e.get<uint32_t>(btf + 8);
  uint32_t id = 1;
  for (size_t p = btf + hdr_len + type_off; p < rec; id++) {
    uint32_t info = e.get<uint32_t>(p + 4);
    uint32_t kind = (info >> 24) & 0x1f, vlen = info & 0xffff;
    size_t extra = kind == 1 || kind == 14 || kind == 17                ? 4
                   : kind == 3                                          ? 12
                   : kind == 4 || kind == 5 || kind == 15 || kind == 19 ? 12 * vlen
                   : kind == 6 || kind == 13                            ? 8 * vlen
                                                                        : 0;
    p += 12 + extra;
  }
  e.put<uint32_t>(rec + 8, id);
  auto r = open();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("loop"), std::string::npos) << r.error().message;
}

TEST_F(Malformed, BtfExtCoreRelocationsPastEnd) {
  size_t ext = elf().shdr(elf().find(".BTF.ext")).sh_offset;
  ASSERT_GE(elf().get<uint32_t>(ext + 4), 32u);  // header with the CO-RE part
  elf().put<uint32_t>(ext + 28, 0x10000);
  expect_error(open(), EINVAL, {".BTF.ext: CO-RE relocations"});
}

}  // namespace
}  // namespace userbpf::loader
