// The compile's memory (compile_mem.h): the arena hands out aligned,
// disjoint memory and reuses it after reset; code pages come back
// read+write and large ones are unmapped when given back.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <sys/mman.h>

#include "vm/jit/x86_64/compile_mem.h"

namespace userbpf::vm::jit {
namespace {

TEST(CompileArena, AllocationsAreAlignedDisjointAndReusedAfterReset) {
  CompileArena a;
  struct Block {
    uint8_t* p;
    size_t n;
  };
  std::vector<Block> blocks;
  // Sizes past the first chunk (256 KiB) force more chunks.
  const size_t sizes[] = {1, 7, 64, 100, 4096, 300000, 3, 1 << 20, 24};
  const size_t aligns[] = {1, 8, 64, 16, 4096, 8, 2, 64, 8};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    auto* p = static_cast<uint8_t*>(a.allocate(sizes[i], aligns[i]));
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % aligns[i], 0u) << i;
    std::memset(p, static_cast<int>(i + 1), sizes[i]);
    blocks.push_back(Block{p, sizes[i]});
  }
  // Each block still holds its own pattern: no two overlap.
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (size_t j = 0; j < blocks[i].n; ++j) {
      ASSERT_EQ(blocks[i].p[j], static_cast<uint8_t>(i + 1)) << "block " << i << " byte " << j;
    }
  }
  // After reset the chunks were merged into one that holds the same
  // sequence: the first allocation is at its start, the rest follow in it.
  a.reset();
  auto* first = static_cast<uint8_t*>(a.allocate(sizes[0], aligns[0]));
  uint8_t* prev = first;
  for (size_t i = 1; i < std::size(sizes); ++i) {
    auto* p = static_cast<uint8_t*>(a.allocate(sizes[i], aligns[i]));
    ASSERT_GT(p, prev) << i;
    ASSERT_LT(static_cast<size_t>(p - first), size_t{4} << 20) << i;  // same chunk
    prev = p;
  }
  a.reset();
  EXPECT_EQ(a.allocate(sizes[0], aligns[0]), first);  // kept for the next compile
}

TEST(CodePages, TakenPagesAreWritableAndLargeOnesAreUnmappedOnGive) {
  size_t got = 0;
  auto* p = static_cast<uint8_t*>(CodePages::take(4096, &got));
  ASSERT_NE(p, nullptr);
  ASSERT_GE(got, 4096u);
  std::memset(p, 0xcc, got);  // writable (a fault here fails the test run)
  ASSERT_EQ(mprotect(p, got, PROT_READ | PROT_EXEC), 0);
  CodePages::give(p, got);

  // A mapping past what is kept goes back to the kernel.
  const size_t big = size_t{1} << 20;
  void* q = CodePages::take(big, &got);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(got, big);
  CodePages::give(q, got);
  errno = 0;
  EXPECT_EQ(msync(q, big, MS_ASYNC), -1);
  EXPECT_EQ(errno, ENOMEM);  // not mapped any more
}

}  // namespace
}  // namespace userbpf::vm::jit
