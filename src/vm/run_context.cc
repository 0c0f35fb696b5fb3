// The thread's current run (for helpers) and the default print sink.
#include "vm/run_context.h"

#include <unistd.h>

namespace userbpf::vm {
namespace {
thread_local RunContext* t_current = nullptr;
}  // namespace

RunContext* current_run() {
  return t_current;
}

RunScope::RunScope(RunContext& rc) : rc_(rc) {
  rc_.outer = t_current;
  t_current = &rc_;
}

RunScope::~RunScope() {
  t_current = rc_.outer;
}

void stderr_print(void*, const char* data, size_t len) {
  // write(2) rather than stdio: async-signal-safe, programs may run in handlers.
  while (len > 0) {
    ssize_t n = ::write(STDERR_FILENO, data, len);
    if (n <= 0) return;
    data += n;
    len -= static_cast<size_t>(n);
  }
}

}  // namespace userbpf::vm
