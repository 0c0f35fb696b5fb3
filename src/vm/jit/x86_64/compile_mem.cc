#include "vm/jit/x86_64/compile_mem.h"

#include <algorithm>

#include <sys/mman.h>

namespace userbpf::vm::jit {

CompileArena& CompileArena::for_compiles() {
  static CompileArena* arena = new CompileArena();  // never destroyed: no exit-order issues
  return *arena;
}

void CompileArena::reset() {
  if (chunks_.size() > 1 || total_ > kKeepBytes) {
    // The next compile of the same program fits in one chunk.
    const size_t need = total_;
    chunks_.clear();
    total_ = 0;
    if (need <= kKeepBytes) {
      chunks_.push_back(Chunk{std::make_unique<std::byte[]>(need), need});
      total_ = need;
    }
  }
  cur_ = 0;
  used_ = 0;
}

void CompileArena::release_large() {
  if (total_ <= kKeepBytes) return;
  chunks_.clear();
  total_ = 0;
  cur_ = 0;
  used_ = 0;
}

void* CompileArena::do_allocate(size_t bytes, size_t align) {
  while (cur_ < chunks_.size()) {
    Chunk& c = chunks_[cur_];
    const uintptr_t base = reinterpret_cast<uintptr_t>(c.mem.get());
    const uintptr_t at = (base + used_ + align - 1) & ~(uintptr_t{align} - 1);
    if (at + bytes <= base + c.size) {
      used_ = at + bytes - base;
      return reinterpret_cast<void*>(at);
    }
    ++cur_;
    used_ = 0;
  }
  const size_t size = std::max(bytes + align, std::max(kMinChunk, total_));
  chunks_.push_back(Chunk{std::make_unique<std::byte[]>(size), size});
  total_ += size;
  cur_ = chunks_.size() - 1;
  used_ = 0;
  return do_allocate(bytes, align);
}

namespace {

struct Kept {
  void* p;
  size_t size;
};
std::mutex g_pages_mu;
std::vector<Kept>* g_kept = new std::vector<Kept>();  // never destroyed

}  // namespace

void* CodePages::take(size_t bytes, size_t* map_size) {
  {
    std::lock_guard<std::mutex> lock(g_pages_mu);
    // The smallest kept mapping that fits, if not far larger than needed.
    size_t best = g_kept->size();
    for (size_t i = 0; i < g_kept->size(); ++i) {
      const size_t s = (*g_kept)[i].size;
      if (s >= bytes && s <= std::max(4 * bytes, bytes + (size_t{64} << 10)) &&
          (best == g_kept->size() || s < (*g_kept)[best].size)) {
        best = i;
      }
    }
    if (best != g_kept->size()) {
      const Kept k = (*g_kept)[best];
      (*g_kept)[best] = g_kept->back();
      g_kept->pop_back();
      *map_size = k.size;
      return k.p;
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  *map_size = bytes;
  return p;
}

void CodePages::give(void* p, size_t map_size) {
  if (map_size <= kKeepMaxBytes && mprotect(p, map_size, PROT_READ | PROT_WRITE) == 0) {
    std::lock_guard<std::mutex> lock(g_pages_mu);
    if (g_kept->size() < kKeepMappings) {
      g_kept->push_back(Kept{p, map_size});
      return;
    }
  }
  munmap(p, map_size);
}

}  // namespace userbpf::vm::jit
