// A memory domain: the CPU slots, background worker, RCU domain, page pool
// and the runtime-wide object cache that belong together. A Runtime owns one;
// every map it creates and every program it runs uses it. Maps created
// without a runtime (unit tests, tools) share the process-wide default.
//
// Members are built in dependency order (slots, worker, rcu, pages,
// global_ma) and torn down in reverse; everything allocated from a domain
// must be freed before it is destroyed.
//
// Contexts: construction/destruction host only; members document their own.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "mem/bg_worker.h"
#include "mem/cpu_slots.h"
#include "mem/obj_cache.h"
#include "mem/page_pool.h"
#include "mem/rcu.h"

namespace userbpf::mem {

struct MemDomainOptions {
  uint32_t num_slots = 0;      // 0: possible CPUs
  uint32_t num_sleepable = 0;  // 0: same as num_slots
  PagePoolOptions pages;
};

struct MemDomain {
  explicit MemDomain(const MemDomainOptions& opts = {});
  ~MemDomain();
  MemDomain(const MemDomain&) = delete;
  MemDomain& operator=(const MemDomain&) = delete;

  SlotTable slots;
  BackgroundWorker worker;
  RcuDomain rcu;
  PagePool pages;
  // Runtime-wide objects of the 11 size classes (the kernel's
  // bpf_global_ma: bpf_obj_new and friends). Freed objects may be reachable
  // from sleepable programs too, so its rcu flavor is kBoth.
  MemAlloc global_ma;

  // Per-CPU objects (bpf_percpu_obj_new; the kernel's bpf_global_percpu_ma):
  // one allocator per size class up to kPercpuMaxClass, each copy
  // kSizeClasses[cls] + 8 bytes, created by the loader on first need.
  static constexpr uint32_t kPercpuMaxClass = 7;  // 512 bytes
  // Host: the class's allocator, created if needed; nullptr if it cannot be.
  MemAlloc* percpu_ma(uint32_t cls);
  // Any context: the class's allocator if it exists.
  MemAlloc* percpu_ma_if_exists(uint32_t cls) const {
    return cls <= kPercpuMaxClass ? percpu_ma_[cls].load(std::memory_order_acquire) : nullptr;
  }

 private:
  std::mutex percpu_mu_;
  std::atomic<MemAlloc*> percpu_ma_[kPercpuMaxClass + 1] = {};
  std::unique_ptr<MemAlloc> percpu_owned_[kPercpuMaxClass + 1];
};

// The process-wide domain of maps created without a runtime. Created on
// first use, never destroyed (its worker thread lives until exit).
MemDomain& default_mem_domain();

}  // namespace userbpf::mem
