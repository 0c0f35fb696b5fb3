// The bpf_obj_new / bpf_obj_drop kfuncs as the loader leaves their call
// sites (loader/object_link_obj.cc), like the kernel's fixup_kfunc_call: the
// type id in r1 rewritten into the object's size, and r2 (the kernel's meta
// argument, which programs pass as 0) set to the program's MemDomain by
// instructions inserted before the call. So the call needs no lookup of the
// run, the program or the type: allocation is a slot's list pop, a drop a
// header check and a list push.
#pragma once

#include "helpers/helper_fns.h"
#include "vm/helper_proto.h"

namespace userbpf::helpers {

u64 bpf_obj_new_resolved(u64 size, u64 domain, u64, u64, u64);
u64 bpf_obj_drop_resolved(u64 p, u64 domain, u64, u64, u64);
u64 bpf_percpu_obj_new_resolved(u64 size, u64 domain, u64, u64, u64);
u64 bpf_percpu_obj_drop_resolved(u64 p, u64 domain, u64, u64, u64);

// Their HelperProto::slot_fn: the same with the run's ObjRunState (its
// slot of the domain cached, the objects it holds counted, the last ones it
// allocated remembered for their drop: maps::ObjMemo).
u64 bpf_obj_new_in_slot(u64 size, u64 domain, vm::ObjRunState* run);
u64 bpf_obj_drop_in_slot(u64 p, u64 domain, vm::ObjRunState* run);

}  // namespace userbpf::helpers
