// A memory domain for tests of programs that allocate objects (the
// interpreter's fused obj calls, the JIT's inline ones): the loader's
// bpf_obj_new (of kSize-byte objects: ret_size) and bpf_obj_drop protos
// with the given slot_fns, as kfuncs 0 and 1 of the programs prepare()
// makes, kfunc 2 the bpf_obj_new of kBigSize-byte objects (another size
// class), and one slot of the domain held around the runs as the host API
// does.
#pragma once

#include <memory>
#include <optional>

#include "helpers/helpers_obj.h"
#include "mem/domain.h"
#include "vm_test_util.h"

namespace userbpf::test {

struct ObjTestDomain {
  static constexpr int32_t kSize = 16;
  static constexpr int32_t kKfNew = 0;
  static constexpr int32_t kKfDrop = 1;
  static constexpr int32_t kBigSize = 40;
  static constexpr int32_t kKfNewBig = 2;
  using SlotFn = uint64_t (*)(uint64_t, uint64_t, vm::ObjRunState*);

  explicit ObjTestDomain(SlotFn new_fn = helpers::bpf_obj_new_in_slot,
                         SlotFn drop_fn = helpers::bpf_obj_drop_in_slot) {
    new_proto.ret = vm::RetKind::kMemOrNull;
    new_proto.ret_size = kSize;
    new_proto.slot_fn = new_fn;
    new_proto.obj_call = vm::HelperProto::ObjCall::kNew;
    big_new_proto = new_proto;
    big_new_proto.ret_size = kBigSize;
    drop_proto.ret = vm::RetKind::kVoid;
    drop_proto.slot_fn = drop_fn;
    drop_proto.obj_call = vm::HelperProto::ObjCall::kDrop;
    guard.emplace(dom.slots);
    EXPECT_TRUE(guard->ok());
  }
  ~ObjTestDomain() {
    guard.reset();
    (void)dom.rcu.rcu_barrier();
  }

  uint64_t addr() const { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&dom)); }
  // Objects allocated, once the worker is idle.
  uint64_t in_use() {
    dom.global_ma.flush();
    return dom.global_ma.stats().in_use;
  }
  // The program a, prepared (expects success), with the fake helpers.
  std::unique_ptr<vm::Program> prepare(const Asm& a) {
    auto p = std::make_unique<vm::Program>();
    p->name = "objs";
    p->insns = a.build();
    p->helpers = fake_helper_table();
    p->kfuncs = {&new_proto, &drop_proto, &big_new_proto};
    p->mem_domain = &dom;
    const Status st = vm::prepare_program(*p);
    EXPECT_TRUE(st.ok()) << st.error().message;
    return p;
  }

  mem::MemDomain dom{mem::MemDomainOptions{2, 1, {}}};
  std::optional<mem::SlotGuard> guard;
  vm::HelperProto new_proto{"bpf_obj_new_impl",
                            helpers::bpf_obj_new_resolved,
                            {vm::ArgKind::kAnything, vm::ArgKind::kAnything}};
  vm::HelperProto drop_proto{"bpf_obj_drop_impl",
                             helpers::bpf_obj_drop_resolved,
                             {vm::ArgKind::kAnything, vm::ArgKind::kAnything}};
  vm::HelperProto big_new_proto;
};

}  // namespace userbpf::test
