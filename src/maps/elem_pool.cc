// Element storage for hash maps: reservation, on-demand commit, slot
// caches, lock-free shared lists, reuse after grace periods (see
// elem_pool.h).
#include "maps/elem_pool.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "base/assert.h"
#include "base/bits.h"
#include "maps/map_internal.h"
#include "maps/map_lock.h"

namespace userbpf::maps {
namespace {

// Growth doubles the committed size, by at most this much at a time.
constexpr uint64_t kMaxGrowStep = 8ull << 20;

// Whether this process may use membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
// (registered on the first call; host).
bool membarrier_registered() {
  static const bool ok = [] {
    const int saved_errno = errno;
    const bool r = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    errno = saved_errno;
    return r;
  }();
  return ok;
}

}  // namespace

ElemPool::~ElemPool() {
  if (cache_bytes_) map_uncharge(owner_, cache_bytes_);
  if (!base_) return;
  munmap(reinterpret_cast<void*>(base_), reserved_bytes_);
  map_uncharge(owner_, committed_bytes_.load(std::memory_order_relaxed));
}

Status ElemPool::init(Map* owner, uint32_t elem_size, uint32_t link_offset, uint64_t capacity,
                      uint64_t initial) {
  USERBPF_ASSERT(elem_size % 8 == 0 && link_offset % 4 == 0 && link_offset + 4 <= elem_size);
  USERBPF_ASSERT(capacity < 0xffffffffull && initial <= capacity);
  owner_ = owner;
  elem_size_ = elem_size;
  link_offset_ = link_offset;
  capacity_ = capacity;
  page_size_ = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  reserved_bytes_ = round_up(capacity * elem_size, page_size_);
  magic_ = ~0ull / elem_size + 1;
  fast_index_ = reserved_bytes_ <= 0xffffffffull;
  void* p =
      mmap(nullptr, reserved_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    reserved_bytes_ = 0;
    return make_error(ENOMEM, "cannot reserve %llu bytes of address space for %llu elements",
                      static_cast<unsigned long long>(capacity * elem_size),
                      static_cast<unsigned long long>(capacity));
  }
  base_ = reinterpret_cast<uintptr_t>(p);
  if (initial == 0) return Status::Ok();
  uint64_t bytes = round_up(initial * elem_size, page_size_);
  if (!map_charge(owner, bytes))
    return make_error(ENOMEM, "%llu bytes of preallocated elements exceed memory_limit %llu",
                      static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(owner->attr.memory_limit));
  if (mprotect(p, bytes, PROT_READ | PROT_WRITE) != 0) {
    map_uncharge(owner, bytes);
    return make_error(ENOMEM, "cannot commit %llu bytes of elements",
                      static_cast<unsigned long long>(bytes));
  }
  committed_bytes_.store(bytes, std::memory_order_release);
  committed_elems_.store(std::min(bytes / elem_size, capacity), std::memory_order_release);
  return Status::Ok();
}

void ElemPool::set_rcu(mem::RcuDomain* rcu, mem::RcuFlavor flavor) {
  USERBPF_ASSERT(owner_ && !nslots_);  // after init, once
  rcu_ = rcu;
  flavor_ = flavor;
  if (!rcu) return;
  mem::SlotTable& t = rcu->slots();
  const uint32_t n = t.total_slots();
  const uint64_t bytes = uint64_t{n} * sizeof(SlotCache);
  if (!map_charge(owner_, bytes)) return;
  caches_.reset(new (std::nothrow) SlotCache[n]);
  if (!caches_) {
    map_uncharge(owner_, bytes);
    return;
  }
  cache_bytes_ = bytes;
  slots_ = &t;
  switch (flavor) {
    case mem::RcuFlavor::kNormal:
      flavor_first_ = 0, flavor_end_ = t.num_slots();
      break;
    case mem::RcuFlavor::kTasksTrace:
      flavor_first_ = t.num_slots(), flavor_end_ = n;
      break;
    case mem::RcuFlavor::kBoth:
      flavor_first_ = 0, flavor_end_ = n;
      break;
  }
  light_fence_ = membarrier_registered();
  nslots_ = n;
}

void ElemPool::append(Chain& c, uint32_t head, uint32_t tail, uint32_t cnt) const {
  if (!head) return;
  if (c.tail)
    link(c.tail - 1)->store(head, std::memory_order_relaxed);
  else
    c.head = head;
  c.tail = tail;
  c.cnt += cnt;
}

// ---- slot caches, owner side (fast paths in the header) ----

bool ElemPool::gp_over(int slot, uint64_t cookie) const {
  // Our own slot is one a grace period waits for: while it is held from
  // before the cookie, nothing is over, and poll_gp need not scan.
  const auto s = static_cast<uint32_t>(slot);
  if (s >= flavor_first_ && s < flavor_end_) {
    const uint64_t e = slots_->slot_state(s);
    if (e != 0 && e < cookie) return false;
  }
  return rcu_->poll_gp(cookie, flavor_);
}

void* ElemPool::pop_and_leave(SlotCache& c, uint32_t cnt) {
  void* e = elem(c.free_head - 1);
  c.free_head = link_of(e)->load(std::memory_order_relaxed);
  c.free_cnt.store(cnt - 1, std::memory_order_relaxed);
  cache_leave(c);
  return e;
}

void* ElemPool::alloc_refill(int slot, SlotCache& c) {
  // Our oldest batch (cookies grow along the ring).
  const uint8_t n = c.ring_n.load(std::memory_order_relaxed);
  if (n && gp_over(slot, c.ring[c.ring_first].cookie)) {
    const SlotBatch& b = c.ring[c.ring_first];
    c.free_head = b.head;
    c.free_tail = b.tail;
    c.ring_first = static_cast<uint8_t>((c.ring_first + 1) & (kSlotRing - 1));
    c.ring_n.store(static_cast<uint8_t>(n - 1), std::memory_order_relaxed);
    c.ring_cookie.store(n > 1 ? c.ring[c.ring_first].cookie : 0, std::memory_order_relaxed);
    return pop_and_leave(c, kSlotBatch);
  }
  // The shared ring's oldest batch, if over: peeked at before the lock.
  const uint64_t cookie = ring_head_cookie_.load(std::memory_order_relaxed);
  if (cookie && gp_over(slot, cookie) && try_lock_recycle()) {
    uint32_t got = 0;
    if (ring_n_ && rcu_->poll_gp(ring_[ring_first_].cookie, flavor_)) {
      const Batch b = ring_pop_locked();
      if (b.cnt <= kSlotFreeMax) {
        c.free_head = b.head;
        c.free_tail = b.tail;
        got = b.cnt;
      } else {
        push_free_chain(b.head, b.tail);
      }
    }
    if ((pending_.load(std::memory_order_relaxed) >> 32) >= kSealBatch) seal_locked();
    unlock_recycle();
    if (got) return pop_and_leave(c, got);
  }
  cache_leave(c);
  return alloc_shared_or_steal(slot);
}

void ElemPool::seal_slot(SlotCache& c) {
  // The frees happened before start_gp's read-modify-write: a grace period
  // started now covers every reader that could have seen these elements.
  const SlotBatch b{rcu_->start_gp(), c.pend_head, c.pend_tail};
  c.pend_head = c.pend_tail = 0;
  c.pend_cnt.store(0, std::memory_order_relaxed);
  uint8_t n = c.ring_n.load(std::memory_order_relaxed);
  SlotBatch out{};
  if (n == kSlotRing) {  // full: the oldest goes to the shared ring
    out = c.ring[c.ring_first];
    c.ring_first = static_cast<uint8_t>((c.ring_first + 1) & (kSlotRing - 1));
    n--;
  }
  c.ring[(c.ring_first + n) & (kSlotRing - 1)] = b;
  c.ring_n.store(static_cast<uint8_t>(n + 1), std::memory_order_relaxed);
  c.ring_cookie.store(c.ring[c.ring_first].cookie, std::memory_order_relaxed);
  // Handed over before leaving: reclaim_host, which waits for an active
  // cache, never misses a batch in transit.
  if (out.head) give_batch(Batch{out.cookie, out.head, out.tail, kSlotBatch});
  cache_leave(c);
}

// ---- thieves ----

void ElemPool::heavy_fence() const {
  if (light_fence_) {
    const int saved_errno = errno;  // may run in a signal handler
    const long rc = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    errno = saved_errno;
    USERBPF_ASSERT(rc == 0);  // registered before light_fence_ was set
    return;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool ElemPool::worth_stealing(uint32_t s) const {
  const SlotCache& c = caches_[s];
  if (c.free_cnt.load(std::memory_order_relaxed)) return true;
  const uint64_t cookie = c.ring_cookie.load(std::memory_order_relaxed);
  if (cookie && rcu_->poll_gp(cookie, flavor_)) return true;
  return c.pend_cnt.load(std::memory_order_relaxed) && slots_->slot_state(s) == 0;
}

void ElemPool::take_cache(SlotCache& c, Taken& t) {
  append(t.ready, c.free_head, c.free_tail, c.free_cnt.load(std::memory_order_relaxed));
  const uint8_t n = c.ring_n.load(std::memory_order_relaxed);
  for (uint32_t k = 0; k < n; k++) {
    const SlotBatch& b = c.ring[(c.ring_first + k) & (kSlotRing - 1)];
    if (rcu_->poll_gp(b.cookie, flavor_))
      append(t.ready, b.head, b.tail, kSlotBatch);
    else
      t.sealed[t.n_sealed++] = b;
  }
  append(t.pending, c.pend_head, c.pend_tail, c.pend_cnt.load(std::memory_order_relaxed));
  c.free_head = c.free_tail = c.pend_head = c.pend_tail = 0;
  c.ring_first = 0;
  c.ring_n.store(0, std::memory_order_relaxed);
  c.ring_cookie.store(0, std::memory_order_relaxed);
  c.free_cnt.store(0, std::memory_order_relaxed);
  c.pend_cnt.store(0, std::memory_order_relaxed);
}

void ElemPool::give_taken(Taken& t) {
  if (t.ready.head) push_free_chain(t.ready.head, t.ready.tail);
  for (uint32_t k = 0; k < t.n_sealed; k++)
    give_batch(Batch{t.sealed[k].cookie, t.sealed[k].head, t.sealed[k].tail, kSlotBatch});
  if (t.pending.head) push_pending_chain(t.pending.head, t.pending.tail, t.pending.cnt);
}

bool ElemPool::steal_caches(int self, bool all, bool wait) {
  bool took = false;
  // 64 caches per heavy fence: one bit each.
  for (uint32_t base = 0; base < nslots_; base += 64) {
    const uint32_t end = std::min(nslots_, base + 64);
    uint64_t todo = 0;
    bool worth = all;
    for (uint32_t s = base; s < end; s++) {
      const SlotCache& c = caches_[s];
      if (static_cast<int>(s) == self) continue;
      if (!c.free_cnt.load(std::memory_order_relaxed) &&
          !c.pend_cnt.load(std::memory_order_relaxed) && !c.ring_n.load(std::memory_order_relaxed))
        continue;
      todo |= uint64_t{1} << (s - base);
      worth = worth || worth_stealing(s);
    }
    // Once a fence is paid for, every non-empty cache is taken.
    if (!worth) continue;
    while (todo) {
      uint64_t won = 0;
      for (uint64_t m = todo; m; m &= m - 1) {
        const uint32_t s = base + static_cast<uint32_t>(__builtin_ctzll(m));
        uint8_t zero = 0;
        if (caches_[s].steal.compare_exchange_strong(zero, 1, std::memory_order_seq_cst))
          won |= m & -m;
      }
      if (won) {
        heavy_fence();
        for (uint64_t m = won; m; m &= m - 1) {
          const uint32_t s = base + static_cast<uint32_t>(__builtin_ctzll(m));
          SlotCache& c = caches_[s];
          const bool idle = !c.active.load(std::memory_order_seq_cst);
          if (idle) {
            // Handed over before letting go, as seal_slot does.
            Taken t;
            take_cache(c, t);
            give_taken(t);
            todo &= ~(m & -m);
            took = true;
          }
          c.steal.store(0, std::memory_order_release);
        }
      }
      if (!wait || !todo) break;
      sched_yield();  // owners finish their operation; other thieves let go
    }
  }
  return took;
}

// ---- shared paths ----

void* ElemPool::pop_free() {
  uint64_t head = free_head_.load(std::memory_order_acquire);
  while (static_cast<uint32_t>(head) != 0) {
    uint64_t idx = static_cast<uint32_t>(head) - 1;
    // May read a stale link if idx was popped meanwhile; the tag makes that
    // compare-exchange fail.
    uint32_t next = link(idx)->load(std::memory_order_relaxed);
    uint64_t new_head = (((head >> 32) + 1) << 32) | next;
    if (free_head_.compare_exchange_weak(head, new_head, std::memory_order_acquire,
                                         std::memory_order_acquire))
      return elem(idx);
  }
  return nullptr;
}

void* ElemPool::alloc_shared() {
  if (void* e = pop_free()) return e;
  bool recycled = false;
  uint64_t c = carved_.load(std::memory_order_relaxed);
  for (;;) {
    if (c < committed_elems_.load(std::memory_order_acquire)) {
      if (carved_.compare_exchange_weak(c, c + 1, std::memory_order_relaxed)) return elem(c);
      continue;
    }
    // The committed front is used up: elements whose grace period is over
    // come first, then more memory.
    if (!recycled && rcu_ && shared_waiting()) {
      recycled = true;
      if (try_lock_recycle()) {
        bool moved = recycle_locked();
        seal_locked();
        unlock_recycle();
        if (moved)
          if (void* e = pop_free()) return e;
      }
    }
    if (void* e = pop_free()) return e;
    if (!grow(c + 1)) return nullptr;
    c = carved_.load(std::memory_order_relaxed);
  }
}

void* ElemPool::alloc_shared_or_steal(int slot) {
  if (void* e = alloc_shared()) return e;
  if (!nslots_) return nullptr;
  // One thief at a time: the others retry the shared list it fills.
  if (steal_lock_.load(std::memory_order_relaxed) ||
      steal_lock_.exchange(1, std::memory_order_acquire))
    return pop_free();
  const bool took = steal_caches(slot, false, false);
  steal_lock_.store(0, std::memory_order_release);
  if (!took) return nullptr;
  if (void* e = pop_free()) return e;
  // Taken batches may be over by now; taken pending elements are sealed.
  if (try_lock_recycle()) {
    recycle_locked();
    seal_locked();
    unlock_recycle();
  }
  return pop_free();
}

void ElemPool::push_free_chain(uint32_t head, uint32_t tail) {
  uint64_t old = free_head_.load(std::memory_order_relaxed);
  uint64_t new_head;
  do {
    link(tail - 1)->store(static_cast<uint32_t>(old), std::memory_order_relaxed);
    new_head = (((old >> 32) + 1) << 32) | head;
  } while (!free_head_.compare_exchange_weak(old, new_head, std::memory_order_release,
                                             std::memory_order_relaxed));
}

void ElemPool::free(void* e) {
  uint64_t idx = index_of(e);
  USERBPF_DEBUG_ASSERT(idx < carved_.load(std::memory_order_relaxed));
  push_free_chain(static_cast<uint32_t>(idx + 1), static_cast<uint32_t>(idx + 1));
}

void ElemPool::push_pending_chain(uint32_t head, uint32_t tail, uint32_t cnt) {
  uint64_t old = pending_.load(std::memory_order_relaxed);
  uint64_t neu;
  do {
    link(tail - 1)->store(static_cast<uint32_t>(old), std::memory_order_relaxed);
    neu = (((old >> 32) + cnt) << 32) | head;
  } while (!pending_.compare_exchange_weak(old, neu, std::memory_order_release,
                                           std::memory_order_relaxed));
  // Seal in batches, so the grace period of these elements starts now and
  // has usually passed by the time the free list runs dry.
  if ((neu >> 32) >= kSealBatch && try_lock_recycle()) {
    recycle_locked();
    seal_locked();
    unlock_recycle();
  }
}

void ElemPool::give_batch(const Batch& b) {
  if (try_lock_recycle()) {
    ring_insert_locked(b);
    unlock_recycle();
    return;
  }
  push_pending_chain(b.head, b.tail, b.cnt);  // sealed again, with a later cookie
}

void ElemPool::seal_locked() {
  uint64_t taken = pending_.exchange(0, std::memory_order_acquire);
  uint32_t head = static_cast<uint32_t>(taken);
  if (!head) return;
  uint32_t cnt = static_cast<uint32_t>(taken >> 32);
  uint32_t tail = head;
  for (uint32_t n; (n = link(tail - 1)->load(std::memory_order_relaxed)) != 0;) tail = n;
  // The frees happened before our exchange: a grace period started now covers
  // every reader that could have seen these elements.
  ring_insert_locked(Batch{rcu_->start_gp(), head, tail, cnt});
}

void ElemPool::ring_insert_locked(const Batch& b) {
  ring_waiting_.fetch_add(b.cnt, std::memory_order_relaxed);
  if (ring_n_ == kRing) {
    // Full: join the newest batch, which then waits for the later cookie.
    Batch& last = ring_[(ring_first_ + ring_n_ - 1) % kRing];
    link(last.tail - 1)->store(b.head, std::memory_order_relaxed);
    last.tail = b.tail;
    last.cnt += b.cnt;
    last.cookie = std::max(last.cookie, b.cookie);
  } else {
    ring_[(ring_first_ + ring_n_) % kRing] = b;
    ring_n_++;
  }
  ring_head_cookie_.store(ring_[ring_first_].cookie, std::memory_order_relaxed);
}

ElemPool::Batch ElemPool::ring_pop_locked() {
  const Batch b = ring_[ring_first_];
  ring_waiting_.fetch_sub(b.cnt, std::memory_order_relaxed);
  ring_first_ = (ring_first_ + 1) % kRing;
  ring_n_--;
  ring_head_cookie_.store(ring_n_ ? ring_[ring_first_].cookie : 0, std::memory_order_relaxed);
  return b;
}

bool ElemPool::recycle_locked() {
  bool moved = false;
  // Cookies mostly grow along the ring (a batch a slot hands over may be
  // older than the newest): stop at the first that must wait.
  while (ring_n_ && rcu_->poll_gp(ring_[ring_first_].cookie, flavor_)) {
    const Batch b = ring_pop_locked();
    push_free_chain(b.head, b.tail);
    moved = true;
  }
  return moved;
}

void ElemPool::reclaim_host() {
  if (!rcu_) return;
  // Slot caches first, whoever holds their slots; a thread that holds a
  // slot itself (a misuse) gets one pass, not a wait for its own operation.
  if (nslots_) steal_caches(-1, true, !mem::SlotTable::thread_in_slot());
  auto lock = [this] {
    while (!try_lock_recycle()) sched_yield();
  };
  lock();
  seal_locked();
  unlock_recycle();
  (void)rcu_->synchronize_rcu(flavor_);  // EDEADLK inside a section: recycle what is due
  lock();
  recycle_locked();
  unlock_recycle();
}

uint64_t ElemPool::waiting() const {
  uint64_t n = shared_waiting();
  for (uint32_t s = 0; s < nslots_; s++)
    n += caches_[s].pend_cnt.load(std::memory_order_relaxed) +
         uint64_t{caches_[s].ring_n.load(std::memory_order_relaxed)} * kSlotBatch;
  return n;
}

uint64_t ElemPool::cached() const {
  uint64_t n = 0;
  for (uint32_t s = 0; s < nslots_; s++)
    n += caches_[s].free_cnt.load(std::memory_order_relaxed) +
         caches_[s].pend_cnt.load(std::memory_order_relaxed) +
         uint64_t{caches_[s].ring_n.load(std::memory_order_relaxed)} * kSlotBatch;
  return n;
}

uint64_t ElemPool::free_elems() const {
  uint64_t n = 0;
  for (auto i = static_cast<uint32_t>(free_head_.load(std::memory_order_acquire)); i;
       i = link(i - 1)->load(std::memory_order_relaxed))
    n++;
  for (uint32_t s = 0; s < nslots_; s++) n += caches_[s].free_cnt.load(std::memory_order_relaxed);
  return n;
}

bool ElemPool::grow(uint64_t min_elems) {
  if (min_elems > capacity_) return false;
  int saved_errno = errno;  // may run in a signal handler: mprotect must not leak errno
  // A signal handler interrupting this thread's own growth gets -EBUSY here
  // and fails the allocation rather than spinning forever.
  if (map_lock_acquire(grow_lock_, this, 0, MapLockRank::kPoolGrowth) != 0) return false;
  bool ok = true;
  uint64_t have = committed_bytes_.load(std::memory_order_relaxed);
  if (have / elem_size_ < min_elems) {
    uint64_t need = std::min(round_up(min_elems * elem_size_, page_size_), reserved_bytes_);
    uint64_t want = std::min(
        std::max(need, have + std::min(std::max(have, page_size_), kMaxGrowStep)), reserved_bytes_);
    // Near the memory limit, fall back to the smallest step that fits.
    if (!map_charge(owner_, want - have)) {
      want = need;
      ok = map_charge(owner_, want - have);
    }
    if (ok &&
        mprotect(reinterpret_cast<void*>(base_ + have), want - have, PROT_READ | PROT_WRITE) != 0) {
      map_uncharge(owner_, want - have);
      ok = false;
    }
    if (ok) {
      committed_bytes_.store(want, std::memory_order_release);
      committed_elems_.store(std::min(want / elem_size_, capacity_), std::memory_order_release);
    }
  }
  map_lock_release(grow_lock_);
  errno = saved_errno;
  return ok;
}

}  // namespace userbpf::maps
