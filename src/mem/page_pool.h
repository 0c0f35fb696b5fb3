// The page layer under the object caches: alloc_pages_nolock /
// free_pages_nolock semantics (the kernel's, born from the __GFP_TRYLOCK
// proposal) over memory mmap'd in chunks.
//
// Memory comes from the OS in chunks (2 MiB by default, aligned to their size;
// with huge_pages, MAP_HUGETLB first, else transparent huge pages requested
// with MADV_HUGEPAGE). Blocks of 2^order pages are carved from the current
// chunk or reused from one free list per order; a larger free block is split
// when its order's list is empty (no buddy merging back). Chunks go back to the OS only when
// the pool is destroyed.
//
// Invariants:
//   every block handed out lies in exactly one chunk and is on no list
//   a free block is on exactly one list: free_[order] (under lock_) or the
//   deferred stack (lock-free, drained into free_ by the next lock holder)
//   used_bytes = bytes of blocks handed out and not yet freed (deferred frees
//   count as freed)
//   mapped_bytes <= max_bytes (when max_bytes != 0)
//
// Contexts: alloc_pages_nolock / free_pages_nolock from any context: they only
// ever try the lock; alloc returns nullptr on contention, exhaustion or the
// limit (no retry), free defers to the lock-free stack. free_pages (the
// ordinary free) may spin on the lock: not from signal handlers or programs.
// mmap is a plain system call (async-signal-safe in practice).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace userbpf::mem {

struct PagePoolOptions {
  size_t chunk_bytes = 2u << 20;  // power of two, >= 2^kMaxOrder pages
  bool huge_pages = false;
  uint64_t max_bytes = 0;  // 0: no limit on mapped memory
  // MAP_NORESERVE chunks: large chunks that are mostly never touched (a
  // map's private pool sized for its worst case) do not count against the
  // kernel's overcommit heuristic.
  bool noreserve = false;
};

class PagePool {
 public:
  static constexpr size_t kPageSize = 4096;
  static constexpr unsigned kMaxOrder = 9;  // 2 MiB blocks
  static constexpr unsigned kMaxChunks = 4096;

  explicit PagePool(const PagePoolOptions& opts = {});
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // 2^order zero-or-stale pages, page aligned, or nullptr. Any context.
  void* alloc_pages_nolock(unsigned order);
  // Any context; defers to the lock-free stack when the lock is taken.
  void free_pages_nolock(void* p, unsigned order);
  // Host/worker context: waits for the lock, then drains deferred frees.
  void free_pages(void* p, unsigned order);

  uint64_t mapped_bytes() const { return mapped_bytes_.load(std::memory_order_relaxed); }
  uint64_t used_bytes() const { return used_bytes_.load(std::memory_order_relaxed); }
  uint64_t deferred_frees() const { return deferred_frees_.load(std::memory_order_relaxed); }
  // Whether the chunks are MAP_HUGETLB pages (false: normal or THP-advised).
  bool hugetlb() const { return hugetlb_; }
  size_t chunk_bytes() const { return opts_.chunk_bytes; }

  // Smallest order whose block holds bytes.
  static unsigned order_for(size_t bytes);

 private:
  friend struct PagePoolTestPeer;
  struct FreeBlock {
    FreeBlock* next;
    uint64_t order;  // used by the deferred stack only
  };
  bool try_lock() {
    return !lock_.load(std::memory_order_relaxed) &&
           !lock_.exchange(true, std::memory_order_acquire);
  }
  void unlock() { lock_.store(false, std::memory_order_release); }
  // Under lock_.
  void drain_deferred();
  void push_free(void* p, unsigned order);
  void* carve(unsigned order);
  bool map_chunk();

  PagePoolOptions opts_;
  bool hugetlb_ = false;
  std::atomic<bool> lock_{false};
  std::atomic<FreeBlock*> deferred_{nullptr};
  // Under lock_.
  FreeBlock* free_[kMaxOrder + 1] = {};
  char* cur_ = nullptr;
  char* end_ = nullptr;
  void* chunks_[kMaxChunks] = {};
  unsigned num_chunks_ = 0;
  std::atomic<uint64_t> mapped_bytes_{0};
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> deferred_frees_{0};
};

}  // namespace userbpf::mem
