// Loop plans (emit_facts.cc find_loop_plans): constants hoisted out of
// simple loops into registers the loop does not use, and the budget of
// counted loops charged once at their entry. Either way the JIT must behave
// exactly like the interpreter: results, registers live across the loop,
// memory, the budget left, and where a run whose budget runs out faults
// (with what it stored until then).
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "isa/opcodes.h"
#include "jit_test_util.h"
#include "maps/registry.h"

namespace userbpf::test {
namespace {

using namespace isa;

// One ARRAY map of 1 value of `bytes` bytes: the program's global data.
MapPtr make_global(uint32_t bytes) {
  maps::MapAttr attr;
  attr.type = static_cast<uint32_t>(maps::MapType::kARRAY);
  attr.key_size = 4;
  attr.value_size = bytes;
  attr.max_entries = 1;
  Result<maps::Map*> m = maps::create_map(attr);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  return MapPtr(m.ok() ? m.value() : nullptr);
}

uint8_t* value(maps::Map* m) {
  uint32_t k = 0;
  return static_cast<uint8_t*>(m->ops->lookup_elem(m, &k));
}

// g's words 0..7 hold 1..8, the rest 0.
void fill(maps::Map* g) {
  std::memset(value(g), 0, g->attr.value_size);
  auto* w = reinterpret_cast<uint64_t*>(value(g));
  for (int i = 0; i < 8; ++i) w[i] = static_cast<uint64_t>(i + 1);
}

struct Both {
  EngineRun interp, jit;
  std::vector<uint8_t> interp_mem, jit_mem;
};

// Runs prog on both engines with the budget, g filled before each run.
Both run_both(TestProg& t, maps::Map* g, uint64_t budget) {
  Both b;
  fill(g);
  b.interp = run_engine(t.prog, false, {}, budget);
  b.interp_mem.assign(value(g), value(g) + g->attr.value_size);
  fill(g);
  b.jit = run_engine(t.prog, true, {}, budget);
  b.jit_mem.assign(value(g), value(g) + g->attr.value_size);
  EXPECT_NE(t.prog.jit.load(), nullptr);
  return b;
}

// Same outcome, budget left, fault and memory on both engines.
void expect_same(const Both& b, const std::string& what) {
  EXPECT_EQ(b.interp.ok, b.jit.ok)
      << what << "\ninterp: " << b.interp.message << "\njit: " << b.jit.message;
  EXPECT_EQ(b.interp.r0, b.jit.r0) << what;
  EXPECT_EQ(b.interp.err, b.jit.err) << what;
  EXPECT_EQ(b.interp.message, b.jit.message) << what;
  EXPECT_EQ(b.interp.fault.pc, b.jit.fault.pc) << what;
  // After a fault the interpreter leaves the budget as of its last call;
  // only a completed run defines it.
  if (b.interp.ok) EXPECT_EQ(b.interp.budget_left, b.jit.budget_left) << what;
  EXPECT_EQ(b.interp_mem, b.jit_mem) << what;
}

// The copy loop of the benchmarks: words 0..7 of g copied to words 8..15,
// through two constants (g + 0 and g + 64) added to the counter r2. Before
// it, r0, r4, r5 and r7 get values read after it, so only r8 and r9 are
// free for the constants: taking a register live across the loop changes
// the result. `enter` sets r2 (and may jump to "head").
Asm copy_loop(const std::function<void(Asm&)>& enter) {
  Asm a;
  a.mov64_imm(0, 1000).mov64_imm(4, 200).mov64_imm(5, 30).mov64_imm(7, 4);
  enter(a);
  a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
  a.ld_map_value(6, 0, 64).alu64_reg(kAluAdd, 6, 2).stx(kSizeDw, 6, 3, 0);
  a.alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJeq, 2, 64, "out").ja("head");
  a.label("out").alu64_reg(kAluAdd, 0, 4).alu64_reg(kAluAdd, 0, 5).alu64_reg(kAluAdd, 0, 7);
  a.ld_map_value(1, 0, 120).ldx(kSizeDw, 1, 1, 0).alu64_reg(kAluAdd, 0, 1).exit();
  return a;
}

// The loop's budget: 7 back edges of 11 instruction slots each (head to
// `goto head`).
constexpr uint64_t kCopyCharge = 7 * 11;

TEST(JitLoopPlan, HoistedConstantsKeepLiveRegistersAndChargeAtEntry) {
  MapPtr g = make_global(128);
  const std::function<void(Asm&)> entries[] = {
      [](Asm& a) { a.mov64_imm(2, 0); },                                    // fallen into
      [](Asm& a) { a.mov64_imm(2, 0).ja("head").mov64_imm(0, 0).exit(); },  // jumped into
  };
  for (size_t e = 0; e < std::size(entries); ++e) {
    TestProg t(copy_loop(entries[e]), {g.get()});
    ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
    Both b = run_both(t, g.get(), 1ull << 32);
    expect_same(b, "entry " + std::to_string(e));
    EXPECT_TRUE(b.jit.ok) << b.jit.message;
    EXPECT_EQ(b.jit.r0, 1000u + 200 + 30 + 4 + 8);  // word 15 is word 7's 8
    EXPECT_EQ((1ull << 32) - b.jit.budget_left, kCopyCharge);
    const vm::JitLoopStats st = vm::jit_loop_stats(t.prog);
    EXPECT_EQ(st.hoisted_consts, 2u) << "entry " << e;
    EXPECT_EQ(st.charged_at_entry, 1u) << "entry " << e;
  }
}

// Every budget around what the loop needs: enough runs it whole; one less
// faults at the back edge where the interpreter's runs out, with the words
// copied until then in memory.
TEST(JitLoopPlan, ShortBudgetRunsTheChargedCopyAndFaultsLikeTheInterpreter) {
  MapPtr g = make_global(128);
  TestProg t(copy_loop([](Asm& a) { a.mov64_imm(2, 0); }), {g.get()});
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  ASSERT_EQ(vm::jit_loop_stats(t.prog).charged_at_entry, 0u);  // not compiled yet
  int faults = 0;
  for (uint64_t budget = 0; budget <= kCopyCharge + 3; ++budget) {
    Both b = run_both(t, g.get(), budget);
    expect_same(b, "budget " + std::to_string(budget));
    EXPECT_EQ(b.jit.ok, budget >= kCopyCharge) << "budget " << budget;
    if (!b.jit.ok) {
      ++faults;
      EXPECT_EQ(b.jit.err, ELOOP) << b.jit.message;
    }
  }
  EXPECT_EQ(faults, static_cast<int>(kCopyCharge));
  EXPECT_EQ(vm::jit_loop_stats(t.prog).charged_at_entry, 1u);
}

// Loops whose budget must stay charged per back edge (the number of back
// edges is not known at entry, or the body can leave early or fault),
// each run with budgets around what it needs: the same everywhere.
TEST(JitLoopPlan, LoopsWithoutAKnownRunKeepTheirPerBackEdgeCharge) {
  MapPtr g = make_global(128);
  struct Case {
    const char* what;
    std::function<void(Asm&)> build;
  };
  // Each sums words of g into r0 with the counter r2, over [0, 64).
  const Case cases[] = {
      {"counter loaded, not a constant",
       [](Asm& a) {
         a.mov64_imm(0, 0).st(kSizeDw, 10, -8, 0).ldx(kSizeDw, 2, 10, -8);
         a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
         a.alu64_reg(kAluAdd, 0, 3).alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJne, 2, 64, "head");
         a.exit();
       }},
      {"leaves early",
       [](Asm& a) {
         a.mov64_imm(0, 0).mov64_imm(2, 0);
         a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
         a.jmp_imm(kJmpJeq, 3, 5, "out").alu64_reg(kAluAdd, 0, 3);
         a.alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJne, 2, 64, "head");
         a.label("out").exit();
       }},
      {"an access it checks (may fault)",
       [](Asm& a) {
         a.mov64_imm(0, 0).mov64_imm(2, 0).ld_map_value(7, 0, 0);
         a.label("head").ldx(kSizeDw, 3, 7, 0).alu64_reg(kAluAdd, 0, 3);
         a.alu64_imm(kAluAdd, 7, 8).alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJne, 2, 64, "head");
         a.exit();
       }},
      {"`!=` that never meets its end",
       [](Asm& a) {
         a.mov64_imm(0, 0).mov64_imm(2, 4);
         a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeB, 3, 1, 0);
         a.alu64_reg(kAluAdd, 0, 3).alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJne, 2, 64, "head");
         a.exit();
       }},
      {"32-bit counter that wraps (0xfffffff0, 0xfffffff8, 0, 8)",
       [](Asm& a) {
         a.mov64_imm(0, 0).mov32_imm(2, -16);
         a.label("head").alu64_imm(kAluAdd, 0, 1).alu32_imm(kAluAdd, 2, 8);
         a.jmp32_imm(kJmpJne, 2, 8, "head").exit();
       }},
  };
  for (const Case& c : cases) {
    Asm a;
    c.build(a);
    TestProg t(a, {g.get()});
    ASSERT_TRUE(t.prepared.ok()) << c.what << ": " << t.prepared.error().message;
    Both full = run_both(t, g.get(), 1ull << 32);
    expect_same(full, c.what);
    const uint64_t needed = (1ull << 32) - full.jit.budget_left;
    EXPECT_EQ(vm::jit_loop_stats(t.prog).charged_at_entry, 0u) << c.what;
    for (uint64_t budget = needed > 30 ? needed - 30 : 0; budget <= needed + 2; ++budget) {
      expect_same(run_both(t, g.get(), budget),
                  std::string(c.what) + ", budget " + std::to_string(budget));
    }
  }
}

// The sieve's shape: a loop whose counter moves by a register, with
// may_goto inside, and a masked index: its constant is hoisted, its budget
// stays per back edge.
TEST(JitLoopPlan, ConstantsOfLoopsWithoutACounterAreHoistedToo) {
  MapPtr g = make_global(128);
  Asm a;
  a.mov64_imm(0, 7).mov64_imm(2, 1).mov64_imm(6, 3);
  a.label("head").may_goto("out").mov64_reg(3, 2).alu32_imm(kAluAnd, 3, 127);
  a.ld_map_value(4, 0, 0).alu64_reg(kAluAdd, 4, 3).st(kSizeB, 4, 0, 1);
  a.alu32_reg(kAluAdd, 2, 6).jmp32_imm(kJmpJlt, 2, 1000, "head");
  a.label("out").alu64_reg(kAluAdd, 0, 2).exit();
  TestProg t(a, {g.get()});
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  Both b = run_both(t, g.get(), 1ull << 32);
  expect_same(b, "full budget");
  EXPECT_TRUE(b.jit.ok) << b.jit.message;
  EXPECT_EQ(vm::jit_loop_stats(t.prog).hoisted_consts, 1u);
  EXPECT_EQ(vm::jit_loop_stats(t.prog).charged_at_entry, 0u);
  for (uint64_t budget = 0; budget < 40; ++budget) {
    expect_same(run_both(t, g.get(), budget), "budget " + std::to_string(budget));
  }
}

// No hoisting where the body's code takes x86 registers of its own, nor
// where the constant is needed after the access.
TEST(JitLoopPlan, ConstantsStayWhereTheLoopNeedsThemInTheirRegister) {
  MapPtr g = make_global(128);
  struct Case {
    const char* what;
    std::function<void(Asm&)> body;  // r1 = g + r2 is loaded from; r0 accumulates
  };
  const Case cases[] = {
      {"division in the body",
       [](Asm& a) {
         a.ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
         a.alu64_imm(kAluDiv, 3, 3).alu64_reg(kAluAdd, 0, 3);
       }},
      {"shift by a register in the body",
       [](Asm& a) {
         a.ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
         a.alu64_reg(kAluLsh, 3, 3).alu64_reg(kAluAdd, 0, 3);
       }},
      {"the address is read again",
       [](Asm& a) {
         a.ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(kSizeDw, 3, 1, 0);
         a.alu64_reg(kAluAdd, 0, 3).alu64_reg(kAluAdd, 0, 1);
       }},
  };
  for (const Case& c : cases) {
    Asm a;
    a.mov64_imm(0, 0).mov64_imm(2, 0);
    a.label("head");
    c.body(a);
    a.alu64_imm(kAluAdd, 2, 8).jmp_imm(kJmpJne, 2, 64, "head").exit();
    TestProg t(a, {g.get()});
    ASSERT_TRUE(t.prepared.ok()) << c.what << ": " << t.prepared.error().message;
    Both b = run_both(t, g.get(), 1ull << 32);
    expect_same(b, c.what);
    EXPECT_TRUE(b.jit.ok) << c.what << ": " << b.jit.message;
    EXPECT_EQ(vm::jit_loop_stats(t.prog).hoisted_consts, 0u) << c.what;
  }
}

// `dst -= src` or `dst += src` then `dst += imm` or `dst -= imm` of the same
// width is emitted off dst's dependency chain (emit_alu.cc
// emit_reassociated): the same value modulo 2^width, at every boundary.
TEST(JitReassociate, AddSubPairsMatchTheInterpreterAtEveryWidth) {
  const uint64_t values[] = {
      0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 0x8000000000000000ull, ~0ull};
  const int32_t imms[] = {0, 1, -1, INT32_MAX, INT32_MIN};
  int runs = 0;
  for (const bool is64 : {false, true}) {
    for (const uint8_t first : {kAluAdd, kAluSub}) {
      for (const uint8_t second : {kAluAdd, kAluSub}) {
        for (const uint64_t d : values) {
          for (const uint64_t s : values) {
            for (const int32_t k : imms) {
              Asm a;
              a.ld_imm64(0, d).ld_imm64(3, s);
              is64 ? a.alu64_reg(first, 0, 3).alu64_imm(second, 0, k)
                   : a.alu32_reg(first, 0, 3).alu32_imm(second, 0, k);
              a.exit();
              TestProg t(a);
              ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
              EngineRun j = test::expect_same(t.prog);
              uint64_t want = first == kAluAdd ? d + s : d - s;
              want = second == kAluAdd ? want + static_cast<uint64_t>(int64_t{k})
                                       : want - static_cast<uint64_t>(int64_t{k});
              if (!is64) want = static_cast<uint32_t>(want);
              ASSERT_EQ(j.r0, want) << is64 << " " << int{first} << " " << int{second} << " " << d
                                    << " " << s << " " << k;
              ++runs;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(runs, 2 * 2 * 2 * 8 * 8 * 5);
}

// A jump landing between the two must see dst as the first left it: no
// reassociation there.
TEST(JitReassociate, NotAcrossAJumpTarget) {
  for (const int32_t jump : {0, 1}) {
    Asm a;
    a.mov64_imm(0, 100).mov64_imm(3, 30).mov64_imm(5, jump);
    a.jmp_imm(kJmpJeq, 5, 1, "mid").alu64_reg(kAluSub, 0, 3).label("mid").alu64_imm(kAluAdd, 0, 7);
    a.exit();
    TestProg t(a);
    ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
    EngineRun j = test::expect_same(t.prog);
    EXPECT_EQ(j.r0, jump ? 107u : 77u);
  }
}

// Array sums (emit_facts.cc find_reduction, emit.cc emit_reduction): the
// loop `acc += *(uSZ *)(g + i + off); i += SZ` runs as vector code (AVX2
// where the CPU has it, and SSE2 with JitOptions::no_avx2): every element
// size, accumulator width, trip count around the vector blocks, unaligned
// starts, the last element and the counter read after the loop, both loop
// shapes, and every budget around what the loop needs.
struct Reduction {
  int size;  // 1, 4 or 8
  bool acc32, tmp_live, exit_test;
  uint32_t init, trips;
  int16_t off;
  bool sub = false;  // acc -= element
  int32_t k = 0;     // then acc += k (if not 0)
};

Asm reduction_loop(const Reduction& r) {
  const uint8_t size = r.size == 1 ? kSizeB : r.size == 4 ? kSizeW : kSizeDw;
  const int32_t end = static_cast<int32_t>(r.init + r.trips * r.size);
  Asm a;
  a.mov64_imm(0, 5).mov64_imm(2, static_cast<int32_t>(r.init));
  a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2).ldx(size, 3, 1, r.off);
  const uint8_t op = r.sub ? kAluSub : kAluAdd;
  r.acc32 ? a.alu32_reg(op, 0, 3) : a.alu64_reg(op, 0, 3);
  if (r.k != 0) r.acc32 ? a.alu32_imm(kAluAdd, 0, r.k) : a.alu64_imm(kAluAdd, 0, r.k);
  a.alu64_imm(kAluAdd, 2, r.size);
  r.exit_test ? a.jmp_imm(kJmpJeq, 2, end, "out").ja("head") : a.jmp_imm(kJmpJne, 2, end, "head");
  a.label("out").mov64_reg(4, 2).alu64_imm(kAluLsh, 4, 48).alu64_reg(kAluXor, 0, 4);
  if (r.tmp_live) a.alu64_imm(kAluLsh, 3, 32).alu64_reg(kAluXor, 0, 3);
  a.exit();
  return a;
}

void fill_bytes(maps::Map* g) {
  uint8_t* v = value(g);
  uint32_t x = 0x12345678;
  for (uint32_t i = 0; i < g->attr.value_size; ++i) {
    x = x * 1103515245u + 12345u;
    v[i] = static_cast<uint8_t>(x >> 16);
  }
}

uint64_t reduction_want(const Reduction& r, const uint8_t* v) {
  uint64_t sum = 5, last = 0;
  for (uint32_t i = 0; i < r.trips; ++i) {
    uint64_t e = 0;
    std::memcpy(&e, v + r.init + r.off + i * r.size, static_cast<size_t>(r.size));
    sum = r.sub ? sum - e : sum + e;
    sum += static_cast<uint64_t>(int64_t{r.k});
    last = e;
  }
  if (r.acc32) sum = static_cast<uint32_t>(sum);
  const uint64_t counter = r.init + uint64_t{r.trips} * r.size;
  return sum ^ (counter << 48) ^ (r.tmp_live ? last << 32 : 0);
}

TEST(JitReduction, ArraySumsMatchTheInterpreterOnBothVectorForms) {
  MapPtr g = make_global(512);
  const uint32_t trip_counts[] = {2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100};
  int checked = 0;
  for (const int size : {1, 4, 8}) {
    for (const uint32_t trips : trip_counts) {
      for (const uint32_t init_elems : {0u, 3u}) {
        for (const int16_t off : {int16_t{0}, int16_t{5}}) {
          const uint32_t init = init_elems * static_cast<uint32_t>(size);
          if (init + static_cast<uint32_t>(off) + trips * static_cast<uint32_t>(size) > 512)
            continue;
          for (int flags = 0; flags < 32; ++flags) {
            // Bits 3-4: plain sum; acc -= e, acc += 1 (counting zeros of a 0/1
            // array); acc += e, acc -= 3; acc -= e, acc += INT32_MIN.
            static constexpr int32_t kPerTrip[] = {0, 1, -3, INT32_MIN};
            const Reduction r{
                size, (flags & 1) != 0, (flags & 2) != 0,          (flags & 4) != 0, init, trips,
                off,  (flags & 8) != 0, kPerTrip[(flags >> 3) & 3]};
            const std::string what = "size " + std::to_string(size) + " trips " +
                                     std::to_string(trips) + " init " + std::to_string(init) +
                                     " off " + std::to_string(off) + " flags " +
                                     std::to_string(flags);
            for (const bool no_avx2 : {false, true}) {
              TestProg t(reduction_loop(r), {g.get()});
              ASSERT_TRUE(t.prepared.ok()) << what << ": " << t.prepared.error().message;
              vm::JitOptions opts;
              opts.no_avx2 = no_avx2;
              ASSERT_TRUE(vm::jit_compile(t.prog, opts).ok()) << what;
              EXPECT_EQ(vm::jit_loop_stats(t.prog).vectorized, 1u) << what;
              fill_bytes(g.get());
              EngineRun i = run_engine(t.prog, false, {}, 1ull << 32);
              EngineRun j = run_engine(t.prog, true, {}, 1ull << 32);
              ASSERT_TRUE(i.ok && j.ok) << what << ": " << i.message << " / " << j.message;
              ASSERT_EQ(i.r0, reduction_want(r, value(g.get()))) << what;
              ASSERT_EQ(j.r0, i.r0) << what << (no_avx2 ? " (SSE2)" : " (AVX2 if the CPU has it)");
              ASSERT_EQ(j.budget_left, i.budget_left) << what;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 2800);
}

TEST(JitReduction, ShortBudgetRunsTheLoopAndFaultsLikeTheInterpreter) {
  MapPtr g = make_global(512);
  const Reduction r{4, false, true, true, 0, 40, 0};
  TestProg t(reduction_loop(r), {g.get()});
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  const uint64_t need = 39 * 8;  // 39 back edges over 8 instruction slots
  for (uint64_t budget = need - 10; budget <= need + 2; ++budget) {
    Both b = run_both(t, g.get(), budget);
    expect_same(b, "budget " + std::to_string(budget));
    EXPECT_EQ(b.jit.ok, budget >= need) << "budget " << budget;
  }
  EXPECT_EQ(vm::jit_loop_stats(t.prog).vectorized, 1u);
}

// Loops that are not plain sums stay loops.
TEST(JitReduction, OtherBodiesAreNotVectorized) {
  MapPtr g = make_global(512);
  struct Case {
    const char* what;
    std::function<void(Asm&)> body;  // after `r1 = g + r2`; sums into r0
  };
  const Case cases[] = {
      {"signed loads", [](Asm& a) { a.ldxsx(kSizeW, 3, 1, 0).alu64_reg(kAluAdd, 0, 3); }},
      {"mixed widths",
       [](Asm& a) { a.ldx(kSizeW, 3, 1, 0).alu64_reg(kAluSub, 0, 3).alu32_imm(kAluAdd, 0, 1); }},
      {"a product", [](Asm& a) { a.ldx(kSizeW, 3, 1, 0).alu64_reg(kAluMul, 0, 3); }},
      {"another instruction",
       [](Asm& a) { a.ldx(kSizeW, 3, 1, 0).alu64_imm(kAluAnd, 3, 255).alu64_reg(kAluAdd, 0, 3); }},
      {"2-byte elements", [](Asm& a) { a.ldx(kSizeH, 3, 1, 0).alu64_reg(kAluAdd, 0, 3); }},
  };
  for (const Case& c : cases) {
    Asm a;
    a.mov64_imm(0, 0).mov64_imm(2, 0);
    a.label("head").ld_map_value(1, 0, 0).alu64_reg(kAluAdd, 1, 2);
    c.body(a);
    a.alu64_imm(kAluAdd, 2, 4).jmp_imm(kJmpJne, 2, 256, "head").exit();
    TestProg t(a, {g.get()});
    ASSERT_TRUE(t.prepared.ok()) << c.what << ": " << t.prepared.error().message;
    fill_bytes(g.get());
    EngineRun i = run_engine(t.prog, false, {}, 1ull << 32);
    EngineRun j = run_engine(t.prog, true, {}, 1ull << 32);
    EXPECT_TRUE(i.ok && j.ok) << c.what;
    EXPECT_EQ(i.r0, j.r0) << c.what;
    EXPECT_EQ(vm::jit_loop_stats(t.prog).vectorized, 0u) << c.what;
  }
}

}  // namespace
}  // namespace userbpf::test
