// A read-only BTF (BPF Type Format) parser: the .BTF section of an object as
// a table of types, with the lookups the loader needs (names, members,
// sizes, data sections). Layout per the kernel's Documentation/bpf/btf.rst.
//
// Invariants once Btf::parse() succeeded:
//   - types are numbered 1..type_count(); id 0 is void;
//   - every record and its kind-specific trailer lies inside the type
//     section, every name offset inside the string section (which starts and
//     ends with NUL, so every name is a terminated string);
//   - every type id a record refers to is <= type_count().
// Reference chains may still loop (typedef A -> const -> typedef A): the
// walkers stop after kMaxResolveDepth steps with EINVAL.
//
// Contexts: host only. Immutable after parse(); safe to share read-only.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace userbpf::loader {

enum class BtfKind : uint8_t {
  kUnknown = 0,
  kInt = 1,
  kPtr = 2,
  kArray = 3,
  kStruct = 4,
  kUnion = 5,
  kEnum = 6,
  kFwd = 7,
  kTypedef = 8,
  kVolatile = 9,
  kConst = 10,
  kRestrict = 11,
  kFunc = 12,
  kFuncProto = 13,
  kVar = 14,
  kDatasec = 15,
  kFloat = 16,
  kDeclTag = 17,
  kTypeTag = 18,
  kEnum64 = 19,
};
inline constexpr uint32_t kBtfMaxKind = 19;
const char* btf_kind_name(BtfKind kind);

// struct btf_type in host form. data_off is where the kind-specific trailer
// starts in the type section.
struct BtfType {
  uint32_t name_off = 0;
  BtfKind kind = BtfKind::kUnknown;
  uint16_t vlen = 0;
  bool kflag = false;
  uint32_t size_or_type = 0;  // size (int, struct, union, enum, datasec, float) or type
  uint32_t data_off = 0;
};

struct BtfMember {
  uint32_t name_off;
  uint32_t type;
  uint32_t offset;  // bit offset (kflag: bitfield size << 24 | bit offset)
};
struct BtfArray {
  uint32_t type;
  uint32_t index_type;
  uint32_t nelems;
};
struct BtfVarSecinfo {
  uint32_t type;  // a VAR (or FUNC for .ksyms)
  uint32_t offset;
  uint32_t size;
};
struct BtfEnumValue {
  uint32_t name_off;
  int64_t value;
};

// BTF_VAR_* linkage of a VAR.
inline constexpr uint32_t kBtfVarStatic = 0;
inline constexpr uint32_t kBtfVarGlobalAllocated = 1;
inline constexpr uint32_t kBtfVarGlobalExtern = 2;

inline constexpr int kMaxResolveDepth = 32;

class Btf {
 public:
  // Validates and copies raw .BTF bytes. Errors are EINVAL naming the header
  // field or the type id and byte offset of the bad record.
  static Result<Btf> parse(std::span<const uint8_t> raw);

  uint32_t type_count() const { return static_cast<uint32_t>(types_.size()) - 1; }
  // nullptr for id 0 (void) or past type_count().
  const BtfType* type_by_id(uint32_t id) const {
    return id != 0 && id < types_.size() ? &types_[id] : nullptr;
  }
  // The string at a name offset ("" for 0 or a bad offset).
  std::string_view str(uint32_t off) const;
  std::string_view type_name(uint32_t id) const;

  // Kind-specific trailers; callers pass a type of the matching kind.
  std::vector<BtfMember> members(const BtfType& t) const;  // struct, union
  BtfArray array(const BtfType& t) const;
  std::vector<BtfVarSecinfo> datasec_vars(const BtfType& t) const;
  uint32_t var_linkage(const BtfType& t) const;
  std::vector<BtfEnumValue> enum_values(const BtfType& t) const;  // enum, enum64

  // First type with this name and kind, 0 if none.
  uint32_t find_by_name_kind(std::string_view name, BtfKind kind) const;
  // Follows typedef/volatile/const/restrict/type_tag to the underlying id.
  Result<uint32_t> skip_mods_and_typedefs(uint32_t id) const;
  // Byte size of a type (libbpf's btf__resolve_size): through modifiers and
  // typedefs, arrays multiply; errors for void, functions and forwards.
  Result<uint64_t> resolve_size(uint32_t id) const;

  const std::vector<uint8_t>& raw() const { return raw_; }

 private:
  uint32_t u32_at(size_t off) const;  // within the type section
  Status check_type(uint32_t id, size_t off, BtfType& t, size_t& next) const;
  Status check_refs() const;

  std::vector<uint8_t> raw_;
  size_t type_start_ = 0;  // offsets of the two sections within raw_
  size_t type_len_ = 0;
  size_t str_start_ = 0;
  size_t str_len_ = 0;
  std::vector<BtfType> types_;  // [0] is void
};

}  // namespace userbpf::loader
