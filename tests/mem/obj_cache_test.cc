// Object caches: size classes, watermarks, refill/trim by the worker, plain
// and rcu free, per-CPU objects, re-entry, accounting.
#include "mem/obj_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace userbpf::mem {

struct MemAllocTestPeer {
  static void set_active(MemAlloc& a, int slot, uint32_t cls, bool on) {
    a.cache(slot, cls).active.store(on ? 1 : 0);
  }
  static uint32_t free_cnt(MemAlloc& a, int slot, uint32_t cls) {
    return a.cache(slot, cls).free_cnt.load();
  }
  static uint32_t extra_cnt(MemAlloc& a, int slot, uint32_t cls) {
    return a.cache(slot, cls).extra_cnt.load();
  }
  static bool kicked(MemAlloc& a, int slot, uint32_t cls) {
    return a.cache(slot, cls).kicked.load() != 0;
  }
  // Overwrites the page cache entry of addr's page with one for another page
  // that maps to the same entry, as a slab there would.
  static void evict_page_cache(MemAlloc& a, uintptr_t addr) {
    const uint64_t pg = addr >> 12;
    a.page_cache_[pg % MemAlloc::kPageCacheSize].store(MemAlloc::page_cache_entry(
        pg + MemAlloc::kPageCacheSize, pg + MemAlloc::kPageCacheSize, 0));
  }
  static std::mutex& lock(MemAlloc& a) { return a.mu_; }
  static uint64_t page_cache_entry(MemAlloc& a, uintptr_t addr) {
    return a.page_cache_[(addr >> 12) % MemAlloc::kPageCacheSize].load();
  }
};

namespace {

struct Env {
  explicit Env(uint32_t n = 2) : slots(n, n), rcu(slots, worker) {}
  SlotTable slots;
  BackgroundWorker worker;
  RcuDomain rcu;
  PagePool pages;
};

TEST(ObjCache, SizeClasses) {
  EXPECT_EQ(size_class_for(0), -1);
  EXPECT_EQ(size_class_for(1), 0);
  EXPECT_EQ(size_class_for(8), 0);
  EXPECT_EQ(size_class_for(9), 1);
  EXPECT_EQ(size_class_for(88), 3);   // 96
  EXPECT_EQ(size_class_for(89), 4);   // 128
  EXPECT_EQ(size_class_for(184), 5);  // 192
  EXPECT_EQ(size_class_for(4088), 10);
  EXPECT_EQ(size_class_for(4089), -1);  // no cache above 4096
}

TEST(ObjCache, KernelWatermarks) {
  auto eq = [](Watermarks w, uint32_t l, uint32_t h, uint32_t b) {
    return w.low == l && w.high == h && w.batch == b;
  };
  EXPECT_TRUE(eq(watermarks_for(16, false), 32, 96, 48));
  EXPECT_TRUE(eq(watermarks_for(256, false), 32, 96, 48));
  EXPECT_TRUE(eq(watermarks_for(512, false), 16, 48, 24));
  EXPECT_TRUE(eq(watermarks_for(1024, false), 8, 24, 12));
  EXPECT_TRUE(eq(watermarks_for(2048, false), 4, 12, 6));
  EXPECT_TRUE(eq(watermarks_for(4096, false), 2, 6, 3));
  EXPECT_TRUE(eq(watermarks_for(64, true), 1, 3, 1));
}

TEST(ObjCache, AllocGivesUsableSizeOfItsClass) {
  Env e;
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  ASSERT_TRUE(a.init({}).ok());
  SlotGuard g(e.slots);
  for (size_t size : {1, 8, 9, 100, 200, 1000, 4088}) {
    void* p = a.alloc(g.slot(), size);
    ASSERT_NE(p, nullptr) << size;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u);
    int cls = size_class_for(size);
    EXPECT_EQ(a.usable_size(p), kSizeClasses[cls] - kObjHeader);
    std::memset(p, 0x5a, a.usable_size(p));
    a.free(g.slot(), p);
  }
  EXPECT_EQ(a.alloc(g.slot(), 4089), nullptr);
  EXPECT_EQ(a.alloc(g.slot(), 0), nullptr);
}

TEST(ObjCache, PlainFreeIsReusedImmediately) {
  Env e;
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  ASSERT_TRUE(a.init({}).ok());
  SlotGuard g(e.slots);
  void* p = a.alloc(g.slot(), 40);
  a.free(g.slot(), p);
  EXPECT_EQ(a.alloc(g.slot(), 40), p);
  a.free(g.slot(), p);
}

TEST(ObjCache, WorkerRefillsABusySlot) {
  Env e;
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 64;
  ASSERT_TRUE(a.init(o).ok());
  std::vector<void*> got;
  {
    SlotGuard g(e.slots);
    for (int i = 0; i < 4; i++) got.push_back(a.alloc(g.slot(), 64));  // the prefill
    for (void* p : got) ASSERT_NE(p, nullptr);
    // Below low: the worker hands a batch over while we still hold the slot.
    a.flush();
    for (int i = 0; i < 48; i++) {
      void* p = a.alloc(g.slot(), 64);
      ASSERT_NE(p, nullptr) << i;
      got.push_back(p);
    }
    std::set<void*> distinct(got.begin(), got.end());
    EXPECT_EQ(distinct.size(), got.size());
    for (void* p : got) a.free(g.slot(), p);
  }
  a.flush();
  MemAllocStats st = a.stats();
  EXPECT_EQ(st.in_use, 0u);
  EXPECT_EQ(st.cached + st.depot, st.carved);
  EXPECT_GT(st.bytes, 0u);
}

TEST(ObjCache, WorkerTrimsAboveHighWatermark) {
  Env e(1);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 32;
  o.prefill = 0;
  ASSERT_TRUE(a.init(o).ok());
  std::vector<void*> objs;
  {
    SlotGuard g(e.slots);
    for (int i = 0; i < 200; i++) objs.push_back(a.alloc_host(g.slot(), 32));
    for (void* p : objs) ASSERT_NE(p, nullptr);
    for (void* p : objs) a.free(g.slot(), p);
    EXPECT_EQ(MemAllocTestPeer::free_cnt(a, 0, 0), 240u);  // 5 inline refills of 48
  }
  a.flush();
  EXPECT_EQ(MemAllocTestPeer::free_cnt(a, 0, 0), (32u + 96u) / 2);
  MemAllocStats st = a.stats();
  EXPECT_EQ(st.in_use, 0u);
  EXPECT_EQ(st.cached + st.depot, st.carved);
}

TEST(ObjCache, RcuFreeIsNotReusedBeforeReadersLeave) {
  // One normal slot, held by a reader thread the whole time; the writer
  // (this thread) works from a sleepable slot. kNormal grace periods wait
  // for the normal reader only.
  Env e(1);
  SlotTable& t = e.slots;
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 48;
  ASSERT_TRUE(a.init(o).ok());
  int ws = t.enter_sleepable();
  void* victim = a.alloc(ws, 48);
  ASSERT_NE(victim, nullptr);
  t.leave(ws);

  std::atomic<int> phase{0};
  std::thread reader([&] {
    int s = t.enter();
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
    t.leave(s);
  });
  while (phase.load() != 1) std::this_thread::yield();
  ws = t.enter_sleepable();
  a.free_rcu(ws, victim);
  t.leave(ws);
  for (int round = 0; round < 10; round++) {
    a.flush();
    ws = t.enter_sleepable();
    std::vector<void*> objs;
    for (int i = 0; i < 200; i++) {
      void* p = a.alloc_host(ws, 48);
      ASSERT_NE(p, nullptr);
      EXPECT_NE(p, victim) << "reused while a reader may still see it";
      objs.push_back(p);
    }
    for (void* p : objs) a.free(ws, p);
    t.leave(ws);
  }
  EXPECT_EQ(a.stats().rcu_waiting, 1u);
  phase = 2;
  reader.join();
  // Once the reader left, the object comes back.
  bool back = false;
  for (int round = 0; round < 50 && !back; round++) {
    a.flush();
    ws = t.enter_sleepable();
    std::vector<void*> objs;
    for (int i = 0; i < 300; i++) {
      void* p = a.alloc_host(ws, 48);
      if (!p) break;
      back |= p == victim;
      objs.push_back(p);
    }
    for (void* p : objs) a.free(ws, p);
    t.leave(ws);
  }
  EXPECT_TRUE(back);
  MemAllocStats st = a.stats();
  EXPECT_EQ(st.in_use, 0u);
  EXPECT_EQ(st.rcu_waiting, 0u);
}

TEST(ObjCache, PerCpuObjects) {
  Env e(4);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 12;
  o.percpu = true;
  ASSERT_TRUE(a.init(o).ok());
  SlotGuard g(e.slots);
  void* p = a.alloc(g.slot(), 0);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(a.usable_size(p), 16u);
  for (uint32_t cpu = 0; cpu < 4; cpu++) {
    auto* c = static_cast<uint64_t*>(a.per_cpu_ptr(p, cpu));
    EXPECT_EQ(reinterpret_cast<char*>(c) - static_cast<char*>(p), (ptrdiff_t)(cpu * 16));
    c[0] = cpu;
    c[1] = ~uint64_t{cpu};
  }
  for (uint32_t cpu = 0; cpu < 4; cpu++)
    EXPECT_EQ(*static_cast<uint64_t*>(a.per_cpu_ptr(p, cpu)), cpu);
  a.flush();  // watermarks 1/3/1: the worker refills the busy slot
  void* q = a.alloc(g.slot(), 0);
  ASSERT_NE(q, nullptr);
  EXPECT_NE(q, p);
  a.free(g.slot(), p);
  a.free(g.slot(), q);
}

TEST(ObjCache, ReentryReturnsNullAndFreesGoToSideList) {
  Env e(1);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 16;
  ASSERT_TRUE(a.init(o).ok());
  SlotGuard g(e.slots);
  void* p = a.alloc(g.slot(), 16);
  void* q = a.alloc(g.slot(), 16);
  ASSERT_TRUE(p && q);
  uint32_t before = MemAllocTestPeer::free_cnt(a, 0, 0);
  MemAllocTestPeer::set_active(a, 0, 0, true);  // as if interrupted mid-operation
  EXPECT_EQ(a.alloc(g.slot(), 16), nullptr);
  a.free(g.slot(), p);
  EXPECT_EQ(MemAllocTestPeer::extra_cnt(a, 0, 0), 1u);
  EXPECT_EQ(MemAllocTestPeer::free_cnt(a, 0, 0), before);
  MemAllocTestPeer::set_active(a, 0, 0, false);
  // Drained by the holder when its list runs dry.
  std::set<void*> seen;
  for (int i = 0; i < 1000; i++) {
    void* r = a.alloc(g.slot(), 16);
    if (!r) break;
    seen.insert(r);
  }
  EXPECT_TRUE(seen.count(p));
  EXPECT_EQ(MemAllocTestPeer::extra_cnt(a, 0, 0), 0u);
  for (void* r : seen) a.free(g.slot(), r);
  a.free(g.slot(), q);
  EXPECT_GT(a.stats().alloc_fail, 0u);
}

TEST(ObjCache, FindObjectAnswersForEveryAddress) {
  Env e(1);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.index_objects = true;
  ASSERT_TRUE(a.init(o).ok());
  SlotGuard g(e.slots);
  std::vector<std::pair<void*, uint32_t>> objs;  // object, class
  for (uint32_t cls = 0; cls < kNumSizeClasses; cls++) {
    const size_t size = kSizeClasses[cls] - kObjHeader;
    for (int i = 0; i < 40; i++) {
      void* p = a.alloc_host(g.slot(), size);
      ASSERT_NE(p, nullptr);
      objs.emplace_back(p, cls);
    }
  }
  for (int pass = 0; pass < 2; pass++) {
    for (auto [p, cls] : objs) {
      const auto base = reinterpret_cast<uintptr_t>(p);
      const size_t usable = kSizeClasses[cls] - kObjHeader;
      // Second pass: the page cache entry lost to another page; the tree
      // answers and the entry comes back.
      if (pass == 1) MemAllocTestPeer::evict_page_cache(a, base);
      for (uintptr_t addr : {base, base + usable / 2, base + usable - 1}) {
        uintptr_t obj = 0;
        size_t got = 0;
        uint32_t c = 99;
        ASSERT_TRUE(a.find_object(addr, &obj, &got, &c)) << addr;
        EXPECT_EQ(obj, base);
        EXPECT_EQ(got, usable);
        EXPECT_EQ(c, cls);
      }
      EXPECT_EQ(MemAllocTestPeer::page_cache_entry(a, base) >> 16, base >> 12);
      uintptr_t obj;
      size_t got;
      EXPECT_FALSE(a.find_object(base - kObjHeader, &obj, &got)) << "header of " << base;
    }
  }
  uint64_t local = 0;
  uintptr_t obj;
  size_t got;
  EXPECT_FALSE(a.find_object(reinterpret_cast<uintptr_t>(&local), &obj, &got));
  EXPECT_FALSE(a.find_object(0x10, &obj, &got));
  EXPECT_FALSE(a.find_object(~uintptr_t{0} - 4096, &obj, &got));
  for (auto [p, cls] : objs) a.free(g.slot(), p);
}

// for_each_object visits exactly the allocated objects, each once with its
// class, whatever list the free ones are on (slot list, rcu list, depot),
// lets the visitor free what it visits, and stops when told.
TEST(ObjCache, ForEachObjectVisitsAllocatedObjectsOnce) {
  Env e(2);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.index_objects = true;
  ASSERT_TRUE(a.init(o).ok());
  SlotGuard g(e.slots);
  auto visit = [&] {
    std::map<void*, uint32_t> seen;
    a.for_each_object([&](void* p, uint32_t cls) {
      EXPECT_TRUE(seen.emplace(p, cls).second) << p << " visited twice";
      return true;
    });
    return seen;
  };
  EXPECT_TRUE(visit().empty());  // the prefill is all free
  std::map<void*, uint32_t> live;
  for (uint32_t cls : {0u, 3u, 7u, 10u}) {
    // More than a slab of the 16-byte class (256 objects).
    const int n = cls == 0 ? 300 : 20;
    for (int i = 0; i < n; i++) {
      void* p = a.alloc_host(g.slot(), kSizeClasses[cls] - kObjHeader);
      ASSERT_NE(p, nullptr);
      live.emplace(p, cls);
    }
  }
  // Some freed for reuse, some through rcu: neither is allocated.
  int i = 0;
  for (auto it = live.begin(); it != live.end(); i++) {
    if (i % 3 == 0) {
      i % 2 ? a.free(g.slot(), it->first) : a.free_rcu(g.slot(), it->first);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
  EXPECT_EQ(visit(), live);
  {
    // As from a signal handler that interrupted the worker carving a slab:
    // the walk takes no lock (this one is not recursive: it would hang).
    std::lock_guard<std::mutex> held(MemAllocTestPeer::lock(a));
    EXPECT_EQ(visit(), live);
  }
  int calls = 0;
  a.for_each_object([&](void*, uint32_t) { return ++calls < 5; });
  EXPECT_EQ(calls, 5);
  // The visitor frees what it visits (bpf_obj.cc's sweep does).
  a.for_each_object([&](void* p, uint32_t cls) {
    a.free_class(g.slot(), cls, p);
    return true;
  });
  EXPECT_TRUE(visit().empty());
  a.flush();
  EXPECT_EQ(a.stats().in_use, 0u);

  MemAlloc pc(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions po;
  po.size = 24;
  po.percpu = true;
  po.index_objects = true;
  ASSERT_TRUE(pc.init(po).ok());
  std::map<void*, uint32_t> pc_live;
  for (int k = 0; k < 6; k++) {
    void* p = pc.alloc_host(g.slot(), 0);
    ASSERT_NE(p, nullptr);
    pc_live.emplace(p, 0);
  }
  std::map<void*, uint32_t> pc_seen;
  pc.for_each_object([&](void* p, uint32_t cls) {
    pc_seen.emplace(p, cls);
    return true;
  });
  EXPECT_EQ(pc_seen, pc_live);
  for (auto [p, cls] : pc_live) pc.free(g.slot(), p);
}

// The worker hears from a slot only when its list crosses a watermark: a
// steady run of alloc + free pairs never asks it for anything. (`kicked` is
// set only by the holder asking; the worker clears it when it serves.)
TEST(ObjCache, PairsBetweenWatermarksLeaveTheWorkerAlone) {
  Env e(1);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.size = 16;
  ASSERT_TRUE(a.init(o).ok());  // prefill 4: below low (32)
  {
    SlotGuard g(e.slots);
    void* p = a.alloc(g.slot(), 16);  // crossing: asks for a refill
    ASSERT_NE(p, nullptr);
    a.free(g.slot(), p);
  }
  a.flush();  // the refill batch waits in `incoming`
  ASSERT_FALSE(MemAllocTestPeer::kicked(a, 0, 0));
  {
    SlotGuard g(e.slots);
    for (int i = 0; i < 100000; i++) {
      void* p = a.alloc(g.slot(), 16);
      ASSERT_NE(p, nullptr);
      a.free(g.slot(), p);
      ASSERT_FALSE(MemAllocTestPeer::kicked(a, 0, 0)) << "pair " << i << " woke the worker";
    }
    // Above high (96) the slot asks for a trim.
    std::vector<void*> objs;
    for (int i = 0; i < 120; i++) objs.push_back(a.alloc_host(g.slot(), 16));
    for (void* p : objs) ASSERT_NE(p, nullptr);
    for (void* p : objs) a.free(g.slot(), p);
  }
  a.flush();
  EXPECT_LE(MemAllocTestPeer::free_cnt(a, 0, 0), 96u);
  MemAllocStats st = a.stats();
  EXPECT_EQ(st.in_use, 0u);
  EXPECT_EQ(st.cached + st.depot, st.carved);
}

struct Account {
  std::atomic<uint64_t> used{0};
  uint64_t limit = 0;
};
bool charge_fn(void* owner, uint64_t bytes) {
  auto* acc = static_cast<Account*>(owner);
  if (acc->limit && acc->used.load() + bytes > acc->limit) return false;
  acc->used += bytes;
  return true;
}
void uncharge_fn(void* owner, uint64_t bytes) {
  static_cast<Account*>(owner)->used -= bytes;
}

TEST(ObjCache, ChargesOwnerAndStopsAtLimit) {
  Env e(1);
  Account acc;
  acc.limit = 64 * 1024;
  {
    MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
    MemAllocOptions o;
    o.size = 1000;  // unit 1008, 16 per 16 KiB slab (order 2)
    o.charge = {&acc, charge_fn, uncharge_fn};
    ASSERT_TRUE(a.init(o).ok());
    EXPECT_EQ(acc.used.load(), 16384u);  // the prefill's slab
    SlotGuard g(e.slots);
    std::vector<void*> objs;
    while (void* p = a.alloc_host(g.slot(), 1000)) objs.push_back(p);
    // 4 slabs of 16 fit the limit; one object is the sleepable slot's prefill.
    EXPECT_EQ(objs.size(), 63u);
    EXPECT_EQ(acc.used.load(), 65536u);
    EXPECT_EQ(a.stats().bytes, 65536u);
    for (void* p : objs) a.free(g.slot(), p);
  }
  EXPECT_EQ(acc.used.load(), 0u);  // everything uncharged with the allocator
}

TEST(ObjCache, InitErrors) {
  Env e(1);
  MemAlloc a(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions o;
  o.percpu = true;
  EXPECT_EQ(a.init(o).error().code, EINVAL);
  MemAlloc b(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions big;
  big.size = 4u << 20;
  EXPECT_EQ(b.init(big).error().code, E2BIG);
  Account acc;
  acc.limit = 100;
  MemAlloc c(e.slots, e.rcu, e.worker, e.pages);
  MemAllocOptions lim;
  lim.charge = {&acc, charge_fn, uncharge_fn};
  EXPECT_EQ(c.init(lim).error().code, ENOMEM);
}

}  // namespace
}  // namespace userbpf::mem
