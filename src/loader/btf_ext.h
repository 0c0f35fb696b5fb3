// .BTF.ext reading, limited to what the loader acts on: the CO-RE relocation
// records, which userbpf does not apply (it has no kernel BTF to relocate
// against), so their presence must be reported rather than ignored.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "loader/btf.h"

namespace userbpf::loader {

struct CoreRelo {
  std::string section;    // ELF section of the instruction
  uint32_t insn_off = 0;  // byte offset in that section
  uint32_t type_id = 0;
  std::string access;  // access string, e.g. "0:1"
  uint32_t kind = 0;   // enum bpf_core_relo_kind
};

const char* core_relo_kind_name(uint32_t kind);

// Parses the CO-RE part of a .BTF.ext section (section and access-string
// names come from btf). Malformed headers or records: EINVAL naming the
// offset.
Result<std::vector<CoreRelo>> parse_core_relos(std::span<const uint8_t> ext, const Btf& btf);

}  // namespace userbpf::loader
