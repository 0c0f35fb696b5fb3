// Names of program types, from the one list in prog_types.h.
#include "vm/prog_types.h"

namespace userbpf::vm {

const char* prog_type_name(ProgType type) {
  switch (type) {
#define USERBPF_X(name, num, str) \
  case ProgType::k##name:         \
    return str;
    USERBPF_PROG_TYPES(USERBPF_X)
#undef USERBPF_X
  }
  return "unknown";
}

}  // namespace userbpf::vm
