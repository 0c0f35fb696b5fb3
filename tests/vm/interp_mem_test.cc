// Interpreter memory: loads/stores of every width on stack, context, packet and
// map memory; sign-extending loads; atomics; legacy packet loads; and the
// faults a bad access produces (EFAULT naming program, pc, size, address).
#include <cstring>
#include <thread>

#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

TEST(InterpMem, StackLoadsAndStores) {
  Asm a;
  a.ld_imm64(1, 0x8877665544332211ull)
      .stx(kSizeDw, 10, 1, -8)
      .ldx(kSizeB, 2, 10, -8)    // 0x11
      .ldx(kSizeH, 3, 10, -7)    // 0x3322 (unaligned)
      .ldx(kSizeW, 4, 10, -4)    // 0x88776655
      .st(kSizeW, 10, -16, -1)   // 0xffffffff
      .st(kSizeDw, 10, -24, -2)  // sign-extended imm
      .ldx(kSizeDw, 5, 10, -24)
      .mov64_reg(0, 2)
      .alu64_reg(kAluAdd, 0, 3)
      .alu64_reg(kAluAdd, 0, 4)
      .alu64_reg(kAluAdd, 0, 5)
      .ldx(kSizeW, 6, 10, -16)
      .alu64_reg(kAluAdd, 0, 6)
      .exit();
  EXPECT_EQ(run_r0(a), 0x11ull + 0x3322 + 0x88776655 + static_cast<uint64_t>(-2) + 0xffffffff);
}

TEST(InterpMem, SignExtendingLoads) {
  uint8_t ctx[8] = {0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x80};
  struct {
    uint8_t size;
    int16_t off;
    uint64_t want;
  } cases[] = {
      {kSizeB, 0, 0xffffffffffffff80ull},
      {kSizeH, 2, 0xffffffffffff8000ull},
      {kSizeW, 0, 0xffffffff80000080ull},
      {kSizeW, 4, 0xffffffff80000000ull},
  };
  for (const auto& c : cases) {
    Asm a;
    a.ldxsx(c.size, 0, 1, c.off).exit();
    TestProg p(a);
    ASSERT_TRUE(p.prepared.ok());
    EXPECT_EQ(p.run(ctx, sizeof(ctx)).r0, c.want);
    Asm z;  // the plain load zero-extends
    z.ldx(c.size, 0, 1, c.off).exit();
    TestProg q(z);
    EXPECT_EQ(q.run(ctx, sizeof(ctx)).r0, c.want & (c.size == kSizeB   ? 0xff
                                                    : c.size == kSizeH ? 0xffff
                                                                       : 0xffffffff));
  }
}

TEST(InterpMem, ContextReadWrite) {
  uint64_t ctx[2] = {40, 0};
  Asm a;
  a.ldx(kSizeDw, 0, 1, 0).alu64_imm(kAluAdd, 0, 2).stx(kSizeDw, 1, 0, 8).exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run(ctx, sizeof(ctx));
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 42u);
  EXPECT_EQ(ctx[1], 42u);
}

void expect_fault(const RunOutcome& o, uint32_t pc, uint64_t addr, const char* what) {
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, pc);
  EXPECT_EQ(o.fault.addr, addr);
  EXPECT_NE(o.fault.what.find(what), std::string::npos) << o.fault.what;
  char pcs[32];
  std::snprintf(pcs, sizeof(pcs), "pc %u:", pc);
  EXPECT_NE(o.error.message.find(pcs), std::string::npos) << o.error.message;
  char addrs[32];
  std::snprintf(addrs, sizeof(addrs), "0x%llx", static_cast<unsigned long long>(addr));
  EXPECT_NE(o.error.message.find(addrs), std::string::npos) << o.error.message;
  EXPECT_NE(o.error.message.find("program 'test'"), std::string::npos) << o.error.message;
}

TEST(InterpMem, ContextOverflowFaults) {
  uint8_t ctx[16] = {};
  Asm a;
  a.mov64_imm(0, 0).ldx(kSizeDw, 0, 1, 12).exit();  // bytes 12..19 of a 16-byte ctx
  TestProg p(a);
  RunOutcome o = p.run(ctx, sizeof(ctx));
  expect_fault(o, 1, reinterpret_cast<uintptr_t>(ctx) + 12, "out-of-bounds load of 8 bytes");
  EXPECT_NE(o.error.message.find("8 bytes"), std::string::npos);
  Asm b;
  b.mov64_imm(0, 0).ldx(kSizeB, 0, 1, -1).exit();  // one byte before
  TestProg q(b);
  expect_fault(q.run(ctx, sizeof(ctx)), 1, reinterpret_cast<uintptr_t>(ctx) - 1,
               "out-of-bounds load of 1 bytes");
  Asm c;  // exactly the last byte is fine
  c.ldx(kSizeB, 0, 1, 15).exit();
  TestProg r(c);
  EXPECT_TRUE(r.run(ctx, sizeof(ctx)).ok);
}

TEST(InterpMem, ReadOnlyContext) {
  uint8_t ctx[16] = {7};
  Asm a;
  a.ldx(kSizeB, 0, 1, 0).st(kSizeB, 1, 1, 9).exit();
  TestProg p(a);
  RunOutcome o = p.run(ctx, sizeof(ctx), /*ctx_writable=*/false);
  expect_fault(o, 1, reinterpret_cast<uintptr_t>(ctx) + 1, "store of 1 bytes to read-only memory");
  EXPECT_EQ(ctx[1], 0);
  Asm b;  // atomics need write access too
  b.mov64_imm(2, 1).atomic(kSizeW, kAtomicAdd, 1, 2, 0).exit();
  TestProg q(b);
  expect_fault(q.run(ctx, sizeof(ctx), false), 1, reinterpret_cast<uintptr_t>(ctx), "read-only");
}

TEST(InterpMem, NullDereference) {
  Asm a;
  a.mov64_imm(1, 0).ldx(kSizeW, 0, 1, 8).exit();
  TestProg p(a);
  expect_fault(p.run(), 1, 8, "null pointer load of 4 bytes");
  Asm b;
  b.mov64_imm(1, 0).st(kSizeDw, 1, 0, 1).exit();
  TestProg q(b);
  expect_fault(q.run(), 1, 0, "null pointer store of 8 bytes");
}

TEST(InterpMem, StackBounds) {
  Asm a;
  a.st(kSizeDw, 10, -512, 1).ldx(kSizeDw, 0, 10, -512).exit();  // lowest slot: fine
  EXPECT_EQ(run_r0(a), 1u);
  Asm b;
  b.mov64_imm(0, 0).st(kSizeDw, 10, -520, 1).exit();  // below the frame
  TestProg p(b);
  RunOutcome o = p.run();
  ASSERT_FALSE(o.ok);
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, 1u);
  EXPECT_NE(o.fault.what.find("store of 8 bytes"), std::string::npos);
  Asm c;
  c.mov64_imm(0, 0).ldx(kSizeB, 0, 10, 0).exit();  // r10 itself is one past the end
  TestProg q(c);
  EXPECT_EQ(q.run().error.code, EFAULT);
  Asm d;
  d.mov64_imm(0, 0).ldx(kSizeDw, 0, 10, -4).exit();  // straddles the top
  TestProg r(d);
  EXPECT_EQ(r.run().error.code, EFAULT);
  // A wild pointer far away, and one that wraps the address space.
  Asm e;
  e.ld_imm64(1, ~0ull - 3).ldx(kSizeDw, 0, 1, 0).exit();
  TestProg s(e);
  EXPECT_EQ(s.run().error.code, EFAULT);
}

TEST(InterpMem, StackStartsZeroed) {
  Asm a;
  a.mov64_imm(0, 0);
  for (int off = -512; off < 0; off += 8) {
    a.ldx(kSizeDw, 1, 10, static_cast<int16_t>(off)).alu64_reg(kAluOr, 0, 1);
  }
  a.exit();
  EXPECT_EQ(run_r0(a), 0u);
}

TEST(InterpMem, PacketRegion) {
  uint8_t pkt[64];
  for (int i = 0; i < 64; ++i) pkt[i] = static_cast<uint8_t>(i);
  Asm a;  // r1 = &pkt[8] passed through ctx word 0
  a.ldx(kSizeDw, 2, 1, 0).ldx(kSizeB, 0, 2, 55).st(kSizeB, 2, -8, 99).exit();
  TestProg p(a);
  uint64_t ctx = reinterpret_cast<uintptr_t>(pkt + 8);
  vm::RunContext rc;
  rc.ctx = &ctx;
  rc.ctx_size = sizeof(ctx);
  rc.data_meta = pkt;
  rc.data = pkt + 4;
  rc.data_end = pkt + 64;
  RunOutcome o = p.run_with(rc);
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 63u);
  EXPECT_EQ(pkt[0], 99);  // data_meta is part of the region
  Asm b;
  b.ldx(kSizeDw, 2, 1, 0).ldx(kSizeB, 0, 2, 56).exit();  // data_end
  TestProg q(b);
  vm::RunContext rc2 = rc;
  EXPECT_EQ(q.run_with(rc2).error.code, EFAULT);
}

TEST(InterpMem, MapMemory) {
  auto map = make_fake_map(32, 1);
  Asm a;  // r1 = &value[0] of the global-data-style map; store, load back.
  a.ld_map_value(1, 0, 8).st(kSizeDw, 1, 0, 1234).ldx(kSizeDw, 0, 1, 0).exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  RunOutcome o = p.run();
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(o.r0, 1234u);
  uint64_t v;
  std::memcpy(&v, map->buf.data() + 8, 8);
  EXPECT_EQ(v, 1234u);
  Asm b;  // one past the map's memory
  b.ld_map_value(1, 0, 24).mov64_imm(0, 0).ldx(kSizeDw, 0, 1, 8).exit();
  TestProg q(b, {map.get()});
  ASSERT_TRUE(q.prepared.ok());
  RunOutcome bad = q.run();
  EXPECT_EQ(bad.error.code, EFAULT);
  EXPECT_EQ(bad.fault.pc, 3u);
  // A read-only (BPF_F_RDONLY_PROG) map: loads fine, stores fault.
  map->attr.map_flags = maps::kBpfFRdonlyProg;
  Asm c;
  c.ld_map_value(1, 0, 0).ldx(kSizeDw, 0, 1, 0).st(kSizeDw, 1, 0, 1).exit();
  TestProg r(c, {map.get()});
  RunOutcome ro = r.run();
  EXPECT_EQ(ro.error.code, EFAULT);
  EXPECT_EQ(ro.fault.pc, 3u);
  EXPECT_NE(ro.fault.what.find("read-only"), std::string::npos) << ro.fault.what;
}

TEST(InterpMem, LastHitCacheDoesNotOutliveItsRegion) {
  // Alternate ctx and map accesses; a later out-of-range access near the
  // cached region still faults.
  auto map = make_fake_map(16, 1);
  uint8_t ctx[16] = {};
  Asm a;
  a.ld_map_value(2, 0, 0)
      .ldx(kSizeDw, 3, 1, 0)
      .ldx(kSizeDw, 3, 2, 0)
      .ldx(kSizeDw, 3, 1, 8)
      .ldx(kSizeDw, 3, 2, 8)
      .ldx(kSizeDw, 3, 1, 16)
      .exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok());
  RunOutcome o = p.run(ctx, sizeof(ctx));
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_EQ(o.fault.pc, 6u);
}

// ---- atomics ----------------------------------------------------------------

struct AtomicCase {
  int32_t op;
  uint64_t mem, src, r0;
  uint64_t want_mem, want_src, want_r0;
};

void run_atomic(uint8_t size, const AtomicCase& c) {
  alignas(8) uint64_t ctx[2] = {c.mem, 0};
  Asm a;
  a.ld_imm64(2, c.src)
      .ld_imm64(0, c.r0)
      .atomic(size, c.op, 1, 2, 8 * 0)
      .stx(kSizeDw, 1, 2, 8)
      .exit();
  TestProg p(a);
  ASSERT_TRUE(p.prepared.ok()) << p.prepared.error().message;
  RunOutcome o = p.run(ctx, sizeof(ctx));
  ASSERT_TRUE(o.ok) << o.error.message;
  EXPECT_EQ(ctx[0], c.want_mem) << "op " << c.op << " size " << int(size);
  EXPECT_EQ(ctx[1], c.want_src) << "op " << c.op << " size " << int(size);
  EXPECT_EQ(o.r0, c.want_r0) << "op " << c.op << " size " << int(size);
}

TEST(InterpMem, Atomics64) {
  const uint64_t m = 0x00000000000000f0ull;
  const AtomicCase cases[] = {
      {kAtomicAdd, m, 1, 9, m + 1, 1, 9},
      {kAtomicOr, m, 0xf, 9, 0xff, 0xf, 9},
      {kAtomicAnd, m, 0x30, 9, 0x30, 0x30, 9},
      {kAtomicXor, m, 0xff, 9, 0x0f, 0xff, 9},
      {kAtomicAdd | kAtomicFetch, m, 1, 9, m + 1, m, 9},
      {kAtomicOr | kAtomicFetch, m, 0xf, 9, 0xff, m, 9},
      {kAtomicAnd | kAtomicFetch, m, 0x30, 9, 0x30, m, 9},
      {kAtomicXor | kAtomicFetch, m, 0xff, 9, 0x0f, m, 9},
      {kAtomicXchg, m, 77, 9, 77, m, 9},
      {kAtomicCmpxchg, m, 77, m, 77, 77, m},  // success: r0 = old
      {kAtomicCmpxchg, m, 77, 5, m, 77, m},   // failure: memory kept, r0 = old
      {kAtomicAdd | kAtomicFetch, ~0ull, 1, 0, 0, ~0ull, 0},
  };
  for (const AtomicCase& c : cases) run_atomic(kSizeDw, c);
}

TEST(InterpMem, Atomics32) {
  const uint64_t hi = 0x1111111100000000ull;  // upper half of the 8-byte cell: untouched
  const AtomicCase cases[] = {
      {kAtomicAdd, hi | 0xffffffff, 1, 9, hi, 1, 9},  // wraps inside 32 bits
      {kAtomicOr, hi | 0xf0, 0xf, 9, hi | 0xff, 0xf, 9},
      {kAtomicAnd, hi | 0xf0, 0x30, 9, hi | 0x30, 0x30, 9},
      {kAtomicXor, hi | 0xf0, 0xff, 9, hi | 0x0f, 0xff, 9},
      // fetch results are zero-extended 32-bit values
      {kAtomicAdd | kAtomicFetch, hi | 0xf0, 0xffffffff00000001ull, 9, hi | 0xf1, 0xf0, 9},
      {kAtomicOr | kAtomicFetch, hi | 0xf0, 0xf, 9, hi | 0xff, 0xf0, 9},
      {kAtomicAnd | kAtomicFetch, hi | 0xf0, 0x30, 9, hi | 0x30, 0xf0, 9},
      {kAtomicXor | kAtomicFetch, hi | 0xf0, 0xff, 9, hi | 0x0f, 0xf0, 9},
      {kAtomicXchg, hi | 0xf0, 0xabcdef0012345678ull, 9, hi | 0x12345678, 0xf0, 9},
      // cmpxchg compares the low 32 bits of r0; r0 becomes the zero-extended old value
      {kAtomicCmpxchg, hi | 0xf0, 77, 0xffffffff000000f0ull, hi | 77, 77, 0xf0},
      {kAtomicCmpxchg, hi | 0xf0, 77, 5, hi | 0xf0, 77, 0xf0},
  };
  for (const AtomicCase& c : cases) run_atomic(kSizeW, c);
}

TEST(InterpMem, MisalignedAtomicFaults) {
  alignas(8) uint8_t ctx[16] = {};
  Asm a;
  a.mov64_imm(2, 1).atomic(kSizeDw, kAtomicAdd, 1, 2, 4).exit();
  TestProg p(a);
  RunOutcome o = p.run(ctx, sizeof(ctx));
  EXPECT_EQ(o.error.code, EFAULT);
  EXPECT_NE(o.fault.what.find("misaligned atomic of 8 bytes"), std::string::npos) << o.fault.what;
  Asm b;
  b.mov64_imm(2, 1).atomic(kSizeW, kAtomicAdd, 1, 2, 2).exit();
  TestProg q(b);
  EXPECT_EQ(q.run(ctx, sizeof(ctx)).error.code, EFAULT);
  Asm c;
  c.mov64_imm(2, 1).atomic(kSizeW, kAtomicAdd, 1, 2, 16).exit();  // out of bounds
  TestProg r(c);
  RunOutcome oob = r.run(ctx, sizeof(ctx));
  EXPECT_NE(oob.fault.what.find("out-of-bounds atomic of 4 bytes"), std::string::npos);
}

TEST(InterpMem, AtomicsAreAtomicAcrossThreads) {
  // Four threads each add 1 to the same map value 100k times.
  auto map = make_fake_map(8, 1);
  Asm a;
  a.ld_map_value(1, 0, 0).mov64_imm(2, 1).mov64_imm(3, 0);
  a.label("loop").atomic(kSizeDw, kAtomicAdd, 1, 2, 0).alu64_imm(kAluAdd, 3, 1);
  a.jmp_imm(kJmpJlt, 3, 100000, "loop").mov64_imm(0, 0).exit();
  TestProg p(a, {map.get()});
  ASSERT_TRUE(p.prepared.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] { EXPECT_TRUE(p.run().ok); });
  }
  for (auto& t : threads) t.join();
  uint64_t v;
  std::memcpy(&v, map->buf.data(), 8);
  EXPECT_EQ(v, 400000u);
}

// ---- legacy packet loads ----------------------------------------------------

TEST(InterpMem, LdAbsLdInd) {
  uint8_t pkt[8] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0};
  vm::RunContext rc;
  rc.data = pkt;
  rc.data_end = pkt + sizeof(pkt);
  auto run = [&](const Asm& a) {
    TestProg p(a);
    EXPECT_TRUE(p.prepared.ok()) << p.prepared.error().message;
    vm::RunContext r = rc;
    return p.run_with(r);
  };
  EXPECT_EQ(run(Asm().ld_abs(kSizeB, 1).exit()).r0, 0x34u);
  EXPECT_EQ(run(Asm().ld_abs(kSizeH, 1).exit()).r0, 0x3456u);  // big-endian
  EXPECT_EQ(run(Asm().ld_abs(kSizeW, 4).exit()).r0, 0x9abcdef0u);
  EXPECT_EQ(run(Asm().mov64_imm(3, 2).ld_ind(kSizeW, 3, 2).exit()).r0, 0x9abcdef0u);
  EXPECT_EQ(run(Asm().mov64_imm(3, -1).ld_ind(kSizeB, 3, 1).exit()).r0, 0x12u);  // -1 + 1
  // Out of range: the program ends with r0 = 0 (not a fault).
  RunOutcome o = run(Asm().mov64_imm(0, 5).ld_abs(kSizeW, 5).mov64_imm(0, 7).exit());
  EXPECT_TRUE(o.ok);
  EXPECT_EQ(o.r0, 0u);
  EXPECT_EQ(run(Asm().mov64_imm(0, 5).ld_abs(kSizeB, -1).exit()).r0, 0u);
  EXPECT_EQ(run(Asm().mov64_imm(0, 5).mov64_imm(3, 8).ld_ind(kSizeB, 3, 0).exit()).r0, 0u);
  EXPECT_EQ(run(Asm().mov64_imm(0, 5).ld_abs(kSizeB, 7).exit()).r0, 0xf0u);
  // No packet at all.
  Asm none;
  none.mov64_imm(0, 5).ld_abs(kSizeB, 0).exit();
  TestProg p(none);
  RunOutcome np = p.run();
  EXPECT_TRUE(np.ok);
  EXPECT_EQ(np.r0, 0u);
}

}  // namespace
}  // namespace userbpf::test
