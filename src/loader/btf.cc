// BTF parsing and validation: header, type records with their trailers, the
// string section, and the type walkers the map parser uses.
#include "loader/btf.h"

#include <cinttypes>
#include <cstring>

namespace userbpf::loader {

namespace {

constexpr uint16_t kBtfMagic = 0xeb9f;
constexpr size_t kBtfHeaderLen = 24;
constexpr size_t kBtfTypeLen = 12;
constexpr uint32_t kBtfMaxType = 0x000fffff;  // the kernel's BTF_MAX_TYPE
constexpr uint64_t kPtrSize = 8;

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Bytes of the kind-specific trailer that follows a struct btf_type.
size_t trailer_size(BtfKind kind, uint16_t vlen) {
  switch (kind) {
    case BtfKind::kInt:
    case BtfKind::kVar:
    case BtfKind::kDeclTag:
      return 4;
    case BtfKind::kArray:
      return 12;
    case BtfKind::kStruct:
    case BtfKind::kUnion:
    case BtfKind::kDatasec:
    case BtfKind::kEnum64:
      return size_t{12} * vlen;
    case BtfKind::kEnum:
    case BtfKind::kFuncProto:
      return size_t{8} * vlen;
    default:
      return 0;
  }
}

bool refers_by_type(BtfKind kind) {
  switch (kind) {
    case BtfKind::kPtr:
    case BtfKind::kTypedef:
    case BtfKind::kVolatile:
    case BtfKind::kConst:
    case BtfKind::kRestrict:
    case BtfKind::kFunc:
    case BtfKind::kFuncProto:  // return type
    case BtfKind::kVar:
    case BtfKind::kDeclTag:
    case BtfKind::kTypeTag:
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* btf_kind_name(BtfKind kind) {
  static const char* const kNames[] = {"UNKNOWN", "INT",      "PTR",      "ARRAY",      "STRUCT",
                                       "UNION",   "ENUM",     "FWD",      "TYPEDEF",    "VOLATILE",
                                       "CONST",   "RESTRICT", "FUNC",     "FUNC_PROTO", "VAR",
                                       "DATASEC", "FLOAT",    "DECL_TAG", "TYPE_TAG",   "ENUM64"};
  auto k = static_cast<uint32_t>(kind);
  return k <= kBtfMaxKind ? kNames[k] : "?";
}

uint32_t Btf::u32_at(size_t off) const {
  return load_u32(raw_.data() + type_start_ + off);
}

Result<Btf> Btf::parse(std::span<const uint8_t> raw) {
  Btf btf;
  if (raw.size() < kBtfHeaderLen)
    return make_error(EINVAL, "BTF: %zu bytes, too small for the %zu-byte header", raw.size(),
                      kBtfHeaderLen);
  btf.raw_.assign(raw.begin(), raw.end());
  const uint8_t* p = btf.raw_.data();
  uint16_t magic;
  std::memcpy(&magic, p, sizeof(magic));
  if (magic != kBtfMagic)
    return make_error(EINVAL, "BTF: bad magic 0x%04x (expected 0x%04x, little-endian)", magic,
                      kBtfMagic);
  if (p[2] != 1) return make_error(EINVAL, "BTF: unsupported version %u", p[2]);
  if (p[3] != 0) return make_error(EINVAL, "BTF: unsupported flags 0x%x", p[3]);
  uint32_t hdr_len = load_u32(p + 4);
  uint32_t type_off = load_u32(p + 8), type_len = load_u32(p + 12);
  uint32_t str_off = load_u32(p + 16), str_len = load_u32(p + 20);
  if (hdr_len < kBtfHeaderLen || hdr_len > raw.size())
    return make_error(EINVAL, "BTF: header length %u out of range [%zu, %zu]", hdr_len,
                      kBtfHeaderLen, raw.size());
  uint64_t body = raw.size() - hdr_len;
  if (type_off % 4 != 0 || type_len % 4 != 0)
    return make_error(EINVAL, "BTF: type section (off %u, len %u) is not 4-byte aligned", type_off,
                      type_len);
  if (uint64_t{type_off} + type_len > body)
    return make_error(EINVAL, "BTF: type section [%u, +%u) past the end of the data (%" PRIu64 ")",
                      type_off, type_len, body);
  if (uint64_t{str_off} + str_len > body)
    return make_error(EINVAL,
                      "BTF: string section [%u, +%u) past the end of the data (%" PRIu64 ")",
                      str_off, str_len, body);
  if (type_off < uint64_t{str_off} + str_len && str_off < uint64_t{type_off} + type_len)
    return make_error(EINVAL, "BTF: type section [%u, +%u) overlaps string section [%u, +%u)",
                      type_off, type_len, str_off, str_len);
  if (str_len == 0 || p[hdr_len + str_off] != 0 || p[hdr_len + str_off + str_len - 1] != 0)
    return make_error(EINVAL, "BTF: string section (len %u) must start and end with NUL", str_len);
  btf.type_start_ = hdr_len + size_t{type_off};
  btf.type_len_ = type_len;
  btf.str_start_ = hdr_len + size_t{str_off};
  btf.str_len_ = str_len;

  btf.types_.emplace_back();  // void
  size_t off = 0;
  while (off < btf.type_len_) {
    uint32_t id = static_cast<uint32_t>(btf.types_.size());
    if (id > kBtfMaxType) return make_error(EINVAL, "BTF: more than %u types", kBtfMaxType);
    BtfType t;
    size_t next = 0;
    USERBPF_TRY(btf.check_type(id, off, t, next));
    btf.types_.push_back(t);
    off = next;
  }
  USERBPF_TRY(btf.check_refs());
  return btf;
}

Status Btf::check_type(uint32_t id, size_t off, BtfType& t, size_t& next) const {
  if (type_len_ - off < kBtfTypeLen)
    return make_error(EINVAL, "BTF: type [%u] at offset %zu: record truncated (%zu bytes left)", id,
                      off, type_len_ - off);
  t.name_off = u32_at(off);
  uint32_t info = u32_at(off + 4);
  t.size_or_type = u32_at(off + 8);
  uint32_t kind = (info >> 24) & 0x1f;
  t.vlen = static_cast<uint16_t>(info & 0xffff);
  t.kflag = (info >> 31) != 0;
  if (kind == 0 || kind > kBtfMaxKind)
    return make_error(EINVAL, "BTF: type [%u] at offset %zu: unknown kind %u", id, off, kind);
  t.kind = static_cast<BtfKind>(kind);
  if (t.name_off >= str_len_)
    return make_error(EINVAL,
                      "BTF: type [%u] at offset %zu: name offset %u outside the string "
                      "section (len %zu)",
                      id, off, t.name_off, str_len_);
  t.data_off = static_cast<uint32_t>(off + kBtfTypeLen);
  size_t extra = trailer_size(t.kind, t.vlen);
  if (type_len_ - t.data_off < extra)
    return make_error(EINVAL,
                      "BTF: type [%u] %s at offset %zu: %zu trailing bytes (vlen %u) run "
                      "past the type section",
                      id, btf_kind_name(t.kind), off, extra, t.vlen);
  next = t.data_off + extra;
  // Name offsets inside trailers.
  if (t.kind == BtfKind::kStruct || t.kind == BtfKind::kUnion || t.kind == BtfKind::kEnum ||
      t.kind == BtfKind::kEnum64 || t.kind == BtfKind::kFuncProto) {
    size_t rec = t.vlen ? extra / t.vlen : 0;
    for (uint16_t i = 0; i < t.vlen; i++) {
      uint32_t name = u32_at(t.data_off + i * rec);
      if (name >= str_len_)
        return make_error(EINVAL,
                          "BTF: type [%u] %s: member %u name offset %u outside the string "
                          "section",
                          id, btf_kind_name(t.kind), i, name);
    }
  }
  return Status::Ok();
}

Status Btf::check_refs() const {
  uint32_t max = type_count();
  auto bad = [&](uint32_t id, const BtfType& t, uint32_t ref) {
    return make_error(EINVAL, "BTF: type [%u] %s refers to type id %u, beyond the last type %u", id,
                      btf_kind_name(t.kind), ref, max);
  };
  for (uint32_t id = 1; id <= max; id++) {
    const BtfType& t = types_[id];
    if (refers_by_type(t.kind) && t.size_or_type > max) return bad(id, t, t.size_or_type);
    switch (t.kind) {
      case BtfKind::kArray: {
        BtfArray a = array(t);
        if (a.type > max) return bad(id, t, a.type);
        if (a.index_type > max) return bad(id, t, a.index_type);
        break;
      }
      case BtfKind::kStruct:
      case BtfKind::kUnion:
        for (const BtfMember& m : members(t))
          if (m.type > max) return bad(id, t, m.type);
        break;
      case BtfKind::kFuncProto:
        for (uint16_t i = 0; i < t.vlen; i++) {
          uint32_t ref = u32_at(t.data_off + i * 8 + 4);
          if (ref > max) return bad(id, t, ref);
        }
        break;
      case BtfKind::kDatasec:
        for (const BtfVarSecinfo& v : datasec_vars(t))
          if (v.type > max) return bad(id, t, v.type);
        break;
      default:
        break;
    }
  }
  return Status::Ok();
}

std::string_view Btf::str(uint32_t off) const {
  if (off >= str_len_) return {};
  // The section ends with NUL, so strlen stays inside it.
  return std::string_view(reinterpret_cast<const char*>(raw_.data() + str_start_ + off));
}

std::string_view Btf::type_name(uint32_t id) const {
  const BtfType* t = type_by_id(id);
  return t ? str(t->name_off) : std::string_view("void");
}

std::vector<BtfMember> Btf::members(const BtfType& t) const {
  std::vector<BtfMember> out;
  if (t.kind != BtfKind::kStruct && t.kind != BtfKind::kUnion) return out;
  out.reserve(t.vlen);
  for (uint16_t i = 0; i < t.vlen; i++) {
    size_t o = t.data_off + size_t{12} * i;
    out.push_back({u32_at(o), u32_at(o + 4), u32_at(o + 8)});
  }
  return out;
}

BtfArray Btf::array(const BtfType& t) const {
  if (t.kind != BtfKind::kArray) return {};
  return {u32_at(t.data_off), u32_at(t.data_off + 4), u32_at(t.data_off + 8)};
}

std::vector<BtfVarSecinfo> Btf::datasec_vars(const BtfType& t) const {
  std::vector<BtfVarSecinfo> out;
  if (t.kind != BtfKind::kDatasec) return out;
  out.reserve(t.vlen);
  for (uint16_t i = 0; i < t.vlen; i++) {
    size_t o = t.data_off + size_t{12} * i;
    out.push_back({u32_at(o), u32_at(o + 4), u32_at(o + 8)});
  }
  return out;
}

uint32_t Btf::var_linkage(const BtfType& t) const {
  return t.kind == BtfKind::kVar ? u32_at(t.data_off) : 0;
}

std::vector<BtfEnumValue> Btf::enum_values(const BtfType& t) const {
  std::vector<BtfEnumValue> out;
  if (t.kind == BtfKind::kEnum) {
    for (uint16_t i = 0; i < t.vlen; i++) {
      size_t o = t.data_off + size_t{8} * i;
      uint32_t v = u32_at(o + 4);
      int64_t value = t.kflag ? int64_t{static_cast<int32_t>(v)} : int64_t{v};
      out.push_back({u32_at(o), value});
    }
  } else if (t.kind == BtfKind::kEnum64) {
    for (uint16_t i = 0; i < t.vlen; i++) {
      size_t o = t.data_off + size_t{12} * i;
      uint64_t v = (uint64_t{u32_at(o + 8)} << 32) | u32_at(o + 4);
      out.push_back({u32_at(o), static_cast<int64_t>(v)});
    }
  }
  return out;
}

uint32_t Btf::find_by_name_kind(std::string_view name, BtfKind kind) const {
  for (uint32_t id = 1; id < types_.size(); id++)
    if (types_[id].kind == kind && str(types_[id].name_off) == name) return id;
  return 0;
}

Result<uint32_t> Btf::skip_mods_and_typedefs(uint32_t id) const {
  for (int depth = 0; depth < kMaxResolveDepth; depth++) {
    const BtfType* t = type_by_id(id);
    if (t == nullptr) return id;
    switch (t->kind) {
      case BtfKind::kTypedef:
      case BtfKind::kVolatile:
      case BtfKind::kConst:
      case BtfKind::kRestrict:
      case BtfKind::kTypeTag:
        id = t->size_or_type;
        break;
      default:
        return id;
    }
  }
  return make_error(EINVAL, "BTF: type [%u]: modifier/typedef chain deeper than %d (loop?)", id,
                    kMaxResolveDepth);
}

Result<uint64_t> Btf::resolve_size(uint32_t id) const {
  uint64_t nelems = 1;
  uint32_t start = id;
  for (int depth = 0; depth < kMaxResolveDepth; depth++) {
    const BtfType* t = type_by_id(id);
    if (t == nullptr)
      return make_error(EINVAL, "BTF: type [%u] has no size (resolves to void)", start);
    switch (t->kind) {
      case BtfKind::kInt:
      case BtfKind::kStruct:
      case BtfKind::kUnion:
      case BtfKind::kEnum:
      case BtfKind::kEnum64:
      case BtfKind::kDatasec:
      case BtfKind::kFloat: {
        uint64_t size = t->size_or_type;
        if (size != 0 && nelems > UINT32_MAX / size)
          return make_error(E2BIG, "BTF: type [%u]: size %" PRIu64 " x %" PRIu64 " exceeds 4 GiB",
                            start, nelems, size);
        return nelems * size;
      }
      case BtfKind::kPtr:
        return nelems * kPtrSize;
      case BtfKind::kTypedef:
      case BtfKind::kVolatile:
      case BtfKind::kConst:
      case BtfKind::kRestrict:
      case BtfKind::kVar:
      case BtfKind::kDeclTag:
      case BtfKind::kTypeTag:
        id = t->size_or_type;
        break;
      case BtfKind::kArray: {
        BtfArray a = array(*t);
        if (a.nelems != 0 && nelems > UINT32_MAX / a.nelems)
          return make_error(E2BIG, "BTF: type [%u]: array size exceeds 4 GiB", start);
        nelems *= a.nelems;
        id = a.type;
        break;
      }
      default:
        return make_error(EINVAL, "BTF: type [%u]: %s [%u] has no size", start,
                          btf_kind_name(t->kind), id);
    }
  }
  return make_error(EINVAL, "BTF: type [%u]: reference chain deeper than %d (loop?)", start,
                    kMaxResolveDepth);
}

}  // namespace userbpf::loader
