// CO-RE relocation records of .BTF.ext: header and record bounds checks.
#include "loader/btf_ext.h"

#include <cstring>

namespace userbpf::loader {

namespace {

constexpr uint16_t kBtfMagic = 0xeb9f;
constexpr size_t kMinHeaderLen = 24;   // up to line_info
constexpr size_t kCoreHeaderLen = 32;  // with core_relo_off/len
constexpr uint32_t kMinCoreRecSize = 16;

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

const char* core_relo_kind_name(uint32_t kind) {
  static const char* const kNames[] = {
      "field_byte_offset", "field_byte_size", "field_exists",   "field_signed", "field_lshift_u64",
      "field_rshift_u64",  "type_id_local",   "type_id_target", "type_exists",  "type_size",
      "enumval_exists",    "enumval_value",   "type_matches"};
  return kind < sizeof(kNames) / sizeof(kNames[0]) ? kNames[kind] : "unknown";
}

Result<std::vector<CoreRelo>> parse_core_relos(std::span<const uint8_t> ext, const Btf& btf) {
  std::vector<CoreRelo> out;
  const uint8_t* p = ext.data();
  if (ext.size() < kMinHeaderLen)
    return make_error(EINVAL, ".BTF.ext: %zu bytes, too small for the header", ext.size());
  uint16_t magic;
  std::memcpy(&magic, p, sizeof(magic));
  if (magic != kBtfMagic) return make_error(EINVAL, ".BTF.ext: bad magic 0x%04x", magic);
  if (p[2] != 1) return make_error(EINVAL, ".BTF.ext: unsupported version %u", p[2]);
  uint32_t hdr_len = load_u32(p + 4);
  if (hdr_len < kMinHeaderLen || hdr_len > ext.size())
    return make_error(EINVAL, ".BTF.ext: header length %u out of range [%zu, %zu]", hdr_len,
                      kMinHeaderLen, ext.size());
  if (hdr_len < kCoreHeaderLen) return out;  // no CO-RE part
  uint32_t off = load_u32(p + 24), len = load_u32(p + 28);
  if (len == 0) return out;
  size_t body = ext.size() - hdr_len;
  if (off > body || len > body - off)
    return make_error(EINVAL, ".BTF.ext: CO-RE relocations [%u, +%u) past the end (%zu bytes)", off,
                      len, body);
  if (len < 4)
    return make_error(EINVAL, ".BTF.ext: CO-RE relocations: %u bytes, no record size", len);
  const uint8_t* q = p + hdr_len + off;
  uint32_t rec_size = load_u32(q);
  if (rec_size < kMinCoreRecSize || rec_size % 4 != 0)
    return make_error(EINVAL, ".BTF.ext: CO-RE record size %u invalid", rec_size);
  size_t pos = 4;
  while (pos < len) {
    if (len - pos < 8)
      return make_error(EINVAL, ".BTF.ext: CO-RE section header at offset %zu truncated", pos);
    uint32_t sec_name_off = load_u32(q + pos);
    uint32_t num = load_u32(q + pos + 4);
    pos += 8;
    std::string_view sec = btf.str(sec_name_off);
    if (sec.empty())
      return make_error(EINVAL, ".BTF.ext: CO-RE section name offset %u is not a BTF string",
                        sec_name_off);
    if (num == 0 || num > (len - pos) / rec_size)
      return make_error(EINVAL,
                        ".BTF.ext: CO-RE section '%.*s': %u records of %u bytes do not fit "
                        "in the remaining %zu bytes",
                        static_cast<int>(sec.size()), sec.data(), num, rec_size, len - pos);
    for (uint32_t i = 0; i < num; i++, pos += rec_size) {
      CoreRelo r;
      r.section = std::string(sec);
      r.insn_off = load_u32(q + pos);
      r.type_id = load_u32(q + pos + 4);
      r.access = std::string(btf.str(load_u32(q + pos + 8)));
      r.kind = load_u32(q + pos + 12);
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace userbpf::loader
