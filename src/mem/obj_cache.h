// Object caches: the kernel's bpf_mem_alloc in user space. Programs allocate
// and free small objects from any context without ever blocking.
//
// Glossary:
//   size class  one of kSizeClasses (16 ... 4096 bytes), header included
//   unit        the bytes one object occupies: header + usable size
//   header      8 bytes before the pointer handed out: the free-list link while
//               the object is free, its SizeClass while allocated
//   SlotCache   the free list of one (slot, size class): owned by whoever
//               holds the slot (cpu_slots.h), so its fast path needs no atomics
//   depot       per class, objects the worker keeps between slots (trimmed
//               from a slot, or back from an rcu grace period)
//   slab        a block of pages (PagePool) carved into objects of one unit
//
// Invariants, per SizeClass (exact when no slot is held and the worker is idle):
//   carved == in_use + sum over slots (free_cnt + rcu_cnt + extra_cnt
//             + incoming_cnt + rcu_out_cnt) + depot_cnt + rcu_waiting
//   every byte of every slab is charged to the owner (MemCharge) until the
//   MemAlloc is destroyed; objects return to slabs only then
//   an object freed with free_rcu is handed out again only after a grace
//   period (RcuFlavor given at init) that started after the free
//
// Watermarks (kernel values): unit <= 256: low 32, high 96; 512: 16/48;
// 1024: 8/24; 2048: 4/12; larger: 2/6; batch = max((high - low) / 4 * 3, 1);
// per-CPU objects: 1/3/1. Below low the slot asks the worker for a refill of
// `batch` objects; above high the worker trims it to (low + high) / 2. Both
// happen on the background worker (the irq_work analogue), never inline in a
// program. Refills and rcu frees pass through lock-free hand-over lists
// (`incoming`, `rcu_out`), so a slot that is busy all the time is still
// served; trimming and side lists need the slot itself, which the worker
// claims with try_enter_slot when it is free.
//
// Contexts: alloc/free/free_rcu (program, signal handler, host): the caller
// holds `slot`; never block, never call malloc. Re-entry on the same
// SlotCache (only possible if code reuses an outer holder's slot) makes alloc
// return nullptr and frees go to a lock-free side list. alloc_host: host
// context only (may refill inline and take the depot mutex). init, stats,
// destructor: host.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "base/result.h"
#include "mem/bg_worker.h"
#include "mem/cpu_slots.h"
#include "mem/page_pool.h"
#include "mem/rcu.h"

namespace userbpf::mem {

inline constexpr uint32_t kNumSizeClasses = 11;
inline constexpr uint32_t kSizeClasses[kNumSizeClasses] = {16,  32,  64,   96,   128, 192,
                                                           256, 512, 1024, 2048, 4096};
inline constexpr size_t kObjHeader = 8;

// Index of the smallest class whose usable size (class - 8) holds size, or
// -1 for size 0 or above 4088.
int size_class_for(size_t size);

struct Watermarks {
  uint32_t low, high, batch;
};
Watermarks watermarks_for(uint32_t unit_size, bool percpu);

// Memory accounting: every slab is charged to its owner (a map) before use.
struct MemCharge {
  void* owner = nullptr;
  bool (*charge)(void* owner, uint64_t bytes) = nullptr;  // false: over the owner's limit
  void (*uncharge)(void* owner, uint64_t bytes) = nullptr;
};

struct MemAllocOptions {
  // 0: the 11 size classes (alloc picks one by size); else one fixed unit of
  // this usable size (bpf_mem_alloc_init with a size).
  uint32_t size = 0;
  // Per-CPU objects: `size` bytes (rounded up to 8) per normal slot.
  bool percpu = false;
  // Grace period free_rcu waits for: kBoth when sleepable programs can also
  // reach the objects.
  RcuFlavor rcu_flavor = RcuFlavor::kNormal;
  // Objects each slot cache starts with (-1: the kernel's prefill, 4 for
  // units <= 256, else 1).
  int prefill = -1;
  MemCharge charge;
  // Keep an index from page to slab so find_object() can answer for any
  // address (bpf_obj_new objects, whose pointers programs hand back).
  bool index_objects = false;
};

struct MemAllocStats {
  uint64_t carved = 0;       // objects carved from slabs
  uint64_t in_use = 0;       // handed out and not freed
  uint64_t cached = 0;       // on slot free lists and side lists
  uint64_t depot = 0;        // held by the worker between slots
  uint64_t rcu_waiting = 0;  // freed with free_rcu, grace period not over
  uint64_t bytes = 0;        // slab bytes charged
  uint64_t alloc_fail = 0;   // allocs that returned nullptr
};

class MemAlloc {
 public:
  MemAlloc(SlotTable& slots, RcuDomain& rcu, BackgroundWorker& worker, PagePool& pages);
  ~MemAlloc();
  MemAlloc(const MemAlloc&) = delete;
  MemAlloc& operator=(const MemAlloc&) = delete;

  // EINVAL for a bad size, E2BIG for units past the page pool's largest
  // block, ENOMEM if the prefill cannot be charged or mapped.
  Status init(const MemAllocOptions& opts);

  // bpf_mem_alloc: an object with at least size usable bytes (8-aligned), or
  // nullptr (empty cache, re-entry, size too big). For fixed-size and per-CPU
  // allocators size is ignored. The caller holds slot.
  void* alloc(int slot, size_t size);
  // bpf_mem_free: immediately reusable on slot.
  void free(int slot, void* p);
  // bpf_mem_free_rcu: reusable after a grace period.
  void free_rcu(int slot, void* p);
  // Host context: alloc that refills slot's cache inline when it is empty.
  void* alloc_host(int slot, size_t size);

  // Per-CPU objects: copy of cpu (a normal slot index) of p.
  void* per_cpu_ptr(void* p, uint32_t cpu) const {
    return static_cast<char*>(p) + size_t{cpu} * percpu_stride_;
  }
  // Usable bytes of an object from alloc (per copy for per-CPU objects).
  size_t usable_size(const void* p) const;

  // With index_objects: whether addr lies inside one of this allocator's
  // slabs, in an object's usable bytes; *obj = that object's pointer (as
  // alloc returned it, allocated or not), *usable = its usable bytes (all
  // copies for per-CPU objects). Reads only the index, never the object, so
  // any address is safe to ask about. Any context, lock-free.
  bool find_object(uintptr_t addr, uintptr_t* obj, size_t* usable) const;
  // Geometry of a fixed-size allocator (after init): objects of unit_bytes
  // (header included) packed from the start of slabs of slab_bytes, which
  // are blocks of the page pool. Lets an owner with a pool of its own tell
  // whether an address lies inside one of its objects (hash map access_ok).
  uint32_t unit_bytes() const { return classes_[0].unit; }
  uint64_t slab_bytes() const { return PagePool::kPageSize << classes_[0].slab_order; }
  uint32_t objs_per_slab() const { return classes_[0].objs_per_slab; }

  // Host: waits until the worker has served every request made so far.
  void flush();
  MemAllocStats stats();

 private:
  friend struct MemAllocTestPeer;
  struct SizeClass {
    uint32_t unit = 0;  // bytes per object, header included
    uint32_t slab_order = 0;
    uint32_t objs_per_slab = 0;
    Watermarks wm{};
    uint32_t idx = 0;
    // Worker/host state, under mu_.
    void* depot = nullptr;
    uint64_t depot_cnt = 0;
    uint64_t carved = 0;
  };
  struct ObjHdr {
    union {
      ObjHdr* next;
      SizeClass* cls;
    };
  };
  struct alignas(64) SlotCache {
    ObjHdr* free_head = nullptr;        // holder only
    std::atomic<uint32_t> free_cnt{0};  // holder writes, worker reads
    std::atomic<uint8_t> active{0};     // re-entry guard
    std::atomic<uint8_t> kicked{0};     // asked the worker for a pass
    ObjHdr* rcu_head = nullptr;         // holder only: freed with free_rcu
    ObjHdr* rcu_tail = nullptr;
    std::atomic<uint32_t> rcu_cnt{0};
    std::atomic<ObjHdr*> extra{nullptr};      // frees during re-entry (lock-free)
    std::atomic<ObjHdr*> extra_rcu{nullptr};  // free_rcu during re-entry
    std::atomic<uint32_t> extra_cnt{0};
    // A refill batch the worker prepared without the slot (at most one; its
    // length is in the first object's first usable word). The holder takes
    // it when its list runs dry.
    std::atomic<ObjHdr*> incoming{nullptr};
    std::atomic<uint32_t> incoming_cnt{0};
    // Chains of `batch` rcu-freed objects the holder handed to the worker
    // (a lock-free stack of chains: one CAS per chain).
    std::atomic<ObjHdr*> rcu_out{nullptr};
    std::atomic<uint32_t> rcu_out_cnt{0};
    uint16_t cls = 0;
    Watermarks wm{};
  };
  struct RcuBatch {
    uint64_t cookie;
    uint32_t cls;
    uint32_t cnt;
    ObjHdr* head;
  };

  SlotCache& cache(int slot, uint32_t cls) {
    return caches_[static_cast<size_t>(slot) * nclasses_ + cls];
  }
  void* unit_alloc(SlotCache& c);
  void unit_free(SlotCache& c, ObjHdr* h);
  void unit_free_rcu(SlotCache& c, ObjHdr* h);
  void kick(SlotCache& c) {
    if (c.kicked.load(std::memory_order_relaxed)) return;
    c.kicked.store(1, std::memory_order_relaxed);
    worker_.kick();
  }
  SizeClass* class_of(void* p) const;
  static void push_lockfree(std::atomic<ObjHdr*>& list, ObjHdr* h);

  // Under mu_ (worker or host).
  ObjHdr* take_objects(SizeClass& sc, uint32_t n, uint32_t* got);
  bool new_slab(SizeClass& sc);
  void to_depot(SizeClass& sc, ObjHdr* head, uint32_t cnt);
  void drain_side_lists(SlotCache& c);
  bool serve_slot(int slot, uint64_t* rcu_cookie);
  static uint64_t worker_task(void* self);
  uint64_t background();

  SlotTable& slots_;
  RcuDomain& rcu_;
  BackgroundWorker& worker_;
  PagePool& pages_;
  MemAllocOptions opts_;
  bool inited_ = false;
  bool fixed_ = false;
  uint32_t nclasses_ = 0;
  size_t percpu_stride_ = 0;
  SizeClass classes_[kNumSizeClasses];
  std::unique_ptr<SlotCache[]> caches_;
  std::atomic<uint64_t> alloc_fail_{0};

  std::mutex mu_;  // depot, slabs, rcu batches (worker and host)
  struct Slab {
    void* p;
    unsigned order;
  };
  std::vector<Slab> slabs_;
  std::vector<RcuBatch> rcu_batches_;
  uint64_t rcu_waiting_ = 0;
  uint64_t bytes_ = 0;

  // Page -> slab index (index_objects): a 3-level radix tree over the page
  // number (bits 46..12: 11, 12 and 12 bits per level). Leaves hold slab
  // base | class index + 1 (0: no slab). Nodes are added under mu_ and
  // published with release stores; never removed before the destructor.
  static constexpr unsigned kIndexBits[3] = {11, 12, 12};
  struct IndexNode {
    std::atomic<uint64_t> e[4096];
  };
  bool index_slab(void* base, uint64_t bytes, uint32_t cls);
  void index_clear(uint64_t page);
  IndexNode* index_root_ = nullptr;
  // Per class: unit reciprocal for find_object (off * magic >> 42 == off /
  // unit for off < 2^21, the largest slab).
  uint64_t unit_magic_[kNumSizeClasses] = {};
  std::vector<IndexNode*> index_nodes_;
};

}  // namespace userbpf::mem
