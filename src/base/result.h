// Internal alias of the public errno-style Result (include/userbpf/result.h).
#pragma once

#include "userbpf/result.h"
