// Object caches (bpf_mem_alloc): the program-side fast paths and the
// background worker's refill, trim and rcu recycling.
#include "mem/obj_cache.h"

#include <algorithm>
#include <new>

#include "base/assert.h"

namespace userbpf::mem {

namespace {

constexpr uint64_t kRetryNs = 50'000;  // worker re-tries a busy slot after 50 us

uint32_t round_up8(uint64_t v) {
  return static_cast<uint32_t>((v + 7) & ~uint64_t{7});
}

}  // namespace

Watermarks watermarks_for(uint32_t unit_size, bool percpu) {
  uint32_t low, high;
  if (percpu) return {1, 3, 1};
  if (unit_size <= 256) {
    low = 32, high = 96;
  } else if (unit_size <= 512) {
    low = 16, high = 48;
  } else if (unit_size <= 1024) {
    low = 8, high = 24;
  } else if (unit_size <= 2048) {
    low = 4, high = 12;
  } else {
    low = 2, high = 6;
  }
  return {low, high, std::max((high - low) / 4 * 3, 1u)};
}

MemAlloc::MemAlloc(SlotTable& slots, RcuDomain& rcu, BackgroundWorker& worker, PagePool& pages)
    : slots_(slots), rcu_(rcu), worker_(worker), pages_(pages) {}

MemAlloc::~MemAlloc() {
  if (inited_) {
    worker_.remove_task(&MemAlloc::worker_task, this);
    // Objects freed with free_rcu may still be read by programs that saw them.
    (void)rcu_.synchronize_rcu(RcuFlavor::kBoth);
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (const Slab& s : slabs_) pages_.free_pages(s.p, s.order);
  if (opts_.charge.uncharge && bytes_) opts_.charge.uncharge(opts_.charge.owner, bytes_);
  for (IndexNode* n : index_nodes_) delete n;
  for (const SlabRec* r = slab_recs_.load(std::memory_order_relaxed); r;) {
    const SlabRec* next = r->next;
    delete r;
    r = next;
  }
}

Status MemAlloc::init(const MemAllocOptions& opts) {
  USERBPF_ASSERT(!inited_);
  opts_ = opts;
  fixed_ = opts.size != 0 || opts.percpu;
  nclasses_ = fixed_ ? 1 : kNumSizeClasses;
  uint64_t max_block = PagePool::kPageSize << PagePool::kMaxOrder;
  for (uint32_t i = 0; i < nclasses_; i++) {
    SizeClass& sc = classes_[i];
    sc.idx = i;
    if (opts.percpu) {
      if (opts.size == 0) return make_error(EINVAL, "per-CPU allocator needs a size");
      percpu_stride_ = round_up8(opts.size);
      sc.unit = static_cast<uint32_t>(std::min<uint64_t>(
          kObjHeader + uint64_t{percpu_stride_} * slots_.num_slots(), max_block + 1));
    } else if (fixed_) {
      sc.unit = static_cast<uint32_t>(kObjHeader + round_up8(opts.size));
    } else {
      sc.unit = kSizeClasses[i];
    }
    if (sc.unit > max_block)
      return make_error(E2BIG, "object of %u bytes is larger than a %llu-byte block", sc.unit,
                        static_cast<unsigned long long>(max_block));
    sc.wm = watermarks_for(sc.unit, opts.percpu);
    unit_magic_[i] = ((uint64_t{1} << 42) / sc.unit) + 1;
    uint64_t slab = std::max<uint64_t>(uint64_t{sc.unit} * 16, PagePool::kPageSize);
    sc.slab_order = PagePool::order_for(std::min(slab, max_block));
    sc.objs_per_slab = static_cast<uint32_t>((PagePool::kPageSize << sc.slab_order) / sc.unit);
  }
  if (opts.index_objects) {
    index_root_ = new (std::nothrow) IndexNode{};
    if (!index_root_) return make_error(ENOMEM, "cannot allocate the object index");
    index_nodes_.push_back(index_root_);
    page_cache_.reset(new (std::nothrow) std::atomic<uint64_t>[kPageCacheSize]());
    if (!page_cache_) return make_error(ENOMEM, "cannot allocate the object index");
  }
  caches_.reset(new SlotCache[size_t{slots_.total_slots()} * nclasses_]);
  for (uint32_t s = 0; s < slots_.total_slots(); s++) {
    for (uint32_t i = 0; i < nclasses_; i++) {
      SlotCache& c = cache(static_cast<int>(s), i);
      c.cls = static_cast<uint16_t>(i);
      c.wm = classes_[i].wm;
    }
  }
  // Prefill: no program can use the allocator yet, so the lists are ours.
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (uint32_t i = 0; i < nclasses_; i++) {
      SizeClass& sc = classes_[i];
      uint32_t want = opts.prefill >= 0 ? static_cast<uint32_t>(opts.prefill)
                                        : (sc.unit <= 256 && !opts.percpu ? 4 : 1);
      if (!want) continue;
      for (uint32_t s = 0; s < slots_.total_slots(); s++) {
        uint32_t got = 0;
        ObjHdr* head = take_objects(sc, want, &got);
        if (got < want) {
          to_depot(sc, head, got);
          return make_error(ENOMEM, "cannot prefill the %u-byte object cache", sc.unit);
        }
        SlotCache& c = cache(static_cast<int>(s), i);
        c.free_head = head;
        c.free_cnt.store(got, std::memory_order_relaxed);
      }
    }
  }
  inited_ = true;
  worker_.add_task(&MemAlloc::worker_task, this);
  return Status::Ok();
}

// ---- Program-side slow paths (the slot's holder only; fast paths in the header) ----

// unit_alloc past its fast path: the refill batch and the side lists when
// the list is empty, the worker asked for a refill below low, nullptr when
// busy (re-entry) or nothing is left.
void* MemAlloc::unit_alloc_slow(SlotCache& c) {
  if (c.active.load(std::memory_order_relaxed)) [[unlikely]] {
    alloc_fail_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  c.active.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  ObjHdr* h = c.free_head;
  uint32_t cnt = c.free_cnt.load(std::memory_order_relaxed);
  if (!h) [[unlikely]] {
    if (c.incoming.load(std::memory_order_relaxed)) {
      ObjHdr* b = c.incoming.exchange(nullptr, std::memory_order_acquire);
      uint32_t n = static_cast<uint32_t>(*reinterpret_cast<uint64_t*>(b + 1));
      c.incoming_cnt.fetch_sub(n, std::memory_order_relaxed);
      c.free_head = b;
      c.free_cnt.store(n, std::memory_order_relaxed);
    }
    if (c.extra_cnt.load(std::memory_order_relaxed)) drain_side_lists(c);
    h = c.free_head;
    cnt = c.free_cnt.load(std::memory_order_relaxed);
  }
  if (h) [[likely]] {
    c.free_head = h->next;
    c.free_cnt.store(--cnt, std::memory_order_relaxed);
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.active.store(0, std::memory_order_relaxed);
  // Below low with no batch waiting: ask the worker for one.
  if (cnt < c.wm.low && !c.incoming.load(std::memory_order_relaxed)) kick(c);
  if (!h) [[unlikely]] {
    alloc_fail_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  h->cls = &classes_[c.cls];
  return h + 1;
}

void MemAlloc::push_lockfree(std::atomic<ObjHdr*>& list, ObjHdr* h) {
  ObjHdr* old = list.load(std::memory_order_relaxed);
  do {
    h->next = old;
  } while (
      !list.compare_exchange_weak(old, h, std::memory_order_release, std::memory_order_relaxed));
}

// unit_free past its fast path: a free while the list is busy (re-entry)
// goes to the lock-free side list; above high the worker is asked to trim.
void MemAlloc::unit_free_slow(SlotCache& c, ObjHdr* h) {
  if (c.active.load(std::memory_order_relaxed)) [[unlikely]] {
    c.extra_cnt.fetch_add(1, std::memory_order_relaxed);
    push_lockfree(c.extra, h);
    kick(c);
    return;
  }
  c.active.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->next = c.free_head;
  c.free_head = h;
  uint32_t cnt = c.free_cnt.load(std::memory_order_relaxed) + 1;
  c.free_cnt.store(cnt, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.active.store(0, std::memory_order_relaxed);
  if (cnt > c.wm.high) kick(c);
}

void MemAlloc::unit_free_rcu(SlotCache& c, ObjHdr* h) {
  if (c.active.load(std::memory_order_relaxed)) [[unlikely]] {
    c.extra_cnt.fetch_add(1, std::memory_order_relaxed);
    push_lockfree(c.extra_rcu, h);
    kick(c);
    return;
  }
  c.active.store(1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->next = nullptr;
  if (c.rcu_tail)
    c.rcu_tail->next = h;
  else
    c.rcu_head = h;
  c.rcu_tail = h;
  uint32_t n = c.rcu_cnt.load(std::memory_order_relaxed) + 1;
  if (n >= c.wm.batch) {
    // Hand the chain over: tail links to the stack's old top.
    ObjHdr* head = c.rcu_head;
    ObjHdr* tail = c.rcu_tail;
    c.rcu_out_cnt.fetch_add(n, std::memory_order_relaxed);
    ObjHdr* old = c.rcu_out.load(std::memory_order_relaxed);
    do {
      tail->next = old;
    } while (!c.rcu_out.compare_exchange_weak(old, head, std::memory_order_release,
                                              std::memory_order_relaxed));
    c.rcu_head = c.rcu_tail = nullptr;
    n = 0;
  }
  c.rcu_cnt.store(n, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  c.active.store(0, std::memory_order_relaxed);
  kick(c);
}

void MemAlloc::free_rcu(int slot, void* p) {
  if (!p) return;
  SizeClass* sc = class_of(p);
  unit_free_rcu(cache(slot, sc->idx), static_cast<ObjHdr*>(p) - 1);
}

size_t MemAlloc::usable_size(const void* p) const {
  SizeClass* sc = class_of(const_cast<void*>(p));
  return opts_.percpu ? percpu_stride_ : sc->unit - kObjHeader;
}

void* MemAlloc::alloc_host(int slot, size_t size) {
  if (void* p = alloc(slot, size)) return p;
  uint32_t cls = 0;
  if (!fixed_) {
    int i = size_class_for(size);
    if (i < 0) return nullptr;
    cls = static_cast<uint32_t>(i);
  }
  SlotCache& c = cache(slot, cls);
  if (c.active.load(std::memory_order_relaxed)) return nullptr;
  {
    // We hold the slot, so its list is ours (the worker cannot claim it).
    std::lock_guard<std::mutex> lk(mu_);
    drain_side_lists(c);
    uint32_t got = 0;
    ObjHdr* head = take_objects(classes_[cls], c.wm.batch, &got);
    if (head) {
      ObjHdr* tail = head;
      while (tail->next) tail = tail->next;
      tail->next = c.free_head;
      c.free_head = head;
      c.free_cnt.store(c.free_cnt.load(std::memory_order_relaxed) + got, std::memory_order_relaxed);
    }
  }
  return alloc(slot, size);
}

// find_object past the page cache: the tree, and the cache entry refreshed
// (a page whose entry another slab's page took).
bool MemAlloc::find_object_slow(uintptr_t addr, uintptr_t* obj, size_t* usable,
                                uint32_t* cls_out) const {
  const uint64_t pg = addr >> 12;
  if (!index_root_ || (pg >> 35) != 0) return false;
  uint64_t v = index_root_->e[pg >> 24].load(std::memory_order_acquire);
  if (!v) return false;
  v = reinterpret_cast<const IndexNode*>(v)->e[(pg >> 12) & 4095].load(std::memory_order_acquire);
  if (!v) return false;
  const uint64_t leaf =
      reinterpret_cast<const IndexNode*>(v)->e[pg & 4095].load(std::memory_order_acquire);
  if (!leaf) return false;
  const uintptr_t base = leaf & ~uint64_t{PagePool::kPageSize - 1};
  const uint32_t cls = static_cast<uint32_t>(leaf & (PagePool::kPageSize - 1)) - 1;
  page_cache_[pg % kPageCacheSize].store(page_cache_entry(pg, base >> 12, cls),
                                         std::memory_order_release);
  return object_in_slab(base, cls, addr, obj, usable, cls_out);
}

// ---- Worker side (mu_ held) ----

bool MemAlloc::new_slab(SizeClass& sc) {
  uint64_t bytes = PagePool::kPageSize << sc.slab_order;
  // for_each_object's record first: a slab, once indexed, stays.
  std::unique_ptr<SlabRec> rec;
  if (index_root_) {
    rec.reset(new (std::nothrow) SlabRec{});
    if (!rec) return false;
  }
  if (opts_.charge.charge && !opts_.charge.charge(opts_.charge.owner, bytes)) return false;
  void* p = pages_.alloc_pages_nolock(sc.slab_order);
  if (p && index_root_ && !index_slab(p, bytes, sc.idx)) {
    pages_.free_pages(p, sc.slab_order);
    p = nullptr;
  }
  if (!p) {
    if (opts_.charge.uncharge) opts_.charge.uncharge(opts_.charge.owner, bytes);
    return false;
  }
  slabs_.push_back({p, sc.slab_order});
  bytes_ += bytes;
  char* base = static_cast<char*>(p);
  ObjHdr* head = nullptr;
  for (uint32_t i = sc.objs_per_slab; i-- > 0;) {
    auto* h = reinterpret_cast<ObjHdr*>(base + size_t{i} * sc.unit);
    h->next = head;
    head = h;
  }
  sc.depot_cnt += sc.objs_per_slab;
  sc.carved += sc.objs_per_slab;
  // Splice in front of the depot.
  ObjHdr* last = reinterpret_cast<ObjHdr*>(base + size_t{sc.objs_per_slab - 1} * sc.unit);
  last->next = static_cast<ObjHdr*>(sc.depot);
  sc.depot = head;
  // Published once carved (for_each_object reads the headers), before any
  // of its objects can be handed out.
  if (rec) {
    rec->base = reinterpret_cast<uintptr_t>(p);
    rec->cls = sc.idx;
    rec->next = slab_recs_.load(std::memory_order_relaxed);
    slab_recs_.store(rec.release(), std::memory_order_release);
  }
  return true;
}

MemAlloc::ObjHdr* MemAlloc::take_objects(SizeClass& sc, uint32_t n, uint32_t* got) {
  ObjHdr* head = nullptr;
  *got = 0;
  while (*got < n) {
    if (!sc.depot && !new_slab(sc)) break;
    auto* h = static_cast<ObjHdr*>(sc.depot);
    sc.depot = h->next;
    sc.depot_cnt--;
    h->next = head;
    head = h;
    ++*got;
  }
  return head;
}

void MemAlloc::to_depot(SizeClass& sc, ObjHdr* head, uint32_t cnt) {
  while (head) {
    ObjHdr* next = head->next;
    head->next = static_cast<ObjHdr*>(sc.depot);
    sc.depot = head;
    head = next;
  }
  sc.depot_cnt += cnt;
}

// The slot's holder (program fast path with active set, or the worker or
// host holding the slot): side lists into the slot's own lists.
void MemAlloc::drain_side_lists(SlotCache& c) {
  uint32_t n = 0;
  for (ObjHdr* h = c.extra.exchange(nullptr, std::memory_order_acquire); h; n++) {
    ObjHdr* next = h->next;
    h->next = c.free_head;
    c.free_head = h;
    c.free_cnt.store(c.free_cnt.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    h = next;
  }
  for (ObjHdr* h = c.extra_rcu.exchange(nullptr, std::memory_order_acquire); h; n++) {
    ObjHdr* next = h->next;
    h->next = nullptr;
    if (c.rcu_tail)
      c.rcu_tail->next = h;
    else
      c.rcu_head = h;
    c.rcu_tail = h;
    c.rcu_cnt.store(c.rcu_cnt.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    h = next;
  }
  if (n) c.extra_cnt.fetch_sub(n, std::memory_order_relaxed);
}

// One slot. Without the slot: fill `incoming` below low, collect `rcu_out`.
// With the slot (claimed only if needed): side lists, trim above high, the
// holder's partial rcu list. False if the slot was busy and should be retried.
bool MemAlloc::serve_slot(int slot, uint64_t* rcu_cookie) {
  bool need_slot = false;
  for (uint32_t i = 0; i < nclasses_; i++) {
    SlotCache& c = cache(slot, i);
    if (!c.kicked.load(std::memory_order_relaxed)) continue;
    // Cleared first: a holder that needs us after this point kicks again.
    c.kicked.store(0, std::memory_order_seq_cst);
    SizeClass& sc = classes_[i];
    if (c.free_cnt.load(std::memory_order_relaxed) < c.wm.low &&
        !c.incoming.load(std::memory_order_acquire)) {
      uint32_t got = 0;
      ObjHdr* b = take_objects(sc, c.wm.batch, &got);
      if (b) {
        *reinterpret_cast<uint64_t*>(b + 1) = got;
        c.incoming_cnt.fetch_add(got, std::memory_order_relaxed);
        c.incoming.store(b, std::memory_order_release);
      }
    }
    if (ObjHdr* chain = c.rcu_out.exchange(nullptr, std::memory_order_acquire)) {
      uint32_t n = 0;
      for (ObjHdr* h = chain; h; h = h->next) n++;
      c.rcu_out_cnt.fetch_sub(n, std::memory_order_relaxed);
      // The frees happened before our exchange; a grace period started now
      // covers every reader that could have seen the objects.
      if (!*rcu_cookie) *rcu_cookie = rcu_.start_gp();
      rcu_batches_.push_back({*rcu_cookie, i, n, chain});
      rcu_waiting_ += n;
    }
    if (c.free_cnt.load(std::memory_order_relaxed) > c.wm.high ||
        c.extra_cnt.load(std::memory_order_relaxed) || c.rcu_cnt.load(std::memory_order_relaxed))
      need_slot = true;
  }
  if (!need_slot) return true;
  if (!slots_.try_enter_slot(static_cast<uint32_t>(slot))) {
    for (uint32_t i = 0; i < nclasses_; i++) cache(slot, i).kicked.store(1);
    return false;
  }
  ObjHdr* trim[kNumSizeClasses] = {};
  uint32_t trim_cnt[kNumSizeClasses] = {};
  ObjHdr* rcu[kNumSizeClasses] = {};
  uint32_t rcu_cnt[kNumSizeClasses] = {};
  for (uint32_t i = 0; i < nclasses_; i++) {
    SlotCache& c = cache(slot, i);
    drain_side_lists(c);
    uint32_t cnt = c.free_cnt.load(std::memory_order_relaxed);
    if (cnt > c.wm.high) {
      uint32_t keep = (c.wm.low + c.wm.high) / 2;
      while (cnt > keep) {
        ObjHdr* h = c.free_head;
        c.free_head = h->next;
        h->next = trim[i];
        trim[i] = h;
        trim_cnt[i]++;
        cnt--;
      }
      c.free_cnt.store(cnt, std::memory_order_relaxed);
    }
    rcu[i] = c.rcu_head;
    rcu_cnt[i] = c.rcu_cnt.load(std::memory_order_relaxed);
    c.rcu_head = c.rcu_tail = nullptr;
    c.rcu_cnt.store(0, std::memory_order_relaxed);
  }
  slots_.leave(slot);
  for (uint32_t i = 0; i < nclasses_; i++) {
    to_depot(classes_[i], trim[i], trim_cnt[i]);
    if (rcu[i]) {
      if (!*rcu_cookie) *rcu_cookie = rcu_.start_gp();
      rcu_batches_.push_back({*rcu_cookie, i, rcu_cnt[i], rcu[i]});
      rcu_waiting_ += rcu_cnt[i];
    }
  }
  return true;
}

// The leaf node holding page pg's entry; created (with the middle node) if
// create, else nullptr when missing. Under mu_.
MemAlloc::IndexNode* MemAlloc::index_leaf(uint64_t pg, bool create) {
  IndexNode* n = index_root_;
  for (unsigned shift : {24u, 12u}) {
    std::atomic<uint64_t>& e = n->e[(pg >> shift) & 4095];
    uint64_t v = e.load(std::memory_order_relaxed);
    if (!v) {
      if (!create) return nullptr;
      auto* fresh = new (std::nothrow) IndexNode{};
      if (!fresh) return nullptr;
      index_nodes_.push_back(fresh);
      v = reinterpret_cast<uint64_t>(fresh);
      e.store(v, std::memory_order_release);
    }
    n = reinterpret_cast<IndexNode*>(v);
  }
  return n;
}

// A slab enters the index whole or not at all: first every node its pages
// need (a failure leaves only empty nodes behind), then its leaf entries,
// then the page cache. So no reader ever sees part of a slab that goes back
// to the pool, and the page cache (which readers also fill) only ever learns
// true facts.
bool MemAlloc::index_slab(void* base, uint64_t bytes, uint32_t cls) {
  const auto b = reinterpret_cast<uintptr_t>(base);
  if (((b + bytes - 1) >> 47) != 0) return false;
  const uint64_t first = b >> 12, end = (b + bytes) >> 12;
  for (uint64_t pg = first; pg < end; pg++)
    if (!index_leaf(pg, true)) return false;
  for (uint64_t pg = first; pg < end; pg++)
    index_leaf(pg, false)->e[pg & 4095].store(b | (cls + 1), std::memory_order_release);
  for (uint64_t pg = first; pg < end; pg++)
    page_cache_[pg % kPageCacheSize].store(page_cache_entry(pg, first, cls),
                                           std::memory_order_release);
  return true;
}

uint64_t MemAlloc::worker_task(void* self) {
  return static_cast<MemAlloc*>(self)->background();
}

uint64_t MemAlloc::background() {
  std::lock_guard<std::mutex> lk(mu_);
  bool retry = false;
  uint64_t cookie = 0;
  for (uint32_t s = 0; s < slots_.total_slots(); s++)
    if (!serve_slot(static_cast<int>(s), &cookie)) retry = true;
  // Objects whose grace period is over go back to the depot.
  auto done = std::remove_if(rcu_batches_.begin(), rcu_batches_.end(), [&](const RcuBatch& b) {
    if (!rcu_.poll_gp(b.cookie, opts_.rcu_flavor)) return false;
    to_depot(classes_[b.cls], b.head, b.cnt);
    rcu_waiting_ -= b.cnt;
    return true;
  });
  rcu_batches_.erase(done, rcu_batches_.end());
  return retry || !rcu_batches_.empty() ? kRetryNs : 0;
}

void MemAlloc::flush() {
  worker_.run_sync();
}

MemAllocStats MemAlloc::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  MemAllocStats st;
  for (uint32_t i = 0; i < nclasses_; i++) {
    st.carved += classes_[i].carved;
    st.depot += classes_[i].depot_cnt;
  }
  for (uint32_t s = 0; s < slots_.total_slots(); s++) {
    for (uint32_t i = 0; i < nclasses_; i++) {
      SlotCache& c = cache(static_cast<int>(s), i);
      st.cached += c.free_cnt.load(std::memory_order_relaxed) +
                   c.extra_cnt.load(std::memory_order_relaxed) +
                   c.incoming_cnt.load(std::memory_order_relaxed);
      st.rcu_waiting +=
          c.rcu_cnt.load(std::memory_order_relaxed) + c.rcu_out_cnt.load(std::memory_order_relaxed);
    }
  }
  st.rcu_waiting += rcu_waiting_;
  st.in_use = st.carved - st.cached - st.depot - st.rcu_waiting;
  st.bytes = bytes_;
  st.alloc_fail = alloc_fail_.load(std::memory_order_relaxed);
  return st;
}

}  // namespace userbpf::mem
