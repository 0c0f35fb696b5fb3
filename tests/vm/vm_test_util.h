// Test scaffolding for the VM: a fake array-like map over a plain buffer, fake
// helper protos (the real helpers live in src/helpers), and a one-call
// "assemble, prepare, run" wrapper.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "isa/asm.h"
#include "vm/program.h"
#include "vm/run_context.h"

namespace userbpf::test {

// A map whose memory is one buffer of max_entries values; access_ok covers it.
struct FakeMap : maps::Map {
  std::vector<uint8_t> buf;
};

inline bool fake_access_ok(const maps::Map* m, uintptr_t addr, size_t size, bool) {
  const auto* f = static_cast<const FakeMap*>(m);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(f->buf.data());
  return addr >= lo && addr - lo <= f->buf.size() && size <= f->buf.size() - (addr - lo);
}
inline void* fake_direct_value(maps::Map* m) {
  return static_cast<FakeMap*>(m)->buf.data();
}
inline void* fake_lookup(maps::Map* m, const void* key) {
  auto* f = static_cast<FakeMap*>(m);
  uint32_t idx;
  std::memcpy(&idx, key, 4);
  if (idx >= f->attr.max_entries) return nullptr;
  return f->buf.data() + static_cast<size_t>(idx) * f->attr.value_size;
}

inline const maps::MapOps kFakeMapOps = {
    .lookup_elem = fake_lookup,
    .access_ok = fake_access_ok,
    .direct_value_addr = fake_direct_value,
};

inline std::unique_ptr<FakeMap> make_fake_map(uint32_t value_size, uint32_t max_entries,
                                              const char* name = "fake") {
  auto m = std::make_unique<FakeMap>();
  m->ops = &kFakeMapOps;
  m->attr.type = 2;
  m->attr.key_size = 4;
  m->attr.value_size = value_size;
  m->attr.max_entries = max_entries;
  m->attr.name = name;
  m->buf.assign(static_cast<size_t>(value_size) * max_entries, 0);
  return m;
}

// Fake helper ids.
enum FakeHelper : int32_t {
  kHelperLookup = 1,    // (map, key) -> value or 0
  kHelperSum5 = 2,      // r1 + ... + r5
  kHelperFill = 3,      // (uninit mem, size): fills with 0xab, returns size
  kHelperStrlen = 4,    // (const str) -> length
  kHelperLoop = 5,      // (nr, callback, ctx): calls callback(i, ctx) nr times, sum of r0
  kHelperCtx = 6,       // (ctx) -> first byte of ctx
  kHelperScratch = 7,   // () -> 16 bytes of scratch memory (kMemOrNull)
  kHelperFixed = 8,     // (fixed 8-byte mem): writes 0x1122334455667788
  kHelperSleepy = 9,    // sleepable only
  kHelperReadMem = 10,  // (mem, size or zero) -> sum of bytes
  kHelperUpdate = 11,   // (map, key, value, flags): copies value in
  kHelperRecurse = 12,  // (callback): calls it once with (depth) and returns its r0
};

const vm::HelperProto* const* fake_helper_table();
extern const vm::HelperProto kFakeKfuncAdd;  // kfunc: r1 + r2
// Scratch buffer handed out by kHelperScratch.
uint8_t* fake_scratch();

// The engine TestProg runs on: the interpreter unless a test binary sets it
// (tests/jit runs these same tests on the JIT).
inline Result<uint64_t> (*g_test_engine)(vm::Program&, vm::RunContext&) = nullptr;

struct RunOutcome {
  bool ok = false;
  uint64_t r0 = 0;
  Error error;
  vm::Fault fault;
  uint64_t budget_left = 0;
};

// Holds a program built from an Asm, prepared, ready to run several times.
struct TestProg {
  vm::Program prog;
  Status prepared;

  explicit TestProg(const Asm& a, std::vector<maps::Map*> maps = {}) {
    prog.name = "test";
    prog.insns = a.build();
    prog.maps = std::move(maps);
    prog.helpers = fake_helper_table();
    prog.kfuncs = {&kFakeKfuncAdd};
    prepared = vm::prepare_program(prog);
  }

  RunOutcome run(void* ctx = nullptr, size_t ctx_size = 0, bool ctx_writable = true,
                 uint64_t budget = 1ull << 32) {
    vm::RunContext rc;
    rc.ctx = ctx;
    rc.ctx_size = ctx_size;
    rc.ctx_writable = ctx_writable;
    rc.insn_budget = budget;
    return run_with(rc);
  }

  RunOutcome run_with(vm::RunContext& rc) {
    RunOutcome out;
    Result<uint64_t> r = g_test_engine ? g_test_engine(prog, rc) : vm::interpret(prog, rc);
    out.ok = r.ok();
    if (r.ok()) {
      out.r0 = r.value();
    } else {
      out.error = r.error();
    }
    out.fault = rc.fault;
    out.budget_left = rc.insn_budget;
    return out;
  }
};

// Assembles a, prepares and runs it with no context; expects success.
inline uint64_t run_r0(const Asm& a) {
  TestProg p(a);
  EXPECT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  if (!p.prepared.ok()) return 0xdead;
  RunOutcome o = p.run();
  EXPECT_TRUE(o.ok) << o.error.message;
  return o.r0;
}

}  // namespace userbpf::test
