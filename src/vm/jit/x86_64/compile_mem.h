// The memory a compile works in, kept warm between compiles.
//
// A compile of 1,000 instructions needs some 150 KB of short-lived memory
// (the code buffer, a dozen per-instruction vectors) and 10 KB of code
// pages. Taken from the heap and mmap each time, most of it is fresh pages:
// glibc gives the top of its heap back to the kernel when the previous
// compile frees it, so the next one faults the same pages in again, and a
// new code mapping faults in each page memcpy writes. On this machine class
// those faults cost more than the analysis and emission together (199 us of
// a 1,000-instruction compile, 40 us of it page faults and mmap).
//
//   CompileArena  a bump allocator (std::pmr) for one compile's memory; its
//                 chunks stay allocated for the next compile. Only compiles
//                 use it, one at a time (jit_compile holds g_compile_lock).
//   CodePages     mappings of freed JIT images, kept read+write for the next
//                 image (W^X: a page is never writable and executable at
//                 once): a new image costs one mprotect instead of mmap and
//                 a page fault per page. A few are kept, the rest unmapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <vector>

namespace userbpf::vm::jit {

class CompileArena final : public std::pmr::memory_resource {
 public:
  // Forgets every allocation; the memory stays for the next compile (merged
  // into one chunk if the last compile needed more than one).
  void reset();
  // Frees every chunk if they add up to more than is kept between compiles.
  void release_large();
  // The arena of compiles (the caller holds g_compile_lock).
  static CompileArena& for_compiles();

 private:
  void* do_allocate(size_t bytes, size_t align) override;
  void do_deallocate(void*, size_t, size_t) override {}  // all at reset()
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override {
    return this == &o;
  }

  // Kept between compiles up to this size (a program of some 50,000
  // instructions); a larger compile's chunks go back to the heap.
  static constexpr size_t kKeepBytes = size_t{8} << 20;
  static constexpr size_t kMinChunk = size_t{256} << 10;
  struct Chunk {
    std::unique_ptr<std::byte[]> mem;
    size_t size;
  };
  std::vector<Chunk> chunks_;
  size_t cur_ = 0;   // the chunk allocations come from
  size_t used_ = 0;  // bytes of it handed out
  size_t total_ = 0;
};

class CodePages {
 public:
  // A read+write mapping of at least bytes (a multiple of the page size),
  // its size in *map_size; nullptr if mmap failed (errno set).
  static void* take(size_t bytes, size_t* map_size);
  // Takes back an image's read+exec mapping (unmapped if not kept).
  static void give(void* p, size_t map_size);

 private:
  static constexpr size_t kKeepMappings = 8;
  static constexpr size_t kKeepMaxBytes = size_t{256} << 10;  // per mapping
};

}  // namespace userbpf::vm::jit
