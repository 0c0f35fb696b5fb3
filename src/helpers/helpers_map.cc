// Map helpers: program-side calls through the map's MapOps (lookup_elem,
// lookup_percpu_elem, update_elem, delete_elem, for_each_elem). Values a
// lookup returns stay valid until the program returns (the run is an RCU
// read-side section).
#include <cerrno>

#include "helpers/helper_fns.h"
#include "maps/map.h"
#include "maps/spin_lock.h"
#include "vm/interp_state.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

maps::Map* as_map(u64 v) {
  return reinterpret_cast<maps::Map*>(static_cast<uintptr_t>(v));
}
const void* as_ptr(u64 v) {
  return reinterpret_cast<const void*>(static_cast<uintptr_t>(v));
}
u64 neg(int err) {
  return static_cast<u64>(-static_cast<int64_t>(err));
}

// The kernel's verifier refuses program writes to BPF_F_RDONLY_PROG maps
// (.rodata); userbpf refuses them at the call. Freezing a map only blocks
// the host (BPF_MAP_FREEZE: "write operations from eBPF programs are still
// possible for a frozen map").
bool program_may_write(const maps::Map* map) {
  return !(map->attr.map_flags & maps::kBpfFRdonlyProg);
}

// What a for_each_map_elem callback needs to re-enter the program.
struct ForEachCtx {
  vm::RunContext* rc;
  u64 callback_fn;
  u64 callback_ctx;
};

// Called by the map for each element: callback_fn(map, key, value, ctx).
// 0 continues, 1 stops (also once the engine reports a fault).
uint64_t for_each_trampoline(void* cb_ctx, maps::Map* map, const void* key, void* value) {
  auto* c = static_cast<ForEachCtx*>(cb_ctx);
  vm::RunContext* rc = c->rc;
  // The key may be a copy on this helper's stack (array index): lend it.
  const void* saved_loan = rc->loan;
  size_t saved_size = rc->loan_size;
  bool saved_writable = rc->loan_writable;
  rc->loan = key;
  rc->loan_size = map->attr.key_size;
  rc->loan_writable = false;
  u64 ret = rc->call_fn(rc, c->callback_fn, reinterpret_cast<uintptr_t>(map),
                        reinterpret_cast<uintptr_t>(key), reinterpret_cast<uintptr_t>(value),
                        c->callback_ctx, 0);
  rc->loan = saved_loan;
  rc->loan_size = saved_size;
  rc->loan_writable = saved_writable;
  if (rc->faulted) return 1;
  return ret ? 1 : 0;
}

}  // namespace

u64 bpf_map_lookup_elem(u64 map, u64 key, u64, u64, u64) {
  maps::Map* m = as_map(map);
  if (!m->ops->lookup_elem) return 0;
  return reinterpret_cast<uintptr_t>(m->ops->lookup_elem(m, as_ptr(key)));
}

// Another CPU slot's copy of a per-CPU map's value; NULL for a CPU past the
// map's last. The kernel's verifier refuses the call on other maps; userbpf
// stops the run there.
u64 bpf_map_lookup_percpu_elem(u64 map, u64 key, u64 cpu, u64, u64) {
  maps::Map* m = as_map(map);
  if (!m->ops->lookup_percpu_elem) {
    vm::interp::fault_in_helper(vm::current_run(), EINVAL, map,
                                "bpf_map_lookup_percpu_elem: map %s (%s) is not a per-CPU map",
                                m->attr.name.c_str(), maps::map_type_name(m->attr.type));
    return 0;
  }
  // The kernel's helper takes the CPU as a u32: the upper half is ignored.
  return reinterpret_cast<uintptr_t>(
      m->ops->lookup_percpu_elem(m, as_ptr(key), static_cast<uint32_t>(cpu)));
}

u64 bpf_map_update_elem(u64 map, u64 key, u64 value, u64 flags, u64) {
  maps::Map* m = as_map(map);
  if (!m->ops->update_elem) return neg(EOPNOTSUPP);
  if (!program_may_write(m)) return neg(EPERM);
  if (maps::spin_lock_thread_busy()) [[unlikely]]
    return map_write_on_locked_thread("bpf_map_update_elem");
  return static_cast<u64>(m->ops->update_elem(m, as_ptr(key), as_ptr(value), flags));
}

u64 bpf_map_delete_elem(u64 map, u64 key, u64, u64, u64) {
  maps::Map* m = as_map(map);
  if (!m->ops->delete_elem) return neg(EOPNOTSUPP);
  if (!program_may_write(m)) return neg(EPERM);
  if (maps::spin_lock_thread_busy()) [[unlikely]]
    return map_write_on_locked_thread("bpf_map_delete_elem");
  return static_cast<u64>(m->ops->delete_elem(m, as_ptr(key)));
}

// Returns the number of elements visited (including the one whose callback
// stopped the walk) or a negative errno. Every kernel map type refuses
// flags != 0 with -EINVAL; checked here once for all.
u64 bpf_for_each_map_elem(u64 map, u64 callback_fn, u64 callback_ctx, u64 flags, u64) {
  maps::Map* m = as_map(map);
  if (flags) return neg(EINVAL);
  if (!m->ops->for_each_elem) return neg(EOPNOTSUPP);
  vm::RunContext* rc = vm::current_run();
  if (!rc || !rc->call_fn) return neg(EINVAL);
  ForEachCtx ctx{rc, callback_fn, callback_ctx};
  return static_cast<u64>(m->ops->for_each_elem(m, &for_each_trampoline, &ctx, flags));
}

}  // namespace userbpf::helpers
