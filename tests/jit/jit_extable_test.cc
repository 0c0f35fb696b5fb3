// The exception table for PROBE_MEM32 accesses (the arena's): on a sparse
// region (a PROT_NONE reservation with a few pages populated) a faulting load
// yields 0 and a faulting store is dropped; other faults reach the handler
// that was installed before ours.
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#include <cstring>

#include "jit_test_util.h"

namespace userbpf::test {
namespace {

using namespace isa;

constexpr size_t kPage = 4096;
constexpr size_t kPages = 16;

struct Sparse {
  uint8_t* base = nullptr;
  Sparse() {
    void* p = mmap(nullptr, kPages * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
    if (base != nullptr) {
      mprotect(base + 2 * kPage, kPage, PROT_READ | PROT_WRITE);
      mprotect(base + 5 * kPage, kPage, PROT_READ | PROT_WRITE);
    }
  }
  ~Sparse() {
    if (base != nullptr) munmap(base, kPages * kPage);
  }
};

sigjmp_buf g_jmp;
volatile sig_atomic_t g_armed = 0;
volatile sig_atomic_t g_prev_calls = 0;

void previous_handler(int sig, siginfo_t*, void*) {
  if (!g_armed) {
    signal(sig, SIG_DFL);
    return;
  }
  g_prev_calls = g_prev_calls + 1;
  g_armed = 0;
  siglongjmp(g_jmp, 1);
}

// r2/r3/r4 hold 32-bit offsets into the region; the accesses at the listed
// pcs are probe accesses.
struct ProbeProg {
  Asm a;
  std::vector<uint32_t> probes;
  void probe() { probes.push_back(static_cast<uint32_t>(a.pc())); }
};

TEST(JitExtable, FaultsOutsideJitCodeReachThePreviousHandler) {
  struct sigaction sa, old;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = &previous_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGSEGV, &sa, &old), 0);

  // Compiling a program with probe accesses installs the JIT's handler on top.
  Sparse region;
  ASSERT_NE(region.base, nullptr);
  ProbeProg p;
  p.a.mov64_imm(2, 2 * kPage);
  p.probe();
  p.a.ldx(kSizeDw, 0, 2, 0).exit();
  TestProg t(p.a);
  ASSERT_TRUE(t.prepared.ok());
  vm::JitOptions opts;
  opts.probe_pcs = p.probes;
  opts.probe_base = reinterpret_cast<uintptr_t>(region.base);
  ASSERT_TRUE(vm::jit_compile(t.prog, opts).ok());

  g_armed = 1;
  if (sigsetjmp(g_jmp, 1) == 0) {
    *reinterpret_cast<volatile uint64_t*>(region.base + 7 * kPage) = 1;  // not JIT code
    ADD_FAILURE() << "store to a PROT_NONE page did not fault";
  }
  EXPECT_EQ(g_prev_calls, 1);
  g_armed = 0;
}

TEST(JitExtable, LoadsFromMissingPagesReadZeroStoresAreDropped) {
  Sparse region;
  ASSERT_NE(region.base, nullptr);
  uint64_t v = 0x1122334455667788ull;
  std::memcpy(region.base + 2 * kPage + 8, &v, 8);

  ProbeProg p;
  Asm& a = p.a;
  a.mov64_imm(2, 2 * kPage).mov64_imm(3, 3 * kPage).ld_imm64(4, 0xffffffff00000000ull | 5 * kPage);
  a.mov64_imm(0, -1).mov64_imm(6, -1).mov64_imm(7, 77);
  p.probe();
  a.ldx(kSizeDw, 6, 2, 8);  // populated: 0x1122334455667788
  p.probe();
  a.ldx(kSizeDw, 0, 3, 16);  // missing page: r0 = 0
  p.probe();
  a.ldx(kSizeW, 8, 3, 0);  // missing page, 32-bit, r8 = 0
  p.probe();
  a.stx(kSizeDw, 3, 7, 0);  // missing page: dropped
  p.probe();
  a.stx(kSizeDw, 4, 7, 24);  // upper 32 bits of r4 ignored: lands in page 5
  p.probe();
  a.st(kSizeW, 3, 40, 5);  // missing page: dropped
  p.probe();
  a.ldxsx(kSizeB, 9, 2, 8);  // 0x88 sign-extended
  a.alu64_reg(kAluAdd, 0, 6).alu64_reg(kAluAdd, 0, 8).alu64_reg(kAluXor, 0, 9).exit();
  TestProg t(a);
  ASSERT_TRUE(t.prepared.ok()) << t.prepared.error().message;
  vm::JitOptions opts;
  opts.probe_pcs = p.probes;
  opts.probe_base = reinterpret_cast<uintptr_t>(region.base);
  ASSERT_TRUE(vm::jit_compile(t.prog, opts).ok());

  for (int i = 0; i < 3; ++i) {  // the handler keeps working
    vm::RunContext rc;
    Result<uint64_t> r = vm::jit_run(t.prog, rc);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), (0x1122334455667788ull + 0) ^ 0xffffffffffffff88ull);
    uint64_t stored;
    std::memcpy(&stored, region.base + 5 * kPage + 24, 8);
    EXPECT_EQ(stored, 77u);
  }
}

}  // namespace
}  // namespace userbpf::test
