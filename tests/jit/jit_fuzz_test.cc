// Differential fuzzer: random valid programs (ALU of every kind on random
// values, forward and backward jumps, stack and context loads/stores,
// atomics, wild pointers now and then) run on the interpreter and the JIT;
// r0, the error, the fault, the stack (folded into r0) and the context
// bytes must be identical. Bounded to a few seconds for ctest; set
// USERBPF_JIT_FUZZ_ITERS for longer runs.
#include <cstdlib>
#include <cstring>
#include <random>

#include "isa/opcodes.h"
#include "jit_test_util.h"
#include "maps/registry.h"
#include "mem/domain.h"

namespace userbpf::test {
namespace {

using namespace isa;

constexpr int kCtxSize = 64;
constexpr int kStackUsed = 64;

class Gen {
 public:
  // calls: the program also looks up an ARRAY map (map 0, kMapEntries
  // values of kValueSize bytes; the JIT inlines these) or a HASH map with the
  // same keys and value size (map 2; called directly), calls a helper that
  // reads r1-r5 and a subprogram that reads the caller's registers and
  // leaves r1-r5 behind, keeps the context in r9 instead of r1, and folds
  // every register into r0 at the end (so a register write the JIT wrongly
  // drops shows).
  // no_r9: the program never names r9, so the JIT keeps the may_goto
  // budget in r15 (emit.cc, emit_entry).
  explicit Gen(uint64_t seed, bool calls = false, bool no_r9 = false)
      : rng_(seed), calls_(calls), no_r9_(no_r9 && !calls), ctx_reg_(calls ? 9 : 1) {}

  static constexpr uint32_t kMapEntries = 6;
  static constexpr uint32_t kValueSize = 16;
  // Map 1: global data (a one-value ARRAY), accessed at its value plus a
  // register (the JIT checks only the register when it can).
  static constexpr uint32_t kGlobalSize = 64;

  Asm program() {
    Asm a;
    const int body = 8 + pick(40);
    // The context register is never a destination; r0-r9 but it start with
    // random values.
    if (calls_) a.mov64_reg(9, 1);
    for (uint8_t r : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
      if (r != ctx_reg_ && !(no_r9_ && r == 9)) a.ld_imm64(r, value());
    for (int i = 0; i < kStackUsed; i += 8)
      a.stx(kSizeDw, 10, static_cast<uint8_t>(2 + pick(calls_ || no_r9_ ? 7 : 8)), -8 - i);
    const size_t start = a.pc();
    for (int i = 0; i < body; ++i) {
      const size_t remaining = static_cast<size_t>(body - i);
      if (calls_ && pick(8) == 0) {
        call(a, remaining);
      } else {
        insn(a, start, remaining);
      }
    }
    if (calls_) {
      // Fold every register but the context into r0.
      for (uint8_t r = 1; r < 9; ++r) a.alu64_imm(kAluLsh, 0, 3).alu64_reg(kAluXor, 0, r);
    }
    // Fold the used stack into r0, then exit.
    for (int i = 0; i < kStackUsed; i += 8) {
      a.ldx(kSizeDw, 2, 10, -8 - i).alu64_imm(kAluLsh, 0, 5).alu64_reg(kAluXor, 0, 2);
    }
    a.exit();
    if (calls_) {
      // The subprogram: reads the caller's r0 and r6-r8, writes some of r1-r5
      // (never reads r9, the context: its address differs per run).
      a.label("sub");
      for (int i = 0; i < 4; ++i) {
        a.alu64_reg(kAluAdd, static_cast<uint8_t>(pick(6)), static_cast<uint8_t>(pick(9)));
      }
      a.exit();
    }
    return a;
  }

 private:
  uint32_t pick(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  uint8_t data_reg() {
    static constexpr uint8_t kRegs[] = {0, 2, 3, 4, 5, 6, 7, 8, 9};
    static constexpr uint8_t kCallRegs[] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    if (no_r9_) return kRegs[pick(8)];
    return calls_ ? kCallRegs[pick(9)] : kRegs[pick(9)];
  }

  // A map lookup (maybe tested for null, maybe not, then accessed inside or
  // past the value, maybe through a copy), a helper call, a subprogram call,
  // or an access to global data plus a register (mostly masked into range,
  // the register maybe rewritten after the add).
  void call(Asm& a, size_t remaining) {
    switch (pick(4)) {
      case 3: {
        const uint8_t base = static_cast<uint8_t>(6 + pick(3));
        uint8_t idx = data_reg();
        if (idx == base) idx = 0;
        a.ld_map_value(base, 1, pick(kGlobalSize));
        if (pick(3) < 2) a.alu64_imm(kAluAnd, idx, static_cast<int32_t>(kGlobalSize - 1));
        a.alu64_reg(kAluAdd, base, idx);
        if (pick(4) == 0) a.mov64_imm(idx, static_cast<int32_t>(pick(kGlobalSize)));
        if (pick(4) == 0) a.alu64_imm(kAluAdd, base, static_cast<int32_t>(pick(16)) - 8);
        static constexpr uint8_t kSizes[] = {kSizeB, kSizeH, kSizeW, kSizeDw};
        const uint8_t size = kSizes[pick(4)];
        const int16_t off = static_cast<int16_t>(static_cast<int>(pick(24)) - 8);
        if (pick(2)) {
          a.stx(size, base, data_reg(), off);
        } else {
          a.ldx(size, data_reg(), base, off);
        }
        break;
      }
      case 0: {
        // Map 0 (ARRAY, inlined) or map 2 (HASH with the same keys, called
        // directly).
        const int16_t key_off = static_cast<int16_t>(-4 - 4 * static_cast<int>(pick(2)));
        a.st(kSizeW, 10, key_off, static_cast<int32_t>(pick(kMapEntries + 2)));
        a.ld_map(1, pick(2) * 2).mov64_reg(2, 10).alu64_imm(kAluAdd, 2, key_off).call_helper(1);
        const uint32_t test = pick(3);
        if (test < 2) {
          a.jmp_imm(test == 0 ? kJmpJeq : kJmpJne, 0, 0,
                    static_cast<int16_t>(pick(static_cast<uint32_t>(remaining))));
        }
        uint8_t base = 0;
        if (pick(3) == 0) {
          base = static_cast<uint8_t>(6 + pick(3));
          a.mov64_reg(base, 0);
        }
        static constexpr uint8_t kSizes[] = {kSizeB, kSizeH, kSizeW, kSizeDw};
        const uint8_t size = kSizes[pick(4)];
        const int bytes = size_bytes(size);
        int16_t off = static_cast<int16_t>(pick(kValueSize - bytes + 1));
        if (pick(10) == 0) off = static_cast<int16_t>(kValueSize - bytes + 1 + pick(8));
        if (pick(2)) {
          a.st(size, base, off, imm());
        } else {
          a.ldx(size, data_reg(), base, off);
        }
        break;
      }
      case 1:
        a.call_helper(kHelperSum5);
        break;
      default:
        a.call_local("sub");
        break;
    }
  }
  uint64_t value() {
    static constexpr uint64_t kEdge[] = {
        0,  1, 0xffffffffffffffffull, 0x8000000000000000ull, 0x80000000, 0x7fffffff, 0xffffffff, 63,
        64, 32};
    return pick(3) == 0 ? kEdge[pick(10)] : rng_();
  }
  int32_t imm() { return static_cast<int32_t>(pick(4) == 0 ? value() : rng_() % 200 - 100); }

  void insn(Asm& a, size_t start, size_t remaining) {
    const uint32_t k = pick(100);
    const uint8_t d = data_reg();
    if (k < 40) {
      static constexpr uint8_t kOps[] = {kAluAdd, kAluSub, kAluMul, kAluDiv, kAluOr,  kAluAnd,
                                         kAluLsh, kAluRsh, kAluMod, kAluXor, kAluMov, kAluArsh};
      const uint8_t op = kOps[pick(12)];
      const int16_t off = (op == kAluDiv || op == kAluMod) ? static_cast<int16_t>(pick(2)) : 0;
      const uint8_t cls = pick(2) ? kClassAlu64 : kClassAlu;
      if (pick(2)) {
        a.emit(make_insn(cls | kSrcX | op, d, data_reg(), off, 0));
      } else {
        a.emit(make_insn(cls | kSrcK | op, d, 0, off, imm()));
      }
    } else if (k < 46) {
      switch (pick(5)) {
        case 0:
          a.emit(make_insn((pick(2) ? kClassAlu64 : kClassAlu) | kAluNeg, d, 0, 0, 0));
          break;
        case 1: {
          static constexpr int32_t kW[] = {16, 32, 64};
          static constexpr uint8_t kCodes[] = {kClassAlu | kSrcK | kAluEnd,
                                               kClassAlu | kSrcX | kAluEnd,
                                               kClassAlu64 | kSrcK | kAluEnd};
          a.emit(make_insn(kCodes[pick(3)], d, 0, 0, kW[pick(3)]));
          break;
        }
        case 2: {
          static constexpr int16_t kBits[] = {8, 16, 32};
          a.movsx64(d, data_reg(), kBits[pick(3)]);
          break;
        }
        case 3:
          a.movsx32(d, data_reg(), pick(2) ? 8 : 16);
          break;
        default:  // no ld_imm64 in the body: jumps must not land in its second slot
          a.mov64_imm(d, imm());
          break;
      }
    } else if (k < 62) {
      // Conditional jump: forward within the body, or backward (a loop the
      // budget ends).
      static constexpr uint8_t kOps[] = {kJmpJeq,  kJmpJgt, kJmpJge, kJmpJset, kJmpJne, kJmpJsgt,
                                         kJmpJsge, kJmpJlt, kJmpJle, kJmpJslt, kJmpJsle};
      const uint8_t cls = pick(2) ? kClassJmp : kClassJmp32;
      const uint8_t op = kOps[pick(11)];
      int16_t off;
      if (pick(6) == 0 && a.pc() > start) {
        off = -static_cast<int16_t>(1 + pick(static_cast<uint32_t>(a.pc() - start)));
      } else {
        off = static_cast<int16_t>(pick(static_cast<uint32_t>(remaining)));
      }
      if (pick(2)) {
        a.emit(make_insn(cls | kSrcX | op, d, data_reg(), off, 0));
      } else {
        a.emit(make_insn(cls | kSrcK | op, d, 0, off, imm()));
      }
    } else if (k < 86) {
      static constexpr uint8_t kSizes[] = {kSizeB, kSizeH, kSizeW, kSizeDw};
      const uint8_t size = kSizes[pick(4)];
      const int bytes = size_bytes(size);
      const bool stack = pick(2);
      const uint8_t base = stack ? 10 : ctx_reg_;
      int16_t off =
          stack ? static_cast<int16_t>(-bytes - static_cast<int>(pick(kStackUsed - bytes + 1)))
                : static_cast<int16_t>(pick(kCtxSize - bytes + 1));
      if (pick(40) == 0) off = static_cast<int16_t>(off + 64 + pick(600));  // out of bounds
      switch (pick(4)) {
        case 0:
          a.ldx(size, d, base, off);
          break;
        case 1:
          a.ldxsx(size == kSizeDw ? kSizeW : size, d, base, off);
          break;
        case 2:
          a.stx(size, base, data_reg(), off);
          break;
        default:
          a.st(size, base, off, imm());
          break;
      }
    } else if (k < 94) {
      static constexpr int32_t kAtomics[] = {kAtomicAdd,
                                             kAtomicOr,
                                             kAtomicAnd,
                                             kAtomicXor,
                                             kAtomicAdd | kAtomicFetch,
                                             kAtomicOr | kAtomicFetch,
                                             kAtomicAnd | kAtomicFetch,
                                             kAtomicXor | kAtomicFetch,
                                             kAtomicXchg,
                                             kAtomicCmpxchg};
      const uint8_t size = pick(2) ? kSizeDw : kSizeW;
      const int bytes = size_bytes(size);
      const bool stack = pick(2);
      int16_t off =
          stack ? static_cast<int16_t>(-bytes * (1 + static_cast<int>(pick(kStackUsed / bytes))))
                : static_cast<int16_t>(bytes * static_cast<int>(pick(kCtxSize / bytes)));
      if (pick(30) == 0) off = static_cast<int16_t>(off + 1);  // misaligned
      a.atomic(size, kAtomics[pick(10)], stack ? 10 : ctx_reg_, data_reg(), off);
    } else if (k < 97) {
      // A load through a data register: a wild pointer (the run must stop
      // with the same fault on both engines).
      a.ldx(kSizeB, data_reg(), data_reg(), static_cast<int16_t>(pick(16)));
    } else {
      a.may_goto(static_cast<int16_t>(pick(static_cast<uint32_t>(remaining))));
    }
  }

  std::mt19937_64 rng_;
  bool calls_;
  bool no_r9_;
  uint8_t ctx_reg_;
};

TEST(JitFuzz, RandomProgramsMatchTheInterpreter) {
  int iters = 20000;
  if (const char* e = std::getenv("USERBPF_JIT_FUZZ_ITERS")) iters = std::atoi(e);
  uint64_t seed = 0x5eed;
  if (const char* e = std::getenv("USERBPF_JIT_FUZZ_SEED")) seed = std::strtoull(e, nullptr, 0);
  int ran = 0, stopped = 0;
  for (int i = 0; i < iters; ++i) {
    Gen g(seed + static_cast<uint64_t>(i), false, i % 2 == 1);
    Asm a = g.program();
    TestProg t(a);
    ASSERT_TRUE(t.prepared.ok()) << "seed " << seed + i << ": " << t.prepared.error().message;
    std::vector<uint8_t> ctx(kCtxSize);
    for (int b = 0; b < kCtxSize; ++b) ctx[b] = static_cast<uint8_t>(b * 73 + i);
    const std::string what = "seed " + std::to_string(seed + i);
    // Wild addresses may be stack or context copies: those differ per run,
    // so compare messages without the address part.
    EngineRun r = expect_same(t.prog, ctx, 20000, what, false);
    r.ok ? ++ran : ++stopped;
    if (::testing::Test::HasFailure()) break;
  }
  std::printf("differential: %d programs, %d ran to exit, %d stopped\n", iters, ran, stopped);
  EXPECT_GT(ran, iters / 10);
  EXPECT_GT(stopped, 0);
}

// The same with map lookups (inlined by the JIT: null tests folded into the
// lookup, grants skipped for values the facts follow), helper and subprogram
// calls, and every register folded into r0, which checks the JIT's register
// liveness: a write it drops must be one nothing reads.
TEST(JitFuzz, RandomProgramsWithCallsMatchTheInterpreter) {
  int iters = 5000;
  if (const char* e = std::getenv("USERBPF_JIT_FUZZ_ITERS")) iters = std::atoi(e);
  uint64_t seed = 0xca11;
  if (const char* e = std::getenv("USERBPF_JIT_FUZZ_SEED")) seed = std::strtoull(e, nullptr, 0);
  maps::MapAttr attr;
  attr.type = static_cast<uint32_t>(maps::MapType::kARRAY);
  attr.key_size = 4;
  attr.value_size = Gen::kValueSize;
  attr.max_entries = Gen::kMapEntries;
  Result<maps::Map*> m = maps::create_map(attr);
  ASSERT_TRUE(m.ok()) << m.error().message;
  attr.value_size = Gen::kGlobalSize;
  attr.max_entries = 1;
  Result<maps::Map*> gm = maps::create_map(attr);
  ASSERT_TRUE(gm.ok()) << gm.error().message;
  attr.type = static_cast<uint32_t>(maps::MapType::kHASH);
  attr.value_size = Gen::kValueSize;
  attr.max_entries = Gen::kMapEntries;
  Result<maps::Map*> hm = maps::create_map(attr);
  ASSERT_TRUE(hm.ok()) << hm.error().message;
  const uint32_t zero = 0;
  auto* global = static_cast<uint8_t*>(gm.value()->ops->lookup_elem(gm.value(), &zero));
  const uint8_t zeros[Gen::kValueSize] = {};
  for (uint32_t k = 0; k < Gen::kMapEntries; ++k) {
    ASSERT_EQ(hm.value()->ops->update_elem(hm.value(), &k, zeros, 0), 0);
  }
  // Values cleared in place: a folded value pointer must be the same on
  // both engines (an update would move the hash values).
  auto clear = [&] {
    mem::SlotGuard slot(mem::default_mem_domain().slots);
    for (uint32_t k = 0; k < Gen::kMapEntries; ++k) {
      std::memset(m.value()->ops->lookup_elem(m.value(), &k), 0, Gen::kValueSize);
      std::memset(hm.value()->ops->lookup_elem(hm.value(), &k), 0, Gen::kValueSize);
    }
    std::memset(global, 0, Gen::kGlobalSize);
  };
  int ran = 0, stopped = 0, invalid = 0;
  for (int i = 0; i < iters; ++i) {
    Gen g(seed + static_cast<uint64_t>(i), true);
    Asm a = g.program();
    TestProg t(a, {m.value(), gm.value(), hm.value()});
    // A random forward jump may land in an ld_imm64's second slot.
    if (!t.prepared.ok()) {
      ++invalid;
      continue;
    }
    std::vector<uint8_t> ctx(kCtxSize);
    for (int b = 0; b < kCtxSize; ++b) ctx[b] = static_cast<uint8_t>(b * 73 + i);
    const std::string what = "seed " + std::to_string(seed + i);
    // Each engine from cleared values; expect_same's checks, values too.
    auto values = [&] {
      std::vector<uint8_t> out;
      for (uint32_t k = 0; k < Gen::kMapEntries; ++k) {
        const auto* v = static_cast<const uint8_t*>(m.value()->ops->lookup_elem(m.value(), &k));
        out.insert(out.end(), v, v + Gen::kValueSize);
      }
      out.insert(out.end(), global, global + Gen::kGlobalSize);
      for (uint32_t k = 0; k < Gen::kMapEntries; ++k) {
        uint8_t v[Gen::kValueSize];
        EXPECT_EQ(hm.value()->ops->lookup_elem_copy(hm.value(), &k, v, 0), 0);
        out.insert(out.end(), v, v + Gen::kValueSize);
      }
      return out;
    };
    clear();
    const EngineRun in = run_engine(t.prog, false, ctx, 20000);
    const std::vector<uint8_t> in_values = values();
    clear();
    const EngineRun r = run_engine(t.prog, true, ctx, 20000);
    EXPECT_EQ(in.ok, r.ok) << what << "\ninterp: " << in.message << "\njit: " << r.message;
    EXPECT_EQ(in.r0, r.r0) << what;
    EXPECT_EQ(in.err, r.err) << what;
    EXPECT_EQ(in.message.substr(0, in.message.rfind(" at ")),
              r.message.substr(0, r.message.rfind(" at ")))
        << what;
    EXPECT_EQ(in.fault.pc, r.fault.pc) << what;
    if (in.ok) EXPECT_EQ(in.budget_left, r.budget_left) << what;
    EXPECT_EQ(in.ctx, r.ctx) << what;
    EXPECT_EQ(in_values, values()) << what;
    r.ok ? ++ran : ++stopped;
    if (::testing::Test::HasFailure()) break;
  }
  m.value()->ops->free(m.value());
  gm.value()->ops->free(gm.value());
  hm.value()->ops->free(hm.value());
  std::printf("differential with calls: %d programs, %d ran to exit, %d stopped, %d invalid\n",
              iters, ran, stopped, invalid);
  EXPECT_GT(ran, iters / 10);
  EXPECT_GT(stopped, 0);
  EXPECT_LT(invalid, iters / 4);
}

}  // namespace
}  // namespace userbpf::test
