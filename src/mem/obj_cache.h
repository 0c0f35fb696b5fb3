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
//   page cache  (index_objects) a direct-mapped cache of the page -> slab
//               index that find_object reads first
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
// Fast paths: alloc and free on the holder's list are inline below and make
// no call (try_alloc_class / try_free_class are them alone); the worker is
// woken only from the out-of-line paths, when a list crosses a watermark and
// `kicked` says the worker has not been asked yet.
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

#include "base/assert.h"
#include "base/result.h"
#include "mem/bg_worker.h"
#include "mem/class_lists.h"
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
inline int size_class_for(size_t size) {
  // (need - 1) / 8 -> class for need <= 192, like the kernel's size_index.
  static constexpr uint8_t kSmall[24] = {0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                         4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5};
  if (size == 0) [[unlikely]]
    return -1;
  const size_t need = size + kObjHeader;
  if (need <= 192) [[likely]]
    return kSmall[(need - 1) / 8];
  for (uint32_t i = 6; i < kNumSizeClasses; i++)
    if (need <= kSizeClasses[i]) return static_cast<int>(i);
  return -1;
}

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
  [[gnu::always_inline]] void* alloc(int slot, size_t size) {
    uint32_t cls = 0;
    if (!fixed_) {
      const int i = size_class_for(size);
      if (i < 0) [[unlikely]]
        return nullptr;
      cls = static_cast<uint32_t>(i);
    }
    return unit_alloc(cache(slot, cls));
  }
  // alloc of a class the caller resolved once (size_class_for; 0 for
  // fixed-size and per-CPU allocators), e.g. at program load.
  [[gnu::always_inline]] void* alloc_class(int slot, uint32_t cls) {
    return unit_alloc(cache(slot, cls));
  }
  // bpf_mem_free: immediately reusable on slot.
  [[gnu::always_inline]] void free(int slot, void* p) {
    if (!p) return;
    unit_free(cache(slot, class_of(p)->idx), static_cast<ObjHdr*>(p) - 1);
  }
  // free of an object of class cls (find_object told the caller), without
  // reading its header.
  [[gnu::always_inline]] void free_class(int slot, uint32_t cls, void* p) {
    unit_free(cache(slot, cls), static_cast<ObjHdr*>(p) - 1);
  }
  // The fast paths alone, for callers that keep calls off their own fast
  // path (bpf_obj_new / bpf_obj_drop): nullptr / false where alloc_class /
  // free_class have more to do (the list busy or empty, or a watermark
  // crossed that the worker must hear about), and nothing happened then.
  [[gnu::always_inline]] void* try_alloc_class(int slot, uint32_t cls) {
    return unit_try_alloc(cache(slot, cls));
  }
  [[gnu::always_inline]] bool try_free_class(int slot, uint32_t cls, void* p) {
    return unit_try_free(cache(slot, cls), static_cast<ObjHdr*>(p) - 1);
  }
  // The same fast paths for a caller that resolved the class ahead
  // (class_lists.h). Valid for the allocator's life, after init.
  ClassLists class_lists(uint32_t cls) const {
    return ClassLists{reinterpret_cast<uintptr_t>(&caches_[cls]), nclasses_ * sizeof(SlotCache),
                      class_word(cls)};
  }
  [[gnu::always_inline]] static void* try_alloc_in(const ClassLists& l, int slot) {
    return unit_pop(list_in(l, slot), reinterpret_cast<SizeClass*>(l.class_word));
  }
  [[gnu::always_inline]] static bool try_free_in(const ClassLists& l, int slot, void* p) {
    return unit_try_free(list_in(l, slot), static_cast<ObjHdr*>(p) - 1);
  }
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
  // copies for per-CPU objects), *cls (if asked) its class. Reads only the
  // index, never the object, so any address is safe to ask about. Any
  // context, lock-free.
  inline bool find_object(uintptr_t addr, uintptr_t* obj, size_t* usable,
                          uint32_t* cls = nullptr) const;
  // Geometry of a fixed-size allocator (after init): objects of unit_bytes
  // (header included) packed from the start of slabs of slab_bytes, which
  // are blocks of the page pool. Lets an owner with a pool of its own tell
  // whether an address lies inside one of its objects (hash map access_ok).
  uint32_t unit_bytes() const { return classes_[0].unit; }

  // With index_objects: calls fn(obj, cls) for every allocated object of
  // this allocator (obj as alloc returned it, cls its class) until fn
  // returns false. Walks every slab, so it costs a load or two per object
  // carved: for rare sweeps (bpf_obj.cc frees the objects of a run that
  // stopped holding some), never for a fast path. Lock-free and
  // malloc-free: any context, a signal handler included. Every object the
  // caller obtained (or learned of through an acquire) before the call is
  // visited; one carved or allocated meanwhile by another slot may be
  // missed, and one another slot frees meanwhile may still be visited. fn
  // may read the object's usable words (relaxed atomics: other slots may be
  // writing them) and may free objects, of its own slot only.
  template <typename Fn>
  void for_each_object(Fn&& fn) const;

  // For engines that inline the program-side fast paths (the JIT's
  // bpf_obj_new / bpf_obj_drop): slot s's list of class c is the cache at
  // caches + s * slot_stride + c * cache_stride, whose fields lie at the
  // offsets below; an allocated object's header holds class_word(c). Code
  // that inlines them must do exactly what unit_try_alloc / unit_try_free
  // do (the `active` bracket first, the watermark tests it cannot decide
  // left to the out-of-line paths). After init; valid for the allocator's
  // life.
  struct InlineLayout {
    uintptr_t caches;
    uint32_t slot_stride, cache_stride;
    int32_t head, cnt, active, kicked, incoming, low, high;
  };
  InlineLayout inline_layout() const {
    return InlineLayout{reinterpret_cast<uintptr_t>(caches_.get()),
                        static_cast<uint32_t>(nclasses_ * sizeof(SlotCache)),
                        static_cast<uint32_t>(sizeof(SlotCache)),
                        static_cast<int32_t>(offsetof(SlotCache, free_head)),
                        static_cast<int32_t>(offsetof(SlotCache, free_cnt)),
                        static_cast<int32_t>(offsetof(SlotCache, active)),
                        static_cast<int32_t>(offsetof(SlotCache, kicked)),
                        static_cast<int32_t>(offsetof(SlotCache, incoming)),
                        static_cast<int32_t>(offsetof(SlotCache, wm) + offsetof(Watermarks, low)),
                        static_cast<int32_t>(offsetof(SlotCache, wm) + offsetof(Watermarks, high))};
  }
  uintptr_t class_word(uint32_t cls) const { return reinterpret_cast<uintptr_t>(&classes_[cls]); }
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
  // The first cache line holds everything alloc and free touch: a pair
  // costs one line per (slot, class).
  struct alignas(64) SlotCache {
    ObjHdr* free_head = nullptr;        // holder only
    std::atomic<uint32_t> free_cnt{0};  // holder writes, worker reads
    std::atomic<uint8_t> active{0};     // re-entry guard
    std::atomic<uint8_t> kicked{0};     // asked the worker for a pass
    uint16_t cls = 0;
    Watermarks wm{};
    // A refill batch the worker prepared without the slot (at most one; its
    // length is in the first object's first usable word). The holder takes
    // it when its list runs dry.
    std::atomic<ObjHdr*> incoming{nullptr};
    std::atomic<uint32_t> incoming_cnt{0};
    std::atomic<uint32_t> extra_cnt{0};
    ObjHdr* rcu_head = nullptr;  // holder only: freed with free_rcu
    ObjHdr* rcu_tail = nullptr;
    std::atomic<uint32_t> rcu_cnt{0};
    std::atomic<ObjHdr*> extra{nullptr};      // frees during re-entry (lock-free)
    std::atomic<ObjHdr*> extra_rcu{nullptr};  // free_rcu during re-entry
    // Chains of `batch` rcu-freed objects the holder handed to the worker
    // (a lock-free stack of chains: one CAS per chain).
    std::atomic<ObjHdr*> rcu_out{nullptr};
    std::atomic<uint32_t> rcu_out_cnt{0};
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
  static SlotCache& list_in(const ClassLists& l, int slot) {
    return *reinterpret_cast<SlotCache*>(l.base + static_cast<uintptr_t>(slot) * l.stride);
  }
  // Fast paths (inline below): the holder's list, no call; anything else (an
  // empty list, re-entry, a watermark to report) goes out of line.
  [[gnu::always_inline]] void* unit_try_alloc(SlotCache& c) {
    return unit_pop(c, &classes_[c.cls]);
  }
  // unit_try_alloc of c, whose class is sc.
  [[gnu::always_inline]] static inline void* unit_pop(SlotCache& c, SizeClass* sc);
  [[gnu::always_inline]] static inline bool unit_try_free(SlotCache& c, ObjHdr* h);
  [[gnu::always_inline]] void* unit_alloc(SlotCache& c) {
    if (void* p = unit_try_alloc(c)) [[likely]]
      return p;
    return unit_alloc_slow(c);
  }
  [[gnu::always_inline]] void unit_free(SlotCache& c, ObjHdr* h) {
    if (!unit_try_free(c, h)) [[unlikely]]
      unit_free_slow(c, h);
  }
  void* unit_alloc_slow(SlotCache& c);
  void unit_free_slow(SlotCache& c, ObjHdr* h);
  void unit_free_rcu(SlotCache& c, ObjHdr* h);
  void kick(SlotCache& c) {
    if (c.kicked.load(std::memory_order_relaxed)) return;
    c.kicked.store(1, std::memory_order_relaxed);
    worker_.kick();
  }
  SizeClass* class_of(void* p) const {
    SizeClass* sc = (static_cast<ObjHdr*>(p) - 1)->cls;
    // A free object's header is a list link, never one of our classes: this
    // catches double frees and foreign pointers.
    USERBPF_ASSERT(sc >= classes_ && sc < classes_ + nclasses_);
    return sc;
  }
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
  // With index_objects, the slabs again for for_each_object: a list that
  // new_slab prepends to under mu_ (release) and readers walk without it.
  // Records are freed by the destructor only.
  struct SlabRec {
    uintptr_t base;
    uint32_t cls;
    const SlabRec* next;
  };
  std::atomic<const SlabRec*> slab_recs_{nullptr};
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
  IndexNode* index_leaf(uint64_t pg, bool create);
  bool find_object_slow(uintptr_t addr, uintptr_t* obj, size_t* usable, uint32_t* cls) const;
  // The object of class cls at addr in the slab at base, if addr lies in its
  // usable bytes.
  bool object_in_slab(uintptr_t base, uint32_t cls, uintptr_t addr, uintptr_t* obj, size_t* usable,
                      uint32_t* cls_out) const {
    const SizeClass& sc = classes_[cls];
    const uint64_t off = addr - base;
    const uint64_t k = (off * unit_magic_[cls]) >> 42;
    if (k >= sc.objs_per_slab || off - k * sc.unit < kObjHeader) return false;
    *obj = base + k * sc.unit + kObjHeader;
    *usable = sc.unit - kObjHeader;
    if (cls_out) *cls_out = cls;
    return true;
  }
  IndexNode* index_root_ = nullptr;
  // Per class: unit reciprocal for find_object (off * magic >> 42 == off /
  // unit for off < 2^21, the largest slab).
  uint64_t unit_magic_[kNumSizeClasses] = {};
  std::vector<IndexNode*> index_nodes_;
  // In front of the tree, a direct-mapped cache of it: entry pg % size for
  // page pg is pg << 16 | (page's index in its slab) << 4 | (class + 1), or
  // 0. Entries only ever hold true facts (slabs stay indexed until the
  // destructor), so any context may overwrite one with another true fact
  // (relaxed; one 64-bit word, never torn) and a reader that finds its page
  // number there needs nothing else: one load instead of three.
  static constexpr uint32_t kPageCacheSize = 4096;
  std::unique_ptr<std::atomic<uint64_t>[]> page_cache_;
  static_assert(PagePool::kMaxOrder <= 12 && kNumSizeClasses < 16, "page cache entry fields");
  static uint64_t page_cache_entry(uint64_t pg, uint64_t first_pg, uint32_t cls) {
    return pg << 16 | (pg - first_pg) << 4 | (cls + 1);
  }
};

// ---- Program-side fast paths (the slot's holder only) ----
//
// `active` brackets each list update: a handler that interrupts one and
// reaches the same list (it would have to reuse our slot) sees it set and
// keeps off (alloc fails, free goes to the side list). Nothing inside the
// bracket can fault or call out.

inline void* MemAlloc::unit_pop(SlotCache& c, SizeClass* sc) {
  if (c.active.load(std::memory_order_relaxed)) [[unlikely]]
    return nullptr;
  c.active.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  ObjHdr* h = c.free_head;
  const uint32_t cnt = c.free_cnt.load(std::memory_order_relaxed);
  // Taking one leaves the list below low with no batch waiting and the
  // worker not yet asked: the slow path asks it (once per crossing).
  if (!h || cnt <= c.wm.low) [[unlikely]] {
    if (!h || (!c.incoming.load(std::memory_order_relaxed) &&
               !c.kicked.load(std::memory_order_relaxed))) {
      std::atomic_signal_fence(std::memory_order_seq_cst);
      c.active.store(0, std::memory_order_relaxed);
      return nullptr;
    }
  }
  c.free_head = h->next;
  c.free_cnt.store(cnt - 1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.active.store(0, std::memory_order_relaxed);
  h->cls = sc;
  return h + 1;
}

inline bool MemAlloc::unit_try_free(SlotCache& c, ObjHdr* h) {
  const uint32_t cnt = c.free_cnt.load(std::memory_order_relaxed) + 1;
  // Busy, or above high with the worker not yet asked to trim: slow path.
  if (c.active.load(std::memory_order_relaxed) ||
      (cnt > c.wm.high && !c.kicked.load(std::memory_order_relaxed))) [[unlikely]]
    return false;
  c.active.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->next = c.free_head;
  c.free_head = h;
  c.free_cnt.store(cnt, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.active.store(0, std::memory_order_relaxed);
  return true;
}

// The header loads race with the plain stores of whoever moves a free
// object between lists (a slot's holder, the worker): a data race in the
// C++ model, on purpose, kept out of TSan's sight (which still sees
// atomics, hence volatile) as the kernel marks such reads READ_ONCE and
// data_race(). They are whole aligned words, and only compared with
// a class pointer, which no list store writes: a concurrent store can make
// the walk skip, or visit, an object that some other slot is allocating or
// freeing meanwhile (the contract allows both), never one whose state the
// caller knows (its header is no one else's to write).
template <typename Fn>
__attribute__((no_sanitize("thread"))) void MemAlloc::for_each_object(Fn&& fn) const {
  for (const SlabRec* r = slab_recs_.load(std::memory_order_acquire); r; r = r->next) {
    const SizeClass& sc = classes_[r->cls];
    const auto want = reinterpret_cast<uintptr_t>(&sc);
    for (uintptr_t h = r->base, end = h + uintptr_t{sc.objs_per_slab} * sc.unit; h < end;
         h += sc.unit) {
      // An allocated object's header holds its class; a free one's a list
      // link (never a class).
      if (*reinterpret_cast<const volatile uintptr_t*>(h) != want) continue;
      if (!fn(reinterpret_cast<void*>(h + kObjHeader), r->cls)) return;
    }
  }
}

inline bool MemAlloc::find_object(uintptr_t addr, uintptr_t* obj, size_t* usable,
                                  uint32_t* cls) const {
  const uint64_t pg = addr >> 12;
  if (page_cache_) [[likely]] {
    const uint64_t e = page_cache_[pg % kPageCacheSize].load(std::memory_order_acquire);
    if (e != 0 && (e >> 16) == pg) [[likely]]
      return object_in_slab((pg - ((e >> 4) & 0xfff)) << 12, static_cast<uint32_t>(e & 15) - 1,
                            addr, obj, usable, cls);
  }
  return find_object_slow(addr, obj, usable, cls);
}

}  // namespace userbpf::mem
