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

#include <cstdint>

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
};

// The process-wide domain of maps created without a runtime. Created on
// first use, never destroyed (its worker thread lives until exit).
MemDomain& default_mem_domain();

}  // namespace userbpf::mem
