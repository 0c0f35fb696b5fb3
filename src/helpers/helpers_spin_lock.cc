// bpf_spin_lock / bpf_spin_unlock (helpers 93 and 94) on the bpf_spin_lock
// field of a HASH or ARRAY map value (the lock word protocol and why it
// cannot deadlock: maps/spin_lock.h).
//
// The kernel's verifier proves statically what these check at run time (a
// violation stops the run with a fault naming the rule, in the verifier's
// words where it has them):
//   - the argument points exactly at the bpf_spin_lock of a value of one of
//     the program's maps (process_spin_lock), else EINVAL;
//   - a run holds at most one lock ("Locking two bpf_spin_locks are not
//     allowed") and unlocks the one it holds, else EINVAL;
//   - no map update or delete while holding it ("function calls are not
//     allowed while holding a lock", helpers_map.cc): those are the helpers
//     that may wait for a lock; others are allowed, as they cannot wait;
//   - a run that ends holding the lock, by returning or by a fault in the
//     critical section, has it released by vm::RunLoop; returning holding
//     it is an EINVAL error ("bpf_spin_unlock is missing").
// What the kernel cannot see: the lock held by the code this run interrupted
// on the same thread (a signal handler) stops the run with EDEADLK at once;
// a nested run (signal handler, or a run inside another on this thread) or a
// run on a thread already holding a lock waits a bounded time, then stops
// with EBUSY. Either way the run is reported as failed, never hangs.
#include <cerrno>

#include "helpers/helper_fns.h"
#include "maps/map.h"
#include "maps/special_fields.h"
#include "maps/spin_lock.h"
#include "vm/interp_state.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

// Whether addr is the bpf_spin_lock field of a value of one of prog's maps
// that programs may write.
bool is_spin_lock_field(const vm::Program& prog, uintptr_t addr) {
  for (maps::Map* m : prog.maps) {
    const maps::FieldTable* ft = m ? maps::map_fields(m) : nullptr;
    if (!ft || !m->ops || !m->ops->access_ok) continue;
    const maps::SpecialField* f = ft->find(maps::FieldKind::kSpinLock);
    if (!f || (m->attr.map_flags & maps::kBpfFRdonlyProg)) continue;
    const uintptr_t value = addr - f->offset;
    maps::ArrayLayout layout;
    if (m->ops->gen_lookup && m->ops->gen_lookup(m, &layout)) {
      // Array values are contiguous: the value must start on an element.
      const uint64_t off = value - layout.base;
      if (off < uint64_t{layout.elem_size} * layout.max_entries && off % layout.elem_size == 0)
        return true;
    } else if (m->ops->access_ok(m, value, m->attr.value_size, true)) {
      // Other maps keep headers between values: a value_size window that
      // fits starts exactly at a value.
      return true;
    }
  }
  return false;
}

[[gnu::noinline, gnu::cold]] u64 lock_fault(vm::RunContext* rc, int err, u64 lock,
                                            const char* why) {
  vm::interp::fault_in_helper(rc, err, lock, "bpf_spin_lock: %s", why);
  return 0;
}

[[gnu::noinline, gnu::cold]] u64 unlock_fault(vm::RunContext* rc, u64 lock) {
  vm::interp::fault_in_helper(
      rc, EINVAL, lock, "bpf_spin_unlock %s",
      rc->spin_lock == nullptr ? "without taking a lock" : "of different lock");
  return 0;
}

}  // namespace

u64 bpf_spin_lock(u64 lock, u64, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (rc == nullptr) [[unlikely]]
    return 0;
  if (rc->spin_lock != nullptr) [[unlikely]]
    return lock_fault(rc, EINVAL, lock, "Locking two bpf_spin_locks are not allowed");
  auto* word = reinterpret_cast<uint32_t*>(static_cast<uintptr_t>(lock));
  if (word != rc->spin_lock_checked || rc->prog != rc->spin_lock_prog) [[unlikely]] {
    if (!is_spin_lock_field(*rc->prog, static_cast<uintptr_t>(lock)))
      return lock_fault(rc, EINVAL, lock,
                        "arg1 is not the struct bpf_spin_lock of a map value of this program");
    rc->spin_lock_checked = word;
    rc->spin_lock_prog = rc->prog;
  }
  if (int err = maps::spin_lock_acquire(word, rc->outer != nullptr)) [[unlikely]]
    return lock_fault(rc, -err, lock,
                      err == -EDEADLK
                          ? "held by the code this run interrupted on the same thread"
                          : "still taken after a bounded wait (nested run, or this thread "
                            "holds another lock)");
  rc->spin_lock = word;
  return 0;
}

u64 bpf_spin_unlock(u64 lock, u64, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (rc == nullptr) [[unlikely]]
    return 0;
  auto* word = reinterpret_cast<uint32_t*>(static_cast<uintptr_t>(lock));
  if (rc->spin_lock != word) [[unlikely]]
    return unlock_fault(rc, lock);
  rc->spin_lock = nullptr;
  maps::spin_lock_release(word);
  return 0;
}

u64 map_write_on_locked_thread(const char* helper) {
  vm::RunContext* rc = vm::current_run();
  if (rc != nullptr && rc->spin_lock != nullptr) {
    vm::interp::fault_in_helper(rc, EINVAL, 0,
                                "%s: function calls are not allowed while holding a lock", helper);
    return static_cast<u64>(-static_cast<int64_t>(EINVAL));
  }
  return static_cast<u64>(-static_cast<int64_t>(EBUSY));
}

}  // namespace userbpf::helpers
