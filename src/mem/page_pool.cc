// The page pool: trylock-only allocation, deferred frees, chunk mapping.
#include "mem/page_pool.h"

#include <sys/mman.h>

#include "base/assert.h"

namespace userbpf::mem {

PagePool::PagePool(const PagePoolOptions& opts) : opts_(opts) {
  size_t min_chunk = kPageSize << kMaxOrder;
  if (opts_.chunk_bytes < min_chunk) opts_.chunk_bytes = min_chunk;
  USERBPF_ASSERT((opts_.chunk_bytes & (opts_.chunk_bytes - 1)) == 0);
}

PagePool::~PagePool() {
  for (unsigned i = 0; i < num_chunks_; i++) munmap(chunks_[i], opts_.chunk_bytes);
}

unsigned PagePool::order_for(size_t bytes) {
  unsigned order = 0;
  while ((kPageSize << order) < bytes) order++;
  return order;
}

bool PagePool::map_chunk() {
  size_t size = opts_.chunk_bytes;
  if (num_chunks_ == kMaxChunks) return false;
  if (opts_.max_bytes && mapped_bytes_.load(std::memory_order_relaxed) + size > opts_.max_bytes)
    return false;
  void* p = MAP_FAILED;
  if (opts_.huge_pages) {
    p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1,
             0);
    if (p != MAP_FAILED) hugetlb_ = true;
  }
  if (p == MAP_FAILED) {
    // Over-map and trim so the chunk is aligned to its size (THP needs it).
    void* raw = mmap(nullptr, size * 2, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | (opts_.noreserve ? MAP_NORESERVE : 0), -1, 0);
    if (raw == MAP_FAILED) return false;
    uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (start + size - 1) & ~(uintptr_t{size} - 1);
    if (aligned > start) munmap(raw, aligned - start);
    uintptr_t tail = start + size * 2 - (aligned + size);
    if (tail) munmap(reinterpret_cast<void*>(aligned + size), tail);
    p = reinterpret_cast<void*>(aligned);
    if (opts_.huge_pages) madvise(p, size, MADV_HUGEPAGE);
  }
  // The rest of the previous chunk becomes free blocks, largest first.
  while (cur_ && cur_ < end_) {
    unsigned order = kMaxOrder;
    while ((kPageSize << order) > static_cast<size_t>(end_ - cur_)) order--;
    push_free(cur_, order);
    cur_ += kPageSize << order;
  }
  chunks_[num_chunks_++] = p;
  cur_ = static_cast<char*>(p);
  end_ = cur_ + size;
  mapped_bytes_.fetch_add(size, std::memory_order_relaxed);
  return true;
}

void PagePool::push_free(void* p, unsigned order) {
  auto* b = static_cast<FreeBlock*>(p);
  b->next = free_[order];
  free_[order] = b;
}

void PagePool::drain_deferred() {
  FreeBlock* b = deferred_.exchange(nullptr, std::memory_order_acquire);
  while (b) {
    FreeBlock* next = b->next;
    push_free(b, static_cast<unsigned>(b->order));
    b = next;
  }
}

void* PagePool::carve(unsigned order) {
  if (FreeBlock* b = free_[order]) {
    free_[order] = b->next;
    return b;
  }
  // Split the smallest larger free block: keep the front, free the halves.
  for (unsigned big = order + 1; big <= kMaxOrder; big++) {
    FreeBlock* b = free_[big];
    if (!b) continue;
    free_[big] = b->next;
    for (unsigned o = big; o-- > order;)
      push_free(reinterpret_cast<char*>(b) + (kPageSize << o), o);
    return b;
  }
  size_t size = kPageSize << order;
  if (!cur_ || static_cast<size_t>(end_ - cur_) < size) {
    if (!map_chunk()) return nullptr;
  }
  void* p = cur_;
  cur_ += size;
  return p;
}

void* PagePool::alloc_pages_nolock(unsigned order) {
  if (order > kMaxOrder || !try_lock()) return nullptr;
  drain_deferred();
  void* p = carve(order);
  unlock();
  if (p) used_bytes_.fetch_add(kPageSize << order, std::memory_order_relaxed);
  return p;
}

void PagePool::free_pages_nolock(void* p, unsigned order) {
  if (!p) return;
  USERBPF_ASSERT(order <= kMaxOrder);
  used_bytes_.fetch_sub(kPageSize << order, std::memory_order_relaxed);
  if (try_lock()) {
    drain_deferred();
    push_free(p, order);
    unlock();
    return;
  }
  auto* b = static_cast<FreeBlock*>(p);
  b->order = order;
  FreeBlock* old = deferred_.load(std::memory_order_relaxed);
  do {
    b->next = old;
  } while (!deferred_.compare_exchange_weak(old, b, std::memory_order_release,
                                            std::memory_order_relaxed));
  deferred_frees_.fetch_add(1, std::memory_order_relaxed);
}

void PagePool::free_pages(void* p, unsigned order) {
  if (!p) return;
  USERBPF_ASSERT(order <= kMaxOrder);
  used_bytes_.fetch_sub(kPageSize << order, std::memory_order_relaxed);
  while (!try_lock()) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  drain_deferred();
  push_free(p, order);
  unlock();
}

}  // namespace userbpf::mem
