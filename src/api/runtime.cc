// Runtime: the process-wide settings every object and run shares.
#include <sched.h>
#include <sys/sysinfo.h>

#include "api/internal.h"

namespace userbpf {

Runtime::Runtime() : impl_(std::make_unique<internal::RuntimeImpl>()) {}
Runtime::~Runtime() = default;

Result<std::unique_ptr<Runtime>> Runtime::create(const RuntimeOptions& opts) {
  if (opts.struct_size > sizeof(RuntimeOptions))
    return make_error(EINVAL, "RuntimeOptions from a newer userbpf (size %zu > %zu)",
                      opts.struct_size, sizeof(RuntimeOptions));
  std::unique_ptr<Runtime> rt(new Runtime());
  int possible = get_nprocs_conf();
  rt->impl_->num_cpus =
      opts.num_cpus ? opts.num_cpus : static_cast<uint32_t>(possible > 0 ? possible : 1);
  mem::MemDomainOptions mo;
  mo.num_slots = rt->impl_->num_cpus;
  rt->impl_->mem = std::make_unique<mem::MemDomain>(mo);
  rt->impl_->print = vm::default_print_sink();
  if (opts.print) rt->impl_->print = vm::PrintSink{opts.print, opts.print_user};
  return rt;
}

uint32_t Runtime::num_cpus() const {
  return impl_->num_cpus;
}

namespace internal {

uint32_t current_cpu(const RuntimeImpl& rt) {
  int cpu = sched_getcpu();
  return cpu < 0 ? 0 : static_cast<uint32_t>(cpu) % rt.num_cpus;
}

}  // namespace internal
}  // namespace userbpf
