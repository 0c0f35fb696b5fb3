// Failure path of USERBPF_ASSERT: report and abort.
#include "base/assert.h"

#include <cstdio>
#include <cstdlib>

namespace userbpf {

void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "userbpf: assertion failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace userbpf
