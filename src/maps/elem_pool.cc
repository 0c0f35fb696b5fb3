// Element storage for hash maps: reservation, on-demand commit, lock-free
// free list, reuse after grace periods (see elem_pool.h).
#include "maps/elem_pool.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/assert.h"
#include "base/bits.h"
#include "maps/map_internal.h"
#include "maps/map_lock.h"

namespace userbpf::maps {
namespace {

// Growth doubles the committed size, by at most this much at a time.
constexpr uint64_t kMaxGrowStep = 8ull << 20;

}  // namespace

ElemPool::~ElemPool() {
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

void* ElemPool::alloc() {
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
    if (!recycled && rcu_ && waiting()) {
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

void ElemPool::free_rcu(void* e) {
  if (!rcu_) return free(e);
  uint64_t idx = index_of(e);
  USERBPF_DEBUG_ASSERT(idx < carved_.load(std::memory_order_relaxed));
  uint64_t old = pending_.load(std::memory_order_relaxed);
  uint64_t neu;
  do {
    link(idx)->store(static_cast<uint32_t>(old), std::memory_order_relaxed);
    neu = (((old >> 32) + 1) << 32) | (idx + 1);
  } while (!pending_.compare_exchange_weak(old, neu, std::memory_order_release,
                                           std::memory_order_relaxed));
  uint64_t n = neu >> 32;
  // Seal in batches, so the grace period of these elements starts now and
  // has usually passed by the time the free list runs dry.
  if (n >= kSealBatch && try_lock_recycle()) {
    recycle_locked();
    seal_locked();
    unlock_recycle();
  }
}

void ElemPool::seal_locked() {
  uint64_t taken = pending_.exchange(0, std::memory_order_acquire);
  uint32_t head = static_cast<uint32_t>(taken);
  if (!head) return;
  uint32_t cnt = static_cast<uint32_t>(taken >> 32);
  uint32_t tail = head;
  for (uint32_t n; (n = link(tail - 1)->load(std::memory_order_relaxed)) != 0;) tail = n;
  ring_waiting_.fetch_add(cnt, std::memory_order_relaxed);
  // The frees happened before our exchange: a grace period started now covers
  // every reader that could have seen these elements.
  uint64_t cookie = rcu_->start_gp();
  if (ring_n_ == kRing) {
    // Ring full: join the newest batch, which then waits for our cookie.
    Batch& b = ring_[(ring_first_ + ring_n_ - 1) % kRing];
    link(b.tail - 1)->store(head, std::memory_order_relaxed);
    b.tail = tail;
    b.cnt += cnt;
    b.cookie = cookie;
    return;
  }
  ring_[(ring_first_ + ring_n_) % kRing] = Batch{cookie, head, tail, cnt};
  ring_n_++;
}

bool ElemPool::recycle_locked() {
  bool moved = false;
  // Cookies grow along the ring: once one batch must wait, later ones must too.
  while (ring_n_ && rcu_->poll_gp(ring_[ring_first_].cookie, flavor_)) {
    Batch& b = ring_[ring_first_];
    push_free_chain(b.head, b.tail);
    ring_waiting_.fetch_sub(b.cnt, std::memory_order_relaxed);
    ring_first_ = (ring_first_ + 1) % kRing;
    ring_n_--;
    moved = true;
  }
  return moved;
}

void ElemPool::reclaim_host() {
  if (!rcu_) return;
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

bool ElemPool::grow(uint64_t min_elems) {
  if (min_elems > capacity_) return false;
  int saved_errno = errno;  // may run in a signal handler: mprotect must not leak errno
  // A signal handler interrupting this thread's own growth gets -EBUSY here
  // and fails the allocation rather than spinning forever.
  if (map_lock_acquire(grow_lock_, this, 0) != 0) return false;
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
