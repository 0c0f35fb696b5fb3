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
  ma.index_objects = true;  // bpf_obj_drop / kptr pointers are checked against it
  Status st = global_ma.init(ma);
  USERBPF_ASSERT(st.ok());  // only fails when the very first pages cannot be mapped
}

MemDomain::~MemDomain() {
  for (auto& ma : percpu_owned_) ma.reset();
}

MemAlloc* MemDomain::percpu_ma(uint32_t cls) {
  if (cls > kPercpuMaxClass) return nullptr;
  std::lock_guard<std::mutex> lk(percpu_mu_);
  if (MemAlloc* ma = percpu_ma_[cls].load(std::memory_order_relaxed)) return ma;
  auto ma = std::make_unique<MemAlloc>(slots, rcu, worker, pages);
  MemAllocOptions o;
  o.size = kSizeClasses[cls] + 8;
  o.percpu = true;
  o.rcu_flavor = RcuFlavor::kBoth;
  o.index_objects = true;
  if (!ma->init(o).ok()) return nullptr;
  percpu_ma_[cls].store(ma.get(), std::memory_order_release);
  percpu_owned_[cls] = std::move(ma);
  return percpu_ma_[cls].load(std::memory_order_relaxed);
}

MemDomain& default_mem_domain() {
  static MemDomain* d = new MemDomain();
  return *d;
}

}  // namespace userbpf::mem
