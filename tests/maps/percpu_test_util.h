// Helpers for the per-CPU map tests: a memory domain with a chosen number of
// CPU slots, per-CPU maps created in it, and the host-layout buffers.
#pragma once

#include <gtest/gtest.h>
#include <sched.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "map_test_util.h"
#include "maps/map.h"
#include "maps/registry.h"
#include "mem/domain.h"

namespace userbpf::maps::test {

// A domain of n normal CPU slots and the per-CPU maps made in it (destroyed
// before the domain).
class PercpuFixture {
 public:
  explicit PercpuFixture(uint32_t n) {
    mem::MemDomainOptions o;
    o.num_slots = n;
    dom_ = std::make_unique<mem::MemDomain>(o);
  }
  ~PercpuFixture() { maps_.clear(); }
  mem::MemDomain& dom() { return *dom_; }
  uint32_t ncpus() const { return dom_->slots.num_slots(); }

  MapAttr attr(MapType type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
               uint32_t flags = 0) {
    MapAttr a = make_attr(type, key_size, value_size, max_entries, flags);
    a.domain = dom_.get();
    return a;
  }
  Map* create(const MapAttr& a) {
    MapPtr m = must_create(a);
    Map* raw = m.get();
    if (m) maps_.push_back(std::move(m));
    return raw;
  }
  int create_errno(const MapAttr& a) { return test::create_errno(a); }

 private:
  std::unique_ptr<mem::MemDomain> dom_;
  std::vector<MapPtr> maps_;
};

// u64 per-CPU values in the host layout (stride 8).
inline std::vector<uint64_t> percpu_u64(uint32_t n, uint64_t base) {
  std::vector<uint64_t> v(n);
  for (uint32_t c = 0; c < n; c++) v[c] = base + c;
  return v;
}

inline long host_update(Map* m, const void* key, const void* value, uint64_t flags = 0) {
  return m->ops->update_elem_copy(m, key, value, flags);
}
inline int host_lookup(Map* m, const void* key, void* value, uint64_t flags = 0) {
  return m->ops->lookup_elem_copy(m, key, value, flags);
}
// for_each_elem over m with a callback summing u64 values (the copies a
// program would see); *sum gets the sum, the return is for_each_elem's.
inline long for_each_sum(Map* m, uint64_t* sum) {
  *sum = 0;
  return m->ops->for_each_elem(
      m,
      [](void* ctx, Map*, const void*, void* value) -> uint64_t {
        *static_cast<uint64_t*>(ctx) += *static_cast<uint64_t*>(value);
        return 0;
      },
      sum, 0);
}

inline uint64_t cpu_flags(uint32_t cpu, uint64_t extra = 0) {
  return kBpfFCpu | (uint64_t{cpu} << 32) | extra;
}

// Runs f while holding CPU slot `slot` of dom's table (what a program run on
// that slot does), for program-side ops. The background worker may hold the
// slot for a moment: retried until free.
template <class F>
void on_slot(mem::MemDomain& dom, uint32_t slot, F&& f) {
  while (!dom.slots.try_enter_slot(slot)) sched_yield();
  f();
  dom.slots.leave(static_cast<int>(slot));
}

}  // namespace userbpf::maps::test
