// Where one size class of a MemAlloc keeps its per-slot free lists, for
// callers that resolve the class ahead and inline the fast paths
// (MemAlloc::class_lists, try_alloc_in / try_free_in; the interpreter keeps
// one per fused obj call, vm/program.h). Plain words: copying one is free.
#pragma once

#include <cstdint>

namespace userbpf::mem {

struct ClassLists {
  uintptr_t base = 0;        // slot 0's list of the class
  uintptr_t stride = 0;      // bytes from slot s's list to slot s + 1's
  uintptr_t class_word = 0;  // what an allocated object's header holds
};

}  // namespace userbpf::mem
