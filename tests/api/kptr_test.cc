// bpf_obj_new / bpf_obj_drop, bpf_kptr_xchg into hash and array map values,
// per-CPU objects, and what happens to stored objects when their element is
// deleted or overwritten or the map goes away; on both engines.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "api/internal.h"
#include "maps/bpf_obj.h"
#include "maps/special_fields.h"
#include "mem/domain.h"
#include "userbpf/userbpf.h"

namespace {

using userbpf::Engine;

std::string prog_path(const char* name) {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/" + name + ".bpf.o";
}

struct Args {
  uint32_t key;
  uint32_t pad;
  uint64_t val;
  uint64_t out;
};

struct Val {
  uint64_t x;
  uint64_t ptr;
  uint64_t y;
};

class KptrTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    auto r = userbpf::Runtime::create();
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, prog_path("kptr_obj"));
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
    auto st = obj->load();
    ASSERT_TRUE(st.ok()) << st.error().message;
    base = in_use();
  }
  userbpf::mem::MemDomain& dom() { return *rt->impl()->mem; }
  // Objects handed out and not dropped, once frees in flight have settled.
  // Waits until no object of the domain waits for a grace period (true),
  // or gives up after 100 grace periods.
  bool settle_rcu_frees() {
    userbpf::mem::MemAlloc& ma = dom().global_ma;
    for (int i = 0; i < 100 && ma.stats().rcu_waiting != 0; i++) {
      (void)dom().rcu.synchronize_rcu(userbpf::mem::RcuFlavor::kBoth);
      ma.flush();
    }
    return ma.stats().rcu_waiting == 0;
  }
  uint64_t in_use() {
    (void)dom().rcu.rcu_barrier();
    dom().global_ma.flush();
    return dom().global_ma.stats().in_use;
  }
  userbpf::Result<userbpf::RunResult> run(const char* name, Args& a) {
    auto p = obj->find_program(name);
    if (!p.ok()) return p.take_error();
    userbpf::RunOptions ro;
    ro.ctx = &a;
    ro.ctx_size = sizeof(a);
    ro.engine = GetParam();
    auto r = p->run(ro);
    if (r.ok()) std::memcpy(&a, r->ctx_out.data(), sizeof(a));
    return r;
  }
  uint64_t alloc_failures() {
    uint64_t n = dom().global_ma.stats().alloc_fail;
    if (auto* pma = dom().percpu_ma_if_exists(0)) n += pma->stats().alloc_fail;
    return n;
  }
  // Runs name; a run whose bpf_obj_new found its slot's cache empty (NULL,
  // the program returns -1) before the background worker's refill arrived is
  // run again once the worker has caught up, as a program would retry later.
  int64_t run_ok(const char* name, Args& a) {
    for (int attempt = 0;; attempt++) {
      Args in = a;
      uint64_t fails = alloc_failures();
      auto r = run(name, a);
      EXPECT_TRUE(r.ok()) << name << ": " << r.error().message;
      if (!r.ok()) return -100;
      int64_t ret = static_cast<int32_t>(r->retval);
      if (ret != -1 || alloc_failures() == fails || attempt == 3) return ret;
      dom().global_ma.flush();
      a = in;
    }
  }
  void expect_fault(const char* name, Args a, int err, std::initializer_list<const char*> parts) {
    auto r = run(name, a);
    ASSERT_FALSE(r.ok()) << name << " should fault";
    EXPECT_EQ(r.error().code, err) << r.error().message;
    for (const char* part : parts)
      EXPECT_NE(r.error().message.find(part), std::string::npos)
          << "'" << part << "' not in: " << r.error().message;
  }
  // Runs name, which should stop holding objects (err, message with part).
  // A run whose allocation failed (the program returns -1 holding nothing)
  // is run again once the background worker has refilled the caches.
  void expect_stop(const char* name, Args a, int err, const char* part) {
    for (int attempt = 0; attempt < 4; attempt++) {
      auto r = run(name, a);
      if (r.ok() && static_cast<int32_t>(r->retval) == -1) {
        dom().global_ma.flush();
        if (auto* pma = dom().percpu_ma_if_exists(0)) pma->flush();
        continue;
      }
      ASSERT_FALSE(r.ok()) << name << " should stop holding objects, returned " << r->retval;
      EXPECT_EQ(r.error().code, err) << r.error().message;
      EXPECT_NE(r.error().message.find(part), std::string::npos)
          << "'" << part << "' not in: " << r.error().message;
      return;
    }
    FAIL() << name << ": allocations kept failing";
  }
  // Per-CPU objects of pcnode's class handed out and not dropped.
  uint64_t percpu_in_use() {
    (void)dom().rcu.rcu_barrier();
    userbpf::mem::MemAlloc* pma = dom().percpu_ma_if_exists(0);
    if (!pma) return 0;
    pma->flush();
    return pma->stats().in_use;
  }
  userbpf::Map map(const char* name) {
    auto m = obj->find_map(name);
    EXPECT_TRUE(m.ok());
    return m.value();
  }

  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
  uint64_t base = 0;
};

TEST_P(KptrTest, NewWriteReadDrop) {
  for (int i = 0; i < 100; i++) {
    Args a{0, 0, static_cast<uint64_t>(41 + i), 0};
    ASSERT_EQ(run_ok("new_drop", a), 0);
    EXPECT_EQ(a.out, 42u + i);
  }
  EXPECT_EQ(in_use(), base);
}

// Many runs of many new/drop pairs: the slot's list crosses its watermarks
// (the worker refills and trims it) while the JIT's inlined paths and the
// calls take turns; results, zeroing and the allocation count stay exact.
TEST_P(KptrTest, ManyNewDropPairs) {
  for (int run = 0; run < 300; run++) {
    Args a{0, 0, 0, 0};
    ASSERT_EQ(run_ok("new_drop_many", a), 0) << "run " << run;
    EXPECT_EQ(a.out, 3u * (63u * 64u / 2u)) << "run " << run;
    Args b{0, 0, 0, 0};
    ASSERT_EQ(run_ok("new_drop_unchecked", b), 0) << "run " << run;
  }
  EXPECT_EQ(in_use(), base);
}

TEST_P(KptrTest, HashKptrSurvivesRunsAndIsDroppedOnDeleteAndReplace) {
  Args a{3, 0, 7, 0};
  ASSERT_EQ(run_ok("stash_hash", a), 0);  // no previous object
  EXPECT_EQ(in_use(), base + 1);
  a = {3, 0, 0, 0};
  ASSERT_EQ(run_ok("peek_hash", a), 1);  // a later run reads the stored object
  EXPECT_EQ(a.out, 7u + 14u);
  a = {3, 0, 9, 0};
  ASSERT_EQ(run_ok("stash_hash", a), 1);  // replaces it: the old one comes back
  EXPECT_EQ(a.out, 7u);
  EXPECT_EQ(in_use(), base + 1);

  // The host sees zeros in the kptr field and cannot write it.
  userbpf::Map m = map("kptr_hash");
  uint32_t key = 3;
  Val v{};
  ASSERT_TRUE(m.lookup(&key, &v).ok());
  EXPECT_EQ(v.ptr, 0u);
  Val planted{11, 0xdeadbeef000ull, 12};
  ASSERT_TRUE(m.update(&key, &planted).ok());
  EXPECT_EQ(in_use(), base);  // the replaced element's object was dropped
  a = {3, 0, 0, 0};
  EXPECT_EQ(run_ok("peek_hash", a), 0);  // no pointer planted
  ASSERT_TRUE(m.lookup(&key, &v).ok());
  EXPECT_EQ(v.x, 11u);
  EXPECT_EQ(v.ptr, 0u);
  EXPECT_EQ(v.y, 12u);

  a = {3, 0, 5, 0};
  ASSERT_EQ(run_ok("stash_hash", a), 0);
  EXPECT_EQ(in_use(), base + 1);
  ASSERT_TRUE(m.erase(&key).ok());  // deleting the element drops its object
  EXPECT_EQ(in_use(), base);

  a = {4, 0, 6, 0};
  ASSERT_EQ(run_ok("stash_hash", a), 0);
  a = {4, 0, 0, 0};
  ASSERT_EQ(run_ok("take_hash", a), 1);  // the program takes it out and drops it
  EXPECT_EQ(a.out, 6u);
  EXPECT_EQ(in_use(), base);
}

TEST_P(KptrTest, ArrayKptrDroppedWhenHostOverwrites) {
  userbpf::Map m = map("kptr_array");
  for (uint32_t k = 0; k < 4; k++) {
    Args a{k, 0, 100 + k, 0};
    ASSERT_EQ(run_ok("stash_array", a), 0);
  }
  EXPECT_EQ(in_use(), base + 4);
  Args a{2, 0, 0, 0};
  ASSERT_EQ(run_ok("peek_array", a), 1);
  EXPECT_EQ(a.out, 102u * 3);

  uint32_t key = 2;
  Val v{};
  ASSERT_TRUE(m.lookup(&key, &v).ok());
  EXPECT_EQ(v.ptr, 0u);
  Val planted{1, 0x1000, 2};
  ASSERT_TRUE(m.update(&key, &planted).ok());  // overwrites: its object is dropped
  EXPECT_EQ(in_use(), base + 3);
  a = {2, 0, 0, 0};
  EXPECT_EQ(run_ok("peek_array", a), 0);
  ASSERT_TRUE(m.lookup(&key, &v).ok());
  EXPECT_EQ(v.x, 1u);
  EXPECT_EQ(v.ptr, 0u);
  EXPECT_EQ(v.y, 2u);
  a = {1, 0, 0, 0};
  ASSERT_EQ(run_ok("take_array", a), 1);
  EXPECT_EQ(a.out, 101u);
  EXPECT_EQ(in_use(), base + 2);
}

TEST_P(KptrTest, ObjectDestroyDropsStoredKptrs) {
  for (uint32_t k = 0; k < 4; k++) {
    Args a{k, 0, k, 0};
    ASSERT_EQ(run_ok("stash_array", a), 0);
    ASSERT_EQ(run_ok("stash_hash", a), 0);
  }
  EXPECT_EQ(in_use(), base + 8);
  obj.reset();
  EXPECT_EQ(in_use(), base);
}

TEST_P(KptrTest, MisusesStopTheRun) {
  expect_fault("xchg_plain_field", Args{0, 0, 0, 0}, EINVAL, {"bpf_kptr_xchg", "not a kptr field"});
  expect_fault("xchg_stack", Args{0, 0, 0, 0}, EINVAL, {"bpf_kptr_xchg", "not a kptr field"});
  // The objects the two runs held were dropped when they stopped.
  EXPECT_EQ(in_use(), base);
  expect_fault("double_drop", Args{0, 0, 0, 0}, EINVAL, {"bpf_obj_drop_impl", "does not own"});
  EXPECT_EQ(in_use(), base);  // dropped once
  Args a{1, 0, 5, 0};
  ASSERT_EQ(run_ok("stash_array", a), 0);
  expect_fault("drop_stored", Args{1, 0, 0, 0}, EINVAL, {"bpf_obj_drop_impl", "does not own"});
  a = {1, 0, 0, 0};
  EXPECT_EQ(run_ok("peek_array", a), 1);  // still stored, intact
  uint64_t stack_word = 0;
  expect_fault("drop_forged", Args{0, 0, reinterpret_cast<uint64_t>(&stack_word), 0}, EINVAL,
               {"bpf_obj_drop_impl", "not an object"});
  expect_fault("drop_forged", Args{0, 0, 0x10, 0}, EINVAL, {"not an object"});
  expect_fault("past_object", Args{0, 0, 2, 0}, EFAULT, {"out-of-bounds store of 8 bytes"});
  // Returning while holding objects (new, or taken out of a map): a fault
  // where the kernel would not have loaded the program; the objects are
  // dropped (RunsThatStopHoldingObjectsLeakNothing below).
  const uint64_t stored = in_use();  // the object stash_array left in element 1
  EXPECT_EQ(stored, base + 1);
  expect_fault("new_leak", Args{0, 0, 5, 0}, EINVAL,
               {"'new_leak'", "returned holding 1 object", "unreleased reference"});
  EXPECT_EQ(in_use(), stored);
  a = {2, 0, 6, 0};
  ASSERT_EQ(run_ok("stash_array", a), 0);
  EXPECT_EQ(in_use(), stored + 1);
  expect_fault("take_leak", Args{2, 0, 0, 0}, EINVAL, {"returned holding 1 object"});
  EXPECT_EQ(in_use(), stored);
  Args empty{2, 0, 0, 0};
  EXPECT_EQ(run_ok("take_leak", empty), 0);  // nothing left to take: a clean return
}

// A run that stops holding objects drops them, whether it returned (which
// the kernel's verifier would have refused) or faulted: a buggy program run
// again and again in a long-lived host leaks nothing.
TEST_P(KptrTest, RunsThatStopHoldingObjectsLeakNothing) {
  for (int i = 0; i < 300; i++) {
    expect_stop("new_leak", Args{0, 0, 5, 0}, EINVAL, "returned holding 1 object");
    expect_stop("new_fault", Args{0, 0, 8, 0}, EFAULT, "null pointer load of 8 bytes");
    if (HasFailure()) break;
  }
  EXPECT_EQ(in_use(), base);
  // Dropped exactly once: a second free would have put an object on its
  // slot's list twice (in_use below base) and handed it out twice.
  Args a{0, 0, 0, 0};
  EXPECT_EQ(run_ok("new_drop_many", a), 0);
  EXPECT_EQ(in_use(), base);
}

// Every kind of object a run can hold: new objects of two size classes, a
// new per-CPU object and an object taken out of a map.
TEST_P(KptrTest, StoppedRunDropsObjectsOfEveryKind) {
  ASSERT_NE(dom().percpu_ma_if_exists(0), nullptr);  // created at load for struct pcnode
  const uint64_t pc_base = percpu_in_use();
  for (uint64_t at : {uint64_t{0}, uint64_t{8}}) {  // returns; faults on a load at 8
    for (uint32_t i = 0; i < 40; i++) {
      Args s{i % 4, 0, i, 0};
      ASSERT_EQ(run_ok("stash_array", s), 0);
      expect_stop("leak_many", Args{i % 4, 0, at, 0}, at ? EFAULT : EINVAL,
                  at ? "null pointer load" : "returned holding 4 object(s)");
      if (HasFailure()) return;
    }
  }
  EXPECT_EQ(in_use(), base);
  EXPECT_EQ(percpu_in_use(), pc_base);
}

// An object taken out of a map was published: other runs may have loaded
// its pointer, so when the run that took it stops holding it, it is freed
// like a published drop, for reuse after a grace period.
TEST_P(KptrTest, LeakedObjectTakenFromAMapWaitsForAGracePeriod) {
  Args a{3, 0, 7, 0};
  ASSERT_EQ(run_ok("stash_array", a), 0);
  EXPECT_EQ(in_use(), base + 1);
  userbpf::mem::MemAlloc& ma = dom().global_ma;
  ASSERT_TRUE(settle_rcu_frees());
  {
    // A reader that entered before the drop (as a run that loaded the
    // kptr would have): the object is not reusable while it stays.
    userbpf::mem::RcuReadGuard reader(dom().rcu);
    ASSERT_TRUE(reader.ok());
    expect_stop("take_leak", Args{3, 0, 0, 0}, EINVAL, "returned holding 1 object");
    ma.flush();
    const userbpf::mem::MemAllocStats st = ma.stats();
    EXPECT_EQ(st.rcu_waiting, 1u);
    EXPECT_EQ(st.in_use, base);
  }
  EXPECT_EQ(in_use(), base);
}

// bpf_obj_drop of an object the run allocated itself (its class comes
// from the allocation, maps::ObjMemo, not the page lookup) still follows
// the object's state: stored in a map, the drop is refused and the object
// stays stored; taken back out, it is dropped, after a grace period (it
// was published).
TEST_P(KptrTest, DropOfOwnNewObjectFollowsItsState) {
  expect_stop("stash_then_drop", Args{1, 0, 5, 0}, EINVAL, "does not own");
  Args a{1, 0, 0, 0};
  EXPECT_EQ(run_ok("peek_array", a), 1);  // still stored, intact
  EXPECT_EQ(a.out, 15u);
  EXPECT_EQ(in_use(), base + 1);
  userbpf::mem::MemAlloc& ma = dom().global_ma;
  ASSERT_TRUE(settle_rcu_frees());
  {
    userbpf::mem::RcuReadGuard reader(dom().rcu);
    ASSERT_TRUE(reader.ok());
    a = {2, 0, 0, 0};
    ASSERT_EQ(run_ok("stash_take_drop", a), 0);
    ma.flush();
    EXPECT_EQ(ma.stats().rcu_waiting, 1u);  // not reusable while the reader stays
  }
  EXPECT_EQ(in_use(), base + 1);  // element 1's object
}

TEST_P(KptrTest, PercpuObjects) {
  userbpf::mem::MemAlloc* pma = dom().percpu_ma_if_exists(0);
  ASSERT_NE(pma, nullptr);  // created at load for struct pcnode
  Args a{0, 0, 77, 0};
  int64_t r = run_ok("pc_new_drop", a);
  if (r == -1) {  // the per-CPU cache holds one object until the worker refills it
    pma->flush();
    a = {0, 0, 77, 0};
    r = run_ok("pc_new_drop", a);
  }
  ASSERT_EQ(r, 0);
  EXPECT_EQ(a.out, 77u);
  a = {0, 0, 5, 0};
  r = run_ok("pc_stash", a);
  if (r == -1) {
    pma->flush();
    r = run_ok("pc_stash", a);
  }
  ASSERT_EQ(r, 0);
  a = {0, 0, 0, 0};
  ASSERT_EQ(run_ok("pc_sum", a), 1);
  EXPECT_EQ(a.out, 5u);  // only the running CPU's copy was set
  pma->flush();
  EXPECT_EQ(pma->stats().in_use, 1u);
  obj.reset();  // the map's release drops it
  (void)dom().rcu.rcu_barrier();
  pma->flush();
  EXPECT_EQ(pma->stats().in_use, 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, KptrTest, ::testing::Values(Engine::kInterpreter, Engine::kJit),
                         [](const auto& info) {
                           return info.param == Engine::kJit ? "jit" : "interp";
                         });

void expect_load_error(const char* name, int err, std::initializer_list<const char*> parts) {
  auto rt = userbpf::Runtime::create();
  ASSERT_TRUE(rt.ok());
  auto o = userbpf::Object::open(**rt, prog_path(name));
  ASSERT_TRUE(o.ok()) << o.error().message;
  auto st = (*o)->load();
  ASSERT_FALSE(st.ok()) << name << " should not load";
  EXPECT_EQ(st.error().code, err) << st.error().message;
  for (const char* part : parts)
    EXPECT_NE(st.error().message.find(part), std::string::npos)
        << "'" << part << "' not in: " << st.error().message;
}

TEST(KptrLoad, RejectsBadObjNewTypeIds) {
  expect_load_error("loader_bad_objnew_nonconst", EINVAL,
                    {"program 'nonconst'", "bpf_obj_new_impl", "not a constant"});
  expect_load_error("loader_bad_objnew_type", EINVAL,
                    {"program 'not_struct'", "bpf_obj_new_impl", "expected a struct"});
  expect_load_error("loader_bad_objnew_big", E2BIG,
                    {"program 'too_big'", "struct big is 5000 bytes", "1..4080"});
}

TEST(KptrLoad, FieldTableFromBtf) {
  auto rt = userbpf::Runtime::create();
  ASSERT_TRUE(rt.ok());
  auto o = userbpf::Object::open(**rt, prog_path("kptr_obj"));
  ASSERT_TRUE(o.ok()) << o.error().message;
  ASSERT_TRUE((*o)->load().ok());
  auto m = (*o)->find_map("kptr_hash");
  ASSERT_TRUE(m.ok());
  const userbpf::maps::FieldTable* ft = userbpf::maps::map_fields(m->handle()->map);
  ASSERT_NE(ft, nullptr);
  ASSERT_EQ(ft->fields.size(), 1u);
  EXPECT_EQ(ft->fields[0].kind, userbpf::maps::FieldKind::kKptr);
  EXPECT_EQ(ft->fields[0].offset, 8u);
  EXPECT_EQ(ft->fields[0].size, 8u);
  EXPECT_EQ(ft->fields[0].obj_size, 16u);
  auto pc = (*o)->find_map("pcpu_array");
  ASSERT_TRUE(pc.ok());
  ft = userbpf::maps::map_fields(pc->handle()->map);
  ASSERT_NE(ft, nullptr);
  EXPECT_EQ(ft->fields[0].kind, userbpf::maps::FieldKind::kPercpuKptr);
  EXPECT_EQ(ft->fields[0].obj_size, 8u);
}

}  // namespace
