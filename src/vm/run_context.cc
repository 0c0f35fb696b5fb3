// The thread's current run (for helpers) and the default print sink.
#include "vm/run_context.h"

#include <unistd.h>

#include <cerrno>

#include "maps/spin_lock.h"

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

Result<uint64_t> RunLoop::finish_slow(uint64_t r0) {
  if (rc->spin_lock != nullptr) {
    maps::spin_lock_release(rc->spin_lock);
    rc->spin_lock = nullptr;
    if (!stopped)
      return make_error(EINVAL,
                        "program '%s': returned holding a bpf_spin_lock (bpf_spin_unlock is "
                        "missing); the lock was released",
                        prog->name.c_str());
  }
  return stop_fn(*this, r0);
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
