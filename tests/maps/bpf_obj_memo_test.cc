// maps::ObjMemo: bpf_obj_drop of an object the run just got from
// obj_new_in_slot takes its class from the memo instead of the allocator's
// page lookup. These tests hold the drop with the memo to exactly what the
// drop without it does: the state word alone decides (dropped, stored in a
// map, taken back out, owned by another slot), published objects still wait
// for a grace period, and each object goes back to its own class.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "maps/bpf_obj.h"
#include "mem/domain.h"

namespace userbpf {
namespace {

using maps::ObjError;
using maps::ObjMemo;

class ObjMemoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    guard.emplace(dom.slots);
    ASSERT_TRUE(guard->ok());
    slot = guard->slot();
  }
  void TearDown() override {
    guard.reset();
    (void)dom.rcu.rcu_barrier();
  }
  // A new object of size bytes recorded in memo (if given). The slot's list
  // may run dry before the background worker's refill lands: wait for it.
  void* obj_new(uint32_t size, ObjMemo* memo) {
    for (int attempt = 0; attempt < 100; attempt++) {
      if (void* p = maps::obj_new_in_slot(dom, size, slot, memo)) return p;
      dom.global_ma.flush();
    }
    ADD_FAILURE() << "obj_new_in_slot kept failing";
    return nullptr;
  }
  // The class the allocator's page lookup gives p's object.
  uint32_t class_of(void* p) {
    uintptr_t o = 0;
    size_t usable = 0;
    uint32_t cls = 99;
    EXPECT_TRUE(dom.global_ma.find_object(reinterpret_cast<uintptr_t>(p), &o, &usable, &cls));
    return cls;
  }
  uint64_t rcu_waiting() { return dom.global_ma.stats().rcu_waiting; }

  mem::MemDomain dom{mem::MemDomainOptions{2, 1, {}}};
  std::optional<mem::SlotGuard> guard;
  int slot = -1;
};

TEST_F(ObjMemoTest, RecordsTheLastObjectsWithTheirClasses) {
  ObjMemo memo;
  std::vector<void*> objs;
  const uint32_t sizes[6] = {16, 200, 16, 48, 100, 8};
  for (uint32_t size : sizes) objs.push_back(obj_new(size, &memo));
  if (HasFailure()) return;
  EXPECT_EQ(memo.next, 6u);
  // The last kEntries objects, entry i holding the object number i mod 4.
  for (uint32_t n = 2; n < 6; n++) {
    const uint32_t i = n % ObjMemo::kEntries;
    EXPECT_EQ(memo.ptr[i], reinterpret_cast<uintptr_t>(objs[n])) << "object " << n;
    EXPECT_EQ(memo.cls[i], class_of(objs[n])) << "object " << n;
    EXPECT_EQ(memo.cls[i], static_cast<uint32_t>(maps::obj_class(sizes[n]))) << "object " << n;
  }
  for (void* p : objs) EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, nullptr), ObjError::kOk);
}

// Without a memo nothing is recorded; with one, a failed allocation records
// nothing either (no slot: nullptr).
TEST_F(ObjMemoTest, RecordsOnlyObjects) {
  ObjMemo memo;
  EXPECT_EQ(maps::obj_new_in_slot(dom, 16, -1, &memo), nullptr);
  EXPECT_EQ(maps::obj_new_in_slot(dom, 0, slot, &memo), nullptr);
  EXPECT_EQ(maps::obj_new_in_slot(dom, maps::kObjMaxSize + 1, slot, &memo), nullptr);
  EXPECT_EQ(memo.next, 0u);
  for (uintptr_t p : memo.ptr) EXPECT_EQ(p, 0u);
}

TEST_F(ObjMemoTest, DoubleDropIsRefused) {
  ObjMemo memo;
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kNotOwned);
}

// An object stored in a map is not the run's to drop, though the memo knows
// it; taken back out it is, and (published) waits for a grace period.
TEST_F(ObjMemoTest, StoredObjectIsRefusedAndTakenOneWaitsForAGracePeriod) {
  ObjMemo memo;
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  uint64_t field = 0;
  void* old = nullptr;
  ASSERT_EQ(maps::kptr_xchg(dom, &field, p, false, 16, &old), ObjError::kOk);
  EXPECT_EQ(old, nullptr);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kNotOwned);
  EXPECT_EQ(field, reinterpret_cast<uint64_t>(p));  // still stored
  ASSERT_EQ(maps::kptr_xchg(dom, &field, nullptr, false, 16, &old), ObjError::kOk);
  ASSERT_EQ(old, p);
  const uint64_t waiting = rcu_waiting();
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
  EXPECT_EQ(rcu_waiting(), waiting + 1);  // free_rcu, not immediate reuse
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kNotOwned);
}

// Never published: back to its list at once, no grace period.
TEST_F(ObjMemoTest, UnpublishedObjectIsFreedForImmediateReuse) {
  ObjMemo memo;
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  const uint64_t waiting = rcu_waiting();
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
  EXPECT_EQ(rcu_waiting(), waiting);
}

TEST_F(ObjMemoTest, OtherSlotsObjectIsRefused) {
  ObjMemo memo;
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  const int other = slot == 0 ? 1 : 0;
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, other, &memo), ObjError::kNotOwned);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, -1, &memo), ObjError::kNotOwned);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
}

// An entry stays true after its object was dropped and handed out again
// (by an obj_new that did not record it): the drop decides by the state
// word as always.
TEST_F(ObjMemoTest, StaleEntryOfAReusedObject) {
  ObjMemo memo;
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
  std::vector<void*> again;
  bool reused = false;
  for (int i = 0; i < 8 && !reused; i++) {
    again.push_back(obj_new(16, nullptr));
    reused = again.back() == p;
  }
  ASSERT_TRUE(reused) << "the dropped object was not handed out again";
  EXPECT_EQ(memo.next, 1u);
  for (void* q : again) EXPECT_EQ(maps::obj_drop_in_slot(dom, q, slot, &memo), ObjError::kOk);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kNotOwned);
}

// Pointers the memo does not hold go through the page lookup: not objects,
// inside an object, and NULL (unused entries are 0 and must not match it).
TEST_F(ObjMemoTest, OtherPointersAreNotObjects) {
  ObjMemo memo;
  EXPECT_EQ(maps::obj_drop_in_slot(dom, nullptr, slot, &memo), ObjError::kNotObject);
  void* p = obj_new(16, &memo);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, nullptr, slot, &memo), ObjError::kNotObject);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, static_cast<char*>(p) + 8, slot, &memo),
            ObjError::kNotObject);
  uint64_t word = 0;
  EXPECT_EQ(maps::obj_drop_in_slot(dom, &word, slot, &memo), ObjError::kNotObject);
  EXPECT_EQ(maps::obj_drop_in_slot(dom, p, slot, &memo), ObjError::kOk);
}

// Objects of several classes dropped through the memo each go back to
// their own class: every object handed out afterwards lies in a slab of
// the class asked for.
TEST_F(ObjMemoTest, DropsReturnObjectsToTheirOwnClass) {
  const uint32_t sizes[4] = {16, 200, 48, 1000};
  for (int round = 0; round < 20; round++) {
    ObjMemo memo;
    void* objs[4];
    for (int i = 0; i < 4; i++) {
      objs[i] = obj_new(sizes[i], &memo);
      if (objs[i] == nullptr) return;
      ASSERT_EQ(class_of(objs[i]), static_cast<uint32_t>(maps::obj_class(sizes[i])))
          << "round " << round << " size " << sizes[i];
    }
    for (int i : {1, 3, 0, 2})
      ASSERT_EQ(maps::obj_drop_in_slot(dom, objs[i], slot, &memo), ObjError::kOk);
  }
}

}  // namespace
}  // namespace userbpf
