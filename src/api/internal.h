// The state behind the public API handles (include/userbpf/userbpf.h): what a
// Runtime, an Object and its Program/Map handles own.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "loader/object.h"
#include "mem/domain.h"
#include "userbpf/userbpf.h"
#include "vm/run_context.h"

namespace userbpf {

namespace internal {

struct RuntimeImpl {
  uint32_t num_cpus = 1;
  vm::PrintSink print;
  // Slots (num_cpus normal ones), RCU, allocators: every map and run of
  // this runtime uses them.
  std::unique_ptr<mem::MemDomain> mem;
};

}  // namespace internal

struct Program::Handle {
  vm::Program* prog = nullptr;
  internal::RuntimeImpl* rt = nullptr;
};

struct Map::Handle {
  // The ENOENT outcomes whose Error is built once (a missing key is an
  // ordinary answer, and the end of every key walk): copying it costs a
  // fraction of formatting it.
  enum NotFound { kLookup, kDelete, kNextKey, kNotFoundOps };

  Handle(maps::Map* m, internal::RuntimeImpl* r);

  maps::Map* map = nullptr;
  internal::RuntimeImpl* rt = nullptr;
  Error not_found[kNotFoundOps];
};

namespace internal {

// Life cycle: Open (spec parsed) -> Loaded (maps created, programs prepared).
struct ObjectImpl {
  RuntimeImpl* rt = nullptr;
  loader::ObjectSpec spec;
  std::unique_ptr<loader::LoadedObject> loaded;
  // Stable handle storage: the public Program/Map values point into these.
  std::deque<Program::Handle> prog_handles;
  std::deque<Map::Handle> map_handles;
};

// The CPU slot a run on this thread uses until CPU slots arrive (issue 3).
uint32_t current_cpu(const RuntimeImpl& rt);

}  // namespace internal
}  // namespace userbpf
