// Test scaffolding for calling helpers natively: a RunContext made current
// with vm::RunScope, a PrintSink that captures lines, and a fake engine whose
// call_fn runs a C++ lambda in place of a BPF callback.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "vm/run_context.h"

namespace userbpf::helpers::testing {

inline uint64_t u(const void* p) {
  return reinterpret_cast<uintptr_t>(p);
}
inline int64_t s(uint64_t v) {
  return static_cast<int64_t>(v);
}

struct CapturedPrint {
  std::vector<std::string> lines;
  static void write(void* user, const char* data, size_t len) {
    static_cast<CapturedPrint*>(user)->lines.emplace_back(data, len);
  }
};

// Callback(fn, a1..a5) -> r0, standing in for the BPF function fn.
using FakeCallback = std::function<uint64_t(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3,
                                            uint64_t a4, uint64_t a5)>;

// A current run with captured output and a fake engine. Lives on the stack
// of the test like a real run.
class TestRun {
 public:
  TestRun() {
    rc.print = vm::PrintSink{&CapturedPrint::write, &printed};
    rc.call_fn = &call_fn;
    rc.engine_state = this;
    scope_.emplace(rc);
  }
  TestRun(const TestRun&) = delete;
  TestRun& operator=(const TestRun&) = delete;

  vm::RunContext rc;
  CapturedPrint printed;
  FakeCallback callback;
  int calls = 0;

 private:
  static uint64_t call_fn(vm::RunContext* rc, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3,
                          uint64_t a4, uint64_t a5) {
    auto* self = static_cast<TestRun*>(rc->engine_state);
    self->calls++;
    return self->callback ? self->callback(fn, a1, a2, a3, a4, a5) : 0;
  }

  std::optional<vm::RunScope> scope_;  // last member: leaves the run first
};

}  // namespace userbpf::helpers::testing
