// Program-allocated objects: the kfuncs bpf_obj_new_impl / bpf_obj_drop_impl,
// bpf_percpu_obj_new_impl / bpf_percpu_obj_drop_impl, and the helpers
// bpf_kptr_xchg, bpf_per_cpu_ptr and bpf_this_cpu_ptr (maps/bpf_obj.h has
// the object model).
//
// The kernel's verifier proves statically what these check at run time: the
// object a drop or xchg gets is one the program owns, an xchg destination is
// a kptr field of a map value. A violation stops the run (EINVAL fault naming
// the kfunc) instead of failing the load. The loader resolves each
// bpf_obj_new call's type id to a size (Program::obj_sizes) and gives the
// call a proto whose ret_size is that size (the engines find objects by
// address, maps::obj_region, and take no grant for them); it also rewrites the arguments of every
// call it resolved (helpers_obj.h), which then runs a *_resolved function: those are the fast
// paths. The *_impl functions serve calls the loader left alone (code it proved dead, programs
// built without the loader).
#include "helpers/helpers_obj.h"

#include <cerrno>

#include "helpers/helper_fns.h"
#include "maps/bpf_obj.h"
#include "maps/special_fields.h"
#include "mem/domain.h"
#include "vm/interp_state.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

mem::MemDomain& domain_of(const vm::RunContext* rc) {
  mem::MemDomain* d = rc && rc->prog ? rc->prog->mem_domain : nullptr;
  return d ? *d : mem::default_mem_domain();
}

uint32_t obj_size_of(const vm::RunContext* rc, u64 type_id) {
  if (!rc || !rc->prog || type_id >= rc->prog->obj_sizes.size()) return 0;
  return rc->prog->obj_sizes[type_id];
}

mem::MemDomain& domain_arg(u64 domain) {
  return *reinterpret_cast<mem::MemDomain*>(static_cast<uintptr_t>(domain));
}

[[gnu::noinline, gnu::cold]] void drop_fault(const char* name, u64 p, maps::ObjError e) {
  vm::interp::fault_in_helper(vm::current_run(), EINVAL, p, "%s: arg1 %s", name,
                              maps::obj_error_name(e));
}

// The current run's ObjRunState::held (adjusted by delta), if a run is on.
void count_held(int delta) {
  vm::RunContext* rc = vm::current_run();
  if (rc == nullptr || rc->engine_state == nullptr) return;
  static_cast<vm::interp::InterpState*>(rc->engine_state)->obj.held += delta;
}

u64 obj_new_counted(void* o) {
  if (o) count_held(1);
  return reinterpret_cast<u64>(o);
}

u64 obj_drop(const char* name, mem::MemDomain& d, u64 p, bool percpu) {
  if (!p) return 0;
  const maps::ObjError e = maps::obj_drop(d, reinterpret_cast<void*>(p), percpu);
  if (e != maps::ObjError::kOk) [[unlikely]] {
    drop_fault(name, p, e);
    return 0;
  }
  count_held(-1);
  return 0;
}

// The kptr field at addr of a map of the program whose value is writable by
// programs, or nullptr (and *map unset).
const maps::SpecialField* find_kptr_field(const vm::Program& prog, uintptr_t addr,
                                          maps::Map** map) {
  for (maps::Map* m : prog.maps) {
    const maps::FieldTable* ft = m ? maps::map_fields(m) : nullptr;
    if (!ft || !m->ops || !m->ops->access_ok) continue;
    if (m->attr.map_flags & maps::kBpfFRdonlyProg) continue;
    for (const maps::SpecialField& f : ft->fields) {
      if (f.kind != maps::FieldKind::kKptr && f.kind != maps::FieldKind::kPercpuKptr) continue;
      const uintptr_t value = addr - f.offset;
      maps::ArrayLayout layout;
      if (m->ops->gen_lookup && m->ops->gen_lookup(m, &layout)) {
        // Array values are contiguous: the value must start on an element.
        const uint64_t off = value - layout.base;
        if (off >= uint64_t{layout.elem_size} * layout.max_entries || off % layout.elem_size)
          continue;
      } else if (!m->ops->access_ok(m, value, m->attr.value_size, true)) {
        // Other maps keep headers between values: a value_size window that
        // fits starts exactly at a value.
        continue;
      }
      *map = m;
      return &f;
    }
  }
  return nullptr;
}

}  // namespace

u64 bpf_obj_new_impl(u64 type_id, u64, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  const uint32_t size = obj_size_of(rc, type_id);
  return size ? obj_new_counted(maps::obj_new(domain_of(rc), size)) : 0;
}

u64 bpf_obj_drop_impl(u64 p, u64, u64, u64, u64) {
  return obj_drop("bpf_obj_drop_impl", domain_of(vm::current_run()), p, false);
}

u64 bpf_percpu_obj_new_impl(u64 type_id, u64, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  const uint32_t size = obj_size_of(rc, type_id);
  return size ? obj_new_counted(maps::percpu_obj_new(domain_of(rc), size)) : 0;
}

u64 bpf_percpu_obj_drop_impl(u64 p, u64, u64, u64, u64) {
  return obj_drop("bpf_percpu_obj_drop_impl", domain_of(vm::current_run()), p, true);
}

// The loader's rewritten calls: size and domain are constants of the call
// site, so a bad value cannot come from the program.
u64 bpf_obj_new_resolved(u64 size, u64 domain, u64, u64, u64) {
  return obj_new_counted(maps::obj_new(domain_arg(domain), static_cast<uint32_t>(size)));
}

u64 bpf_obj_drop_resolved(u64 p, u64 domain, u64, u64, u64) {
  return obj_drop("bpf_obj_drop_impl", domain_arg(domain), p, false);
}

namespace {

int run_slot(mem::MemDomain& d, vm::ObjRunState* run) {
  if (run->slot == vm::kSlotUnknown) [[unlikely]]
    run->slot = d.slots.held_slot();
  return run->slot;
}

}  // namespace

u64 bpf_obj_new_in_slot(u64 size, u64 domain, vm::ObjRunState* run) {
  mem::MemDomain& d = domain_arg(domain);
  void* o = maps::obj_new_in_slot(d, static_cast<uint32_t>(size), run_slot(d, run), &run->memo);
  if (o) run->held++;
  return reinterpret_cast<u64>(o);
}

u64 bpf_obj_drop_in_slot(u64 p, u64 domain, vm::ObjRunState* run) {
  if (!p) return 0;
  mem::MemDomain& d = domain_arg(domain);
  const maps::ObjError e =
      maps::obj_drop_in_slot(d, reinterpret_cast<void*>(p), run_slot(d, run), &run->memo);
  if (e != maps::ObjError::kOk) [[unlikely]] {
    drop_fault("bpf_obj_drop_impl", p, e);
    return 0;
  }
  run->held--;
  return 0;
}

u64 bpf_percpu_obj_new_resolved(u64 size, u64 domain, u64, u64, u64) {
  return obj_new_counted(maps::percpu_obj_new(domain_arg(domain), static_cast<uint32_t>(size)));
}

u64 bpf_percpu_obj_drop_resolved(u64 p, u64 domain, u64, u64, u64) {
  return obj_drop("bpf_percpu_obj_drop_impl", domain_arg(domain), p, true);
}

u64 bpf_kptr_xchg(u64 dst, u64 ptr, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (!rc || !rc->prog) return 0;
  maps::Map* m = nullptr;
  const maps::SpecialField* f = find_kptr_field(*rc->prog, static_cast<uintptr_t>(dst), &m);
  if (!f) {
    vm::interp::fault_in_helper(rc, EINVAL, dst,
                                "bpf_kptr_xchg: arg1 is not a kptr field of a map value");
    return 0;
  }
  void* old = nullptr;
  maps::ObjError e =
      maps::kptr_xchg(domain_of(rc), reinterpret_cast<uint64_t*>(dst), reinterpret_cast<void*>(ptr),
                      f->kind == maps::FieldKind::kPercpuKptr, f->obj_size, &old);
  if (e != maps::ObjError::kOk) {
    vm::interp::fault_in_helper(rc, EINVAL, e == maps::ObjError::kBadField ? dst : ptr,
                                "bpf_kptr_xchg: %s %s (map '%s')",
                                e == maps::ObjError::kBadField ? "arg1" : "arg2",
                                maps::obj_error_name(e), m->attr.name.c_str());
    return 0;
  }
  // The run gave ptr to the map and took old out of it.
  count_held((old ? 1 : 0) - (ptr ? 1 : 0));
  return reinterpret_cast<u64>(old);
}

u64 bpf_per_cpu_ptr(u64 p, u64 cpu, u64, u64, u64) {
  if (!p || cpu > UINT32_MAX) return 0;
  vm::RunContext* rc = vm::current_run();
  return reinterpret_cast<u64>(
      maps::percpu_obj_ptr(domain_of(rc), reinterpret_cast<void*>(p), static_cast<uint32_t>(cpu)));
}

u64 bpf_this_cpu_ptr(u64 p, u64, u64, u64, u64) {
  if (!p) return 0;
  vm::RunContext* rc = vm::current_run();
  void* q = maps::percpu_obj_ptr(domain_of(rc), reinterpret_cast<void*>(p), rc ? rc->cpu : 0);
  if (!q)
    vm::interp::fault_in_helper(rc, EINVAL, p,
                                "bpf_this_cpu_ptr: arg1 is not a per-CPU object from "
                                "bpf_percpu_obj_new");
  return reinterpret_cast<u64>(q);
}

}  // namespace userbpf::helpers
