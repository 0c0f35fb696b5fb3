// The helper and kfunc registry: helpers by kernel id (enum bpf_func_id),
// kfuncs by name. Each helper family has its own file; this is the one list.
#pragma once

#include <cstdint>
#include <string_view>

#include "vm/helper_proto.h"

namespace userbpf::helpers {

// Table of kMaxHelperId entries indexed by kernel helper id.
vm::HelperTable helper_table();
const vm::HelperProto* find_helper(uint32_t id);
const vm::HelperProto* find_kfunc(std::string_view name);

}  // namespace userbpf::helpers
