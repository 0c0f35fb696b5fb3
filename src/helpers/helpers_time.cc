// Time helpers: the kernel's clocks through clock_gettime (vDSO, no system
// call on the usual clocks): ktime_get_ns is CLOCK_MONOTONIC, boot_ns
// CLOCK_BOOTTIME, coarse_ns CLOCK_MONOTONIC_COARSE, tai_ns CLOCK_TAI.
#include <time.h>

#include "helpers/helper_fns.h"

namespace userbpf::helpers {
namespace {

u64 clock_ns(clockid_t clock) {
  timespec ts;
  if (clock_gettime(clock, &ts) != 0) return 0;
  return static_cast<u64>(ts.tv_sec) * 1'000'000'000ull + static_cast<u64>(ts.tv_nsec);
}

// INITIAL_JIFFIES: the kernel starts jiffies 5 minutes before the 32-bit
// wrap so wrap bugs show early; jiffies_64 keeps that offset on 64-bit.
constexpr u64 kInitialJiffies = static_cast<uint32_t>(-300 * static_cast<int64_t>(kJiffiesHz));

}  // namespace

u64 bpf_ktime_get_ns(u64, u64, u64, u64, u64) {
  return clock_ns(CLOCK_MONOTONIC);
}
u64 bpf_ktime_get_boot_ns(u64, u64, u64, u64, u64) {
  return clock_ns(CLOCK_BOOTTIME);
}
u64 bpf_ktime_get_coarse_ns(u64, u64, u64, u64, u64) {
  return clock_ns(CLOCK_MONOTONIC_COARSE);
}
u64 bpf_ktime_get_tai_ns(u64, u64, u64, u64, u64) {
  return clock_ns(CLOCK_TAI);
}

// Jiffies advance with the tick, which stops in suspend like CLOCK_MONOTONIC.
u64 bpf_jiffies64(u64, u64, u64, u64, u64) {
  return kInitialJiffies + clock_ns(CLOCK_MONOTONIC_COARSE) / (1'000'000'000ull / kJiffiesHz);
}

}  // namespace userbpf::helpers
