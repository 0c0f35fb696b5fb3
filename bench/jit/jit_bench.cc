// JIT benchmarks: compile time of a 1,000-instruction program, ns per
// instruction of an ALU loop on the JIT and the interpreter, and ns per
// operation of array lookup, hash lookup (u32 key, 1,024 entries) and hash
// update of an existing key called from a program loop. Prints one line per
// figure (best of 5 rounds); every run's result is checked. `empty`: the
// engine's share of an empty run through a RunLoop (the repeat loop).
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "helpers/registry.h"
#include "maps/registry.h"
#include "vm/jit/jit.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

double now_ns() {
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Best of 5 runs of prog on an engine: ns per run; r0 must equal want.
double time_run(vm::Program& prog, bool jit, uint64_t want) {
  if (jit && !vm::ensure_jit(prog).ok()) return -1;
  double best = 1e18;
  for (int round = 0; round < 5; ++round) {
    vm::RunContext rc;
    const double t0 = now_ns();
    Result<uint64_t> r = jit ? vm::jit_run(prog, rc) : vm::interpret(prog, rc);
    const double t = now_ns() - t0;
    if (!r.ok() || r.value() != want) {
      std::fprintf(stderr, "bad run: %s\n", r.ok() ? "wrong r0" : r.error().message.c_str());
      return -1;
    }
    best = std::min(best, t);
  }
  return best;
}

void bench_compile(int rounds) {
  // 1,000 instructions: ALU of every kind, stack loads/stores, forward jumps.
  std::mt19937 rng(1);
  Asm a;
  a.mov64_imm(0, 0);
  for (uint8_t r = 1; r <= 9; ++r) a.mov64_imm(r, static_cast<int32_t>(rng()));
  while (a.pc() < 999) {
    const uint8_t d = static_cast<uint8_t>(rng() % 10), s = static_cast<uint8_t>(rng() % 10);
    switch (rng() % 6) {
      case 0:
        a.alu64_reg(kAluAdd, d, s);
        break;
      case 1:
        a.alu32_imm(kAluXor, d, static_cast<int32_t>(rng()));
        break;
      case 2:
        a.alu64_reg(kAluDiv, d, s);
        break;
      case 3:
        a.stx(kSizeDw, 10, s, static_cast<int16_t>(-8 * (1 + rng() % 32)));
        break;
      case 4:
        a.ldx(kSizeW, d, 10, static_cast<int16_t>(-8 * (1 + rng() % 32)));
        break;
      default:
        a.jmp_imm(kJmpJgt, d, static_cast<int32_t>(rng() % 100), 1);
        break;
    }
  }
  a.exit();
  double best = 1e18;
  for (int i = 0; i < rounds; ++i) {
    TestProg t(a);
    if (!t.prepared.ok()) {
      std::fprintf(stderr, "prepare: %s\n", t.prepared.error().message.c_str());
      return;
    }
    if (!vm::ensure_jit(t.prog).ok()) return;
    best = std::min(best, static_cast<double>(vm::jit_compile_ns(t.prog)));
  }
  std::printf("jit compile, %zu instructions: %.1f us (best of %d)\n", a.build().size(),
              best / 1000, rounds);
}

void bench_alu() {
  constexpr int32_t kIters = 20'000'000;
  Asm a;
  a.mov64_imm(0, 0).mov64_imm(1, kIters);
  a.label("loop")
      .alu64_reg(kAluAdd, 0, 1)
      .alu64_imm(kAluXor, 0, 0x5a)
      .mov64_reg(2, 0)
      .alu64_imm(kAluAnd, 2, 7)
      .alu64_reg(kAluSub, 0, 2)
      .alu64_imm(kAluSub, 1, 1)
      .jmp_imm(kJmpJne, 1, 0, "loop")
      .exit();
  uint64_t want = 0;
  for (uint64_t r1 = kIters; r1 != 0; --r1) {
    want += r1;
    want ^= 0x5a;
    want -= want & 7;
  }
  TestProg t(a);
  const double insns = 7.0 * kIters + 3;
  std::printf("ALU loop: interpreter %.3f ns/insn, JIT %.3f ns/insn\n",
              time_run(t.prog, false, want) / insns, time_run(t.prog, true, want) / insns);
}

// The engine's share of an empty run (r0 = 1, exit) through a RunLoop, the
// host API's repeat loop without its CPU slot claim: ns per run.
void bench_empty_run() {
  constexpr int kRuns = 2'000'000;
  Asm a;
  a.mov64_imm(0, 1).exit();
  TestProg t(a);
  for (bool jit : {false, true}) {
    if (jit && !vm::ensure_jit(t.prog).ok()) return;
    double best = 1e18;
    for (int round = 0; round < 5; ++round) {
      vm::RunContext rc;
      vm::RunLoop loop;
      if (!(jit ? vm::begin_jit_loop(loop, t.prog, rc) : vm::begin_interp_loop(loop, t.prog, rc))
               .ok()) {
        return;
      }
      const double t0 = now_ns();
      uint64_t sum = 0;
      for (int i = 0; i < kRuns; ++i) {
        Result<uint64_t> r = loop.run();
        sum += r.ok() ? r.value() : 0;
      }
      const double ns = (now_ns() - t0) / kRuns;
      if (sum != kRuns) {
        std::fprintf(stderr, "empty run: wrong r0\n");
        return;
      }
      best = std::min(best, ns);
    }
    std::printf("empty run (RunLoop, no CPU slot): %s %.2f ns/run\n", jit ? "JIT" : "interpreter",
                best);
  }
}

// A program calling helper `id` kIters times on map 0 with key i % keys
// (stack key at r10-4, 8-byte value at r10-16 for updates); r0 = kIters.
void bench_map(const char* what, maps::Map* map, int32_t helper, uint32_t keys) {
  constexpr int32_t kIters = 5'000'000;
  Asm a;
  a.mov64_imm(6, kIters).mov64_imm(7, 0).st(kSizeDw, 10, -16, 1);
  a.label("loop").mov64_reg(1, 6).alu64_imm(kAluMod, 1, static_cast<int32_t>(keys));
  a.stx(kSizeW, 10, 1, -4).ld_map(1, 0).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, -4);
  if (helper == 2) a.mov64_reg(3, 10).alu64_imm(kAluAdd, 3, -16).mov64_imm(4, 0);
  a.call_helper(helper);
  if (helper == 1) {
    a.jmp_imm(kJmpJeq, 0, 0, "next").alu64_imm(kAluAdd, 7, 1);
  } else {
    a.jmp_imm(kJmpJne, 0, 0, "next").alu64_imm(kAluAdd, 7, 1);
  }
  a.label("next").alu64_imm(kAluSub, 6, 1).jmp_imm(kJmpJne, 6, 0, "loop");
  a.mov64_reg(0, 7).exit();
  vm::Program prog;
  prog.name = what;
  prog.insns = a.build();
  prog.maps = {map};
  prog.helpers = helpers::helper_table();
  if (!vm::prepare_program(prog).ok()) {
    std::fprintf(stderr, "%s: prepare failed\n", what);
    return;
  }
  std::printf("%s: interpreter %.2f ns/op, JIT %.2f ns/op (loop included)\n", what,
              time_run(prog, false, kIters) / kIters, time_run(prog, true, kIters) / kIters);
}

void bench_maps() {
  maps::MapAttr arr;
  arr.type = static_cast<uint32_t>(maps::MapType::kARRAY);
  arr.key_size = 4;
  arr.value_size = 8;
  arr.max_entries = 1024;
  arr.name = "arr";
  Result<maps::Map*> am = maps::create_map(arr);
  maps::MapAttr h = arr;
  h.type = static_cast<uint32_t>(maps::MapType::kHASH);
  h.name = "hash";
  Result<maps::Map*> hm = maps::create_map(h);
  if (!am.ok() || !hm.ok()) {
    std::fprintf(stderr, "cannot create maps\n");
    return;
  }
  for (uint32_t k = 0; k < 1024; ++k) {
    uint64_t v = k;
    hm.value()->ops->update_elem(hm.value(), &k, &v, 0);
  }
  bench_map("array lookup", am.value(), 1, 1024);
  bench_map("hash lookup (u32 key, 1024 entries)", hm.value(), 1, 1024);
  bench_map("hash update (existing key)", hm.value(), 2, 1024);
  maps::destroy_map(am.value());
  maps::destroy_map(hm.value());
}

}  // namespace
}  // namespace userbpf::test

// With an argument, only that group runs: compile, alu or maps.
int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (only.empty() || only == "compile") userbpf::test::bench_compile(only.empty() ? 200 : 5000);
  if (only.empty() || only == "alu") userbpf::test::bench_alu();
  if (only.empty() || only == "maps") userbpf::test::bench_maps();
  if (only.empty() || only == "empty") userbpf::test::bench_empty_run();
  return 0;
}
