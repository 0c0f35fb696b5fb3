// Test utilities for the loader: reading the compiled test objects and
// patching their bytes (headers, section names, relocations, instructions)
// to build malformed inputs from valid ones.
#pragma once

#include <elf.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "loader/object.h"

namespace userbpf::loader::testing {

inline std::vector<uint8_t> read_prog(const std::string& name) {
  std::string path = std::string(USERBPF_TEST_PROGS_DIR) + "/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline Result<ObjectSpec> open_bytes(const std::vector<uint8_t>& b,
                                     const std::string& name = "t.bpf.o") {
  return open_object(b.data(), b.size(), name);
}

inline Result<ObjectSpec> open_prog(const std::string& name) {
  return open_bytes(read_prog(name), name);
}

// Trusted-input view over a valid object's bytes, for patching.
class RawElf {
 public:
  explicit RawElf(std::vector<uint8_t>& b) : b_(b) {}

  template <class T>
  T get(size_t off) const {
    T v;
    std::memcpy(&v, b_.data() + off, sizeof(T));
    return v;
  }
  template <class T>
  void put(size_t off, const T& v) {
    std::memcpy(b_.data() + off, &v, sizeof(T));
  }

  Elf64_Ehdr ehdr() const { return get<Elf64_Ehdr>(0); }
  size_t shdr_off(size_t i) const { return ehdr().e_shoff + i * sizeof(Elf64_Shdr); }
  Elf64_Shdr shdr(size_t i) const { return get<Elf64_Shdr>(shdr_off(i)); }
  void set_shdr(size_t i, const Elf64_Shdr& sh) { put(shdr_off(i), sh); }
  size_t shnum() const { return ehdr().e_shnum; }
  std::string name(size_t i) const {
    Elf64_Shdr strtab = shdr(ehdr().e_shstrndx);
    return reinterpret_cast<const char*>(b_.data() + strtab.sh_offset + shdr(i).sh_name);
  }
  // Index of the named section; fails the test if missing.
  size_t find(const std::string& n) const {
    for (size_t i = 1; i < shnum(); i++)
      if (name(i) == n) return i;
    ADD_FAILURE() << "no section " << n;
    return 0;
  }
  // File offset of the name string of section i.
  size_t name_off(size_t i) const { return shdr(ehdr().e_shstrndx).sh_offset + shdr(i).sh_name; }
  // File offset of relocation #k of a REL section, and of instruction #k of a code section.
  size_t rel_off(const std::string& rel, size_t k) const {
    return shdr(find(rel)).sh_offset + k * 16;
  }
  size_t insn_off(const std::string& sec, size_t k) const {
    return shdr(find(sec)).sh_offset + k * 8;
  }
  size_t symtab() const { return find(".symtab"); }
  // File offset of the symbol with this name.
  size_t sym_off(const std::string& sym) const {
    Elf64_Shdr st = shdr(symtab());
    Elf64_Shdr str = shdr(st.sh_link);
    for (size_t off = st.sh_offset; off < st.sh_offset + st.sh_size; off += sizeof(Elf64_Sym)) {
      Elf64_Sym s = get<Elf64_Sym>(off);
      if (sym == reinterpret_cast<const char*>(b_.data() + str.sh_offset + s.st_name)) return off;
    }
    ADD_FAILURE() << "no symbol " << sym;
    return 0;
  }

 private:
  std::vector<uint8_t>& b_;
};

// Asserts an Error with this errno whose message contains every fragment.
template <class R>
void expect_error(const R& r, int code, std::initializer_list<const char*> fragments) {
  ASSERT_FALSE(r.ok()) << "expected errno " << code;
  EXPECT_EQ(r.error().code, code) << r.error().message;
  for (const char* f : fragments)
    EXPECT_NE(r.error().message.find(f), std::string::npos)
        << "message '" << r.error().message << "' lacks '" << f << "'";
}

inline const ProgSpec* find_prog(const ObjectSpec& spec, const std::string& name) {
  for (const ProgSpec& p : spec.progs)
    if (p.name == name) return &p;
  return nullptr;
}

inline int find_map(const ObjectSpec& spec, const std::string& name) {
  for (size_t i = 0; i < spec.maps.size(); i++)
    if (spec.maps[i].attr.name == name) return static_cast<int>(i);
  return -1;
}

}  // namespace userbpf::loader::testing
