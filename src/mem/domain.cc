// MemDomain construction and the process-wide default domain.
#include "mem/domain.h"

#include "base/assert.h"

namespace userbpf::mem {

MemDomain::MemDomain(const MemDomainOptions& opts)
    : slots(opts.num_slots, opts.num_sleepable),
      worker(),
      rcu(slots, worker),
      pages(opts.pages),
      global_ma(slots, rcu, worker, pages) {
  MemAllocOptions ma;
  ma.rcu_flavor = RcuFlavor::kBoth;
  Status st = global_ma.init(ma);
  USERBPF_ASSERT(st.ok());  // only fails when the very first pages cannot be mapped
}

MemDomain::~MemDomain() = default;

MemDomain& default_mem_domain() {
  static MemDomain* d = new MemDomain();
  return *d;
}

}  // namespace userbpf::mem
