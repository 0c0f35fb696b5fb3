// Names of map types, from the one list in map.h.
#include <cctype>

#include "maps/map.h"

namespace userbpf::maps {
namespace {

struct TypeName {
  uint32_t num;
  char name[32];
};

constexpr TypeName lower(const char* upper, uint32_t num) {
  TypeName t{num, {}};
  for (int i = 0; upper[i] && i < 31; i++) {
    char c = upper[i];
    t.name[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return t;
}

constexpr TypeName kTypeNames[] = {
#define USERBPF_X(name, num) lower(#name, num),
    USERBPF_MAP_TYPE_NUMBERS(USERBPF_X)
#undef USERBPF_X
};

}  // namespace

const char* map_type_name(uint32_t type) {
  for (const auto& t : kTypeNames)
    if (t.num == type) return t.name;
  return "unknown";
}

}  // namespace userbpf::maps
