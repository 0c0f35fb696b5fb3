// bpf_loop, the string helpers (strncmp, strtol, strtoul), task identity,
// CPU slot, random numbers and the clocks.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "helper_test_util.h"
#include "helpers/helper_fns.h"

namespace userbpf::helpers {
namespace {

using testing::s;
using testing::TestRun;
using testing::u;

// --- bpf_loop ----------------------------------------------------------------

TEST(BpfLoop, CallsTheCallbackWithIndexAndContext) {
  TestRun run;
  std::vector<uint64_t> seen;
  int ctx_obj = 0;
  run.callback = [&](uint64_t fn, uint64_t i, uint64_t ctx, uint64_t a3, uint64_t, uint64_t) {
    EXPECT_EQ(fn, 0x77u);
    EXPECT_EQ(ctx, u(&ctx_obj));
    EXPECT_EQ(a3, 0u);
    seen.push_back(i);
    return uint64_t{0};
  };
  EXPECT_EQ(bpf_loop(5, 0x77, u(&ctx_obj), 0, 0), 5u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
}

TEST(BpfLoop, StopsWhenTheCallbackReturnsOne) {
  TestRun run;
  run.callback = [](uint64_t, uint64_t i, uint64_t, uint64_t, uint64_t, uint64_t) {
    return uint64_t{i == 3};
  };
  EXPECT_EQ(bpf_loop(100, 1, 0, 0, 0), 4u);  // iterations done, the stopping one included
  EXPECT_EQ(run.calls, 4);
}

TEST(BpfLoop, FlagsAndLimits) {
  TestRun run;
  EXPECT_EQ(s(bpf_loop(3, 1, 0, 1, 0)), -EINVAL);
  EXPECT_EQ(s(bpf_loop(kBpfMaxLoops + 1, 1, 0, 0, 0)), -E2BIG);
  EXPECT_EQ(run.calls, 0);
  EXPECT_EQ(bpf_loop(0, 1, 0, 0, 0), 0u);
  EXPECT_EQ(run.calls, 0);
  // nr_loops is a u32: the upper half of r1 is ignored.
  EXPECT_EQ(bpf_loop((1ull << 32) | 2, 1, 0, 0, 0), 2u);
  EXPECT_EQ(bpf_loop(kBpfMaxLoops, 1, 0, 0, 0), kBpfMaxLoops);
}

TEST(BpfLoop, StopsWhenTheEngineFaults) {
  TestRun run;
  run.callback = [&](uint64_t, uint64_t i, uint64_t, uint64_t, uint64_t, uint64_t) {
    if (i == 2) run.rc.faulted = true;
    return uint64_t{0};
  };
  EXPECT_EQ(s(bpf_loop(10, 1, 0, 0, 0)), -EFAULT);
  EXPECT_EQ(run.calls, 3);
}

TEST(BpfLoop, NeedsARun) {
  ASSERT_EQ(vm::current_run(), nullptr);
  EXPECT_EQ(s(bpf_loop(1, 1, 0, 0, 0)), -EINVAL);
}

// --- bpf_strncmp --------------------------------------------------------------

int64_t strncmp_(const char* a, uint32_t n, const char* b) {
  return s(bpf_strncmp(u(a), n, u(b), 0, 0));
}

TEST(Strncmp, KernelSemantics) {
  EXPECT_EQ(strncmp_("abc", 4, "abc"), 0);
  EXPECT_EQ(strncmp_("abc", 4, "abd"), -1);
  EXPECT_EQ(strncmp_("abd", 4, "abc"), 1);
  EXPECT_EQ(strncmp_("ab", 3, "abc"), -1);      // shorter sorts first
  EXPECT_EQ(strncmp_("abcX", 3, "abcY"), 0);    // only s1_sz bytes
  EXPECT_EQ(strncmp_("a\xff", 2, "a\x01"), 1);  // bytes compare unsigned
  const char not_terminated[3] = {'x', 'y', 'z'};
  EXPECT_EQ(strncmp_(not_terminated, 3, "xyz"), 0);
  EXPECT_EQ(strncmp_(not_terminated, 3, "xy"), 1);
}

// --- bpf_strtol / bpf_strtoul --------------------------------------------------

struct Parsed {
  int64_t ret;
  int64_t value;
};

Parsed strtol_(const char* buf, size_t len, uint64_t flags) {
  int64_t v = 0x5a5a;
  int64_t ret = s(bpf_strtol(u(buf), len, flags, u(&v), 0));
  return {ret, v};
}
Parsed strtol_(const char* buf, uint64_t flags = 0) {
  return strtol_(buf, strlen(buf), flags);
}

Parsed strtoul_(const char* buf, uint64_t flags = 0) {
  uint64_t v = 0x5a5a;
  int64_t ret = s(bpf_strtoul(u(buf), strlen(buf), flags, u(&v), 0));
  return {ret, static_cast<int64_t>(v)};
}

TEST(Strtol, ParsesLikeTheKernel) {
  EXPECT_EQ(strtol_("123").ret, 3);
  EXPECT_EQ(strtol_("123").value, 123);
  Parsed p = strtol_("  -0x1f,", 0);
  EXPECT_EQ(p.ret, 7);  // spaces, sign and "0x" count as consumed
  EXPECT_EQ(p.value, -31);
  EXPECT_EQ(strtol_("0777", 0).value, 0777);
  EXPECT_EQ(strtol_("0777", 10).value, 777);
  EXPECT_EQ(strtol_("ff", 16).value, 255);
  EXPECT_EQ(strtol_("0XfF", 16).value, 255);
  EXPECT_EQ(strtol_("19", 8).value, 1);  // stops at the first non-digit of the base
  EXPECT_EQ(strtol_("19", 8).ret, 1);
  // Base 0 with "0x" and no hex digit: octal 0, one byte consumed.
  EXPECT_EQ(strtol_("0xg", 0).ret, 1);
  EXPECT_EQ(strtol_("0xg", 0).value, 0);
  EXPECT_EQ(strtol_("12345", 3, 0).value, 123);  // buf_len bounds the input
  EXPECT_EQ(strtol_("-9223372036854775808").value, LLONG_MIN);
  EXPECT_EQ(strtol_("9223372036854775807").value, LLONG_MAX);
}

TEST(Strtol, Errors) {
  EXPECT_EQ(strtol_("0xg", 16).ret, -EINVAL);  // "0x" skipped, no digits left
  EXPECT_EQ(strtol_("abc").ret, -EINVAL);
  EXPECT_EQ(strtol_("   ").ret, -EINVAL);
  EXPECT_EQ(strtol_("-").ret, -EINVAL);
  EXPECT_EQ(strtol_("1", 2).ret, -EINVAL);     // base 2 unsupported
  EXPECT_EQ(strtol_("1", 0x20).ret, -EINVAL);  // unknown flag bits
  EXPECT_EQ(strtol_("1", 0, 0).ret, -EINVAL);  // buf_len 0
  EXPECT_EQ(strtol_("9223372036854775808").ret, -ERANGE);
  EXPECT_EQ(strtol_("-9223372036854775809").ret, -ERANGE);
  EXPECT_EQ(strtol_("99999999999999999999").ret, -ERANGE);
  Parsed untouched = strtol_("x");
  EXPECT_EQ(untouched.value, 0x5a5a);  // *res only written on success
}

TEST(Strtoul, ParsesAndRefusesNegatives) {
  EXPECT_EQ(strtoul_("18446744073709551615").ret, 20);
  EXPECT_EQ(static_cast<uint64_t>(strtoul_("18446744073709551615").value), ~0ull);
  EXPECT_EQ(strtoul_("18446744073709551616").ret, -ERANGE);
  EXPECT_EQ(strtoul_("-1").ret, -EINVAL);
  EXPECT_EQ(strtoul_("0x10", 0).value, 16);
}

// --- identity, CPU, randomness --------------------------------------------------

TEST(Identity, PidTgidAndUidGid) {
  uint64_t v = bpf_get_current_pid_tgid(0, 0, 0, 0, 0);
  EXPECT_EQ(v >> 32, static_cast<uint64_t>(getpid()));
  EXPECT_EQ(v & 0xffffffff, static_cast<uint64_t>(gettid()));
  uint64_t other = 0;
  std::thread([&] { other = bpf_get_current_pid_tgid(0, 0, 0, 0, 0); }).join();
  EXPECT_EQ(other >> 32, v >> 32);
  EXPECT_NE(other & 0xffffffff, v & 0xffffffff);
  uint64_t ids = bpf_get_current_uid_gid(0, 0, 0, 0, 0);
  EXPECT_EQ(ids & 0xffffffff, getuid());
  EXPECT_EQ(ids >> 32, getgid());
}

TEST(Identity, CurrentCommIsTheThreadName) {
  std::thread([] {
    ASSERT_EQ(prctl(PR_SET_NAME, "helper-comm-t"), 0);
    char buf[16];
    std::memset(buf, 0x5a, sizeof(buf));
    EXPECT_EQ(bpf_get_current_comm(u(buf), sizeof(buf), 0, 0, 0), 0u);
    EXPECT_STREQ(buf, "helper-comm-t");
    for (size_t i = strlen("helper-comm-t"); i < sizeof(buf); i++) EXPECT_EQ(buf[i], 0);
    char small[5];
    std::memset(small, 0x5a, sizeof(small));
    EXPECT_EQ(bpf_get_current_comm(u(small), sizeof(small), 0, 0, 0), 0u);
    EXPECT_STREQ(small, "help");
  }).join();
}

TEST(Cpu, SmpProcessorIdIsTheRunsSlot) {
  EXPECT_EQ(bpf_get_smp_processor_id(0, 0, 0, 0, 0), 0u);  // no run
  TestRun run;
  run.rc.cpu = 3;
  EXPECT_EQ(bpf_get_smp_processor_id(0, 0, 0, 0, 0), 3u);
  {
    vm::RunContext nested;
    nested.cpu = 5;
    vm::RunScope scope(nested);
    EXPECT_EQ(bpf_get_smp_processor_id(0, 0, 0, 0, 0), 5u);
  }
  EXPECT_EQ(bpf_get_smp_processor_id(0, 0, 0, 0, 0), 3u);
}

TEST(Cpu, NumaNodeMatchesGetcpu) {
  unsigned cpu = 0, node = 0;
  ASSERT_EQ(getcpu(&cpu, &node), 0);
  EXPECT_EQ(bpf_get_numa_node_id(0, 0, 0, 0, 0), node);
}

TEST(Random, PrandomValuesVaryAndDifferAcrossThreads) {
  std::set<uint64_t> mine;
  uint64_t high_bits = 0;
  for (int i = 0; i < 1000; i++) {
    uint64_t v = bpf_get_prandom_u32(0, 0, 0, 0, 0);
    EXPECT_LE(v, 0xffffffffull);
    high_bits |= v;
    mine.insert(v);
  }
  EXPECT_GE(mine.size(), 995u);
  EXPECT_EQ(high_bits, 0xffffffffull);  // every bit position gets set
  std::set<uint64_t> theirs;
  std::thread([&] {
    for (int i = 0; i < 1000; i++) theirs.insert(bpf_get_prandom_u32(0, 0, 0, 0, 0));
  }).join();
  size_t common = 0;
  for (uint64_t v : theirs) common += mine.count(v);
  EXPECT_LT(common, 10u);
}

// --- clocks ------------------------------------------------------------------------

uint64_t now(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

TEST(Time, ClocksMatchTheirKernelClocks) {
  const uint64_t ms = 1'000'000;
  uint64_t before = now(CLOCK_MONOTONIC);
  uint64_t mono = bpf_ktime_get_ns(0, 0, 0, 0, 0);
  uint64_t after = now(CLOCK_MONOTONIC);
  EXPECT_LE(before, mono);
  EXPECT_LE(mono, after);
  uint64_t boot = bpf_ktime_get_boot_ns(0, 0, 0, 0, 0);
  EXPECT_GE(boot + ms, now(CLOCK_BOOTTIME));
  EXPECT_LE(boot, now(CLOCK_BOOTTIME));
  uint64_t coarse = bpf_ktime_get_coarse_ns(0, 0, 0, 0, 0);
  EXPECT_NEAR(static_cast<double>(coarse), static_cast<double>(now(CLOCK_MONOTONIC)), 50.0 * ms);
  uint64_t tai = bpf_ktime_get_tai_ns(0, 0, 0, 0, 0);
  EXPECT_LE(tai, now(CLOCK_TAI));
  EXPECT_GE(tai + ms, now(CLOCK_TAI));
  // TAI runs ahead of UTC by the leap seconds (0 if no one told the kernel).
  EXPECT_GE(tai + ms, now(CLOCK_REALTIME));
}

TEST(Time, Jiffies64TicksAtHzFromTheKernelsInitialValue) {
  const uint64_t initial = static_cast<uint32_t>(-300 * static_cast<int64_t>(kJiffiesHz));
  uint64_t t0 = now(CLOCK_MONOTONIC_COARSE);
  uint64_t a = bpf_jiffies64(0, 0, 0, 0, 0);
  EXPECT_NEAR(static_cast<double>(a),
              static_cast<double>(initial + t0 / (1'000'000'000ull / kJiffiesHz)), 2.0);
  usleep(200'000);
  uint64_t b = bpf_jiffies64(0, 0, 0, 0, 0);
  uint64_t t1 = now(CLOCK_MONOTONIC_COARSE);
  // The rate: elapsed time at kJiffiesHz.
  EXPECT_NEAR(static_cast<double>(b - a), static_cast<double>(t1 - t0) * kJiffiesHz / 1e9, 2.0);
  EXPECT_GE(b - a, 0.2 * kJiffiesHz - 2);
}

}  // namespace
}  // namespace userbpf::helpers
