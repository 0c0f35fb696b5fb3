// General helpers: random numbers, CPU and task identity, bpf_loop, and the
// string helpers bpf_strncmp, bpf_strtol and bpf_strtoul.
#include <sched.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "helpers/helper_fns.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

u64 neg(int err) {
  return static_cast<u64>(-static_cast<int64_t>(err));
}
const char* cptr(u64 v) {
  return reinterpret_cast<const char*>(static_cast<uintptr_t>(v));
}

// --- bpf_get_prandom_u32 -------------------------------------------------
// Per-thread SplitMix64 (a Weyl sequence through a mixer): one add and a few
// multiplies, no shared state. A signal handler interrupting an update may
// repeat a value, which a non-cryptographic PRNG may do. Seeded once per
// thread from getrandom(), falling back to time and address bits.
struct PrngState {
  uint64_t s;
  bool seeded;
};
thread_local PrngState t_prng{0, false};

void seed_prng(PrngState& st) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != static_cast<ssize_t>(sizeof(seed))) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 32) ^
           reinterpret_cast<uintptr_t>(&st);
  }
  st.s = seed;
  st.seeded = true;
}

// --- bpf_strtol / bpf_strtoul --------------------------------------------
constexpr u64 kStrtoxBaseMask = 0x1f;

bool kernel_isspace(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xa0;
}
bool kernel_isxdigit(unsigned char c) {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

// The kernel's __bpf_strtoull: leading spaces, an optional '-', then an
// integer in base 8, 10, 16 or 0 (auto) read from at most 63 bytes.
// Returns the bytes consumed or a negative errno.
int strtoull_common(const char* buf, size_t buf_len, u64 flags, unsigned long long* res,
                    bool* is_negative) {
  unsigned base = static_cast<unsigned>(flags & kStrtoxBaseMask);
  if (!buf || !buf_len) return -EINVAL;
  if (base != 0 && base != 8 && base != 10 && base != 16) return -EINVAL;
  if (flags & ~kStrtoxBaseMask) return -EINVAL;

  const char* cur = buf;
  const char* end = buf + buf_len;
  while (cur < end && kernel_isspace(static_cast<unsigned char>(*cur))) ++cur;
  *is_negative = cur < end && *cur == '-';
  if (*is_negative) ++cur;
  size_t consumed = static_cast<size_t>(cur - buf);
  size_t cur_len = buf_len - consumed;
  if (!cur_len) return -EINVAL;

  char str[64];
  cur_len = cur_len < sizeof(str) - 1 ? cur_len : sizeof(str) - 1;
  std::memcpy(str, cur, cur_len);
  str[cur_len] = '\0';

  // _parse_integer_fixup_radix
  const char* s = str;
  if (base == 0) {
    if (s[0] == '0')
      base = ((s[1] | 0x20) == 'x' && kernel_isxdigit(static_cast<unsigned char>(s[2]))) ? 16 : 8;
    else
      base = 10;
  }
  if (base == 16 && s[0] == '0' && (s[1] | 0x20) == 'x') s += 2;

  // _parse_integer: digits until the first non-digit of the base; overflow
  // is flagged but parsing goes on, as in the kernel.
  unsigned long long value = 0;
  size_t digits = 0;
  bool overflow = false;
  for (;; ++s, ++digits) {
    unsigned char c = static_cast<unsigned char>(*s);
    unsigned lc = c | 0x20;
    unsigned v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (lc >= 'a' && lc <= 'f')
      v = lc - 'a' + 10;
    else
      break;
    if (v >= base) break;
    if (value & (~0ull << 60)) {
      if (value > (~0ull - v) / base) overflow = true;
    }
    value = value * base + v;
  }
  if (overflow) return -ERANGE;
  if (digits == 0) return -EINVAL;
  *res = value;
  consumed += static_cast<size_t>(s - str);
  return static_cast<int>(consumed);
}

}  // namespace

u64 bpf_get_prandom_u32(u64, u64, u64, u64, u64) {
  PrngState& st = t_prng;
  if (!st.seeded) seed_prng(st);
  uint64_t z = (st.s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

// The CPU slot the run holds (DESIGN.md: per-CPU data is indexed by it).
u64 bpf_get_smp_processor_id(u64, u64, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  return rc ? rc->cpu : 0;
}

// The NUMA node of the physical CPU the thread is on (vDSO getcpu).
u64 bpf_get_numa_node_id(u64, u64, u64, u64, u64) {
  unsigned cpu = 0, node = 0;
  int saved = errno;
  if (getcpu(&cpu, &node) != 0) node = 0;
  errno = saved;
  return node;
}

u64 bpf_get_current_pid_tgid(u64, u64, u64, u64, u64) {
  return static_cast<u64>(static_cast<uint32_t>(getpid())) << 32 | static_cast<uint32_t>(gettid());
}

u64 bpf_get_current_uid_gid(u64, u64, u64, u64, u64) {
  return static_cast<u64>(getgid()) << 32 | getuid();
}

// The thread's name (the kernel's current->comm), strscpy_pad'ed into buf.
u64 bpf_get_current_comm(u64 buf, u64 size, u64, u64, u64) {
  char* dst = reinterpret_cast<char*>(static_cast<uintptr_t>(buf));
  const auto n = static_cast<uint32_t>(size);
  if (n == 0) return 0;
  char comm[17] = {};  // TASK_COMM_LEN plus a guard NUL
  int saved = errno;
  if (prctl(PR_GET_NAME, comm) != 0) {
    errno = saved;
    std::memset(dst, 0, n);
    return neg(EINVAL);
  }
  errno = saved;
  size_t len = strnlen(comm, sizeof(comm) - 1);
  if (len > n - 1) len = n - 1;
  std::memcpy(dst, comm, len);
  std::memset(dst + len, 0, n - len);
  return 0;
}

// bpf_loop(nr_loops, callback_fn, callback_ctx, flags): calls
// callback_fn(i, callback_ctx) for i = 0.. until it returns nonzero; returns
// the number of calls made.
u64 bpf_loop(u64 nr_loops, u64 callback_fn, u64 callback_ctx, u64 flags, u64) {
  const auto nr = static_cast<uint32_t>(nr_loops);
  if (flags) return neg(EINVAL);
  if (nr > kBpfMaxLoops) return neg(E2BIG);
  vm::RunContext* rc = vm::current_run();
  if (!rc || !rc->call_fn) return neg(EINVAL);
  for (uint32_t i = 0; i < nr; i++) {
    u64 ret = rc->call_fn(rc, callback_fn, i, callback_ctx, 0, 0, 0);
    // The engine is unwinding the run; stop calling into it.
    if (rc->faulted) return neg(EFAULT);
    if (ret) return static_cast<u64>(i) + 1;
  }
  return nr;
}

// strncmp as the kernel's lib/string.c has it: -1, 0 or 1.
u64 bpf_strncmp(u64 s1, u64 s1_sz, u64 s2, u64, u64) {
  const auto* a = reinterpret_cast<const unsigned char*>(cptr(s1));
  const auto* b = reinterpret_cast<const unsigned char*>(cptr(s2));
  for (auto count = static_cast<uint32_t>(s1_sz); count; count--) {
    unsigned char c1 = *a++, c2 = *b++;
    if (c1 != c2) return c1 < c2 ? static_cast<u64>(-1) : 1;
    if (!c1) break;
  }
  return 0;
}

u64 bpf_strtol(u64 buf, u64 buf_len, u64 flags, u64 res, u64) {
  if (!res) return neg(EINVAL);
  unsigned long long v;
  bool is_negative;
  int err = strtoull_common(cptr(buf), buf_len, flags, &v, &is_negative);
  if (err < 0) return neg(-err);
  long long out;
  if (is_negative) {
    if (static_cast<long long>(0 - v) > 0) return neg(ERANGE);
    out = static_cast<long long>(0 - v);
  } else {
    if (static_cast<long long>(v) < 0) return neg(ERANGE);
    out = static_cast<long long>(v);
  }
  std::memcpy(reinterpret_cast<void*>(static_cast<uintptr_t>(res)), &out, sizeof(out));
  return static_cast<u64>(err);
}

u64 bpf_strtoul(u64 buf, u64 buf_len, u64 flags, u64 res, u64) {
  if (!res) return neg(EINVAL);
  unsigned long long v;
  bool is_negative;
  int err = strtoull_common(cptr(buf), buf_len, flags, &v, &is_negative);
  if (err < 0) return neg(-err);
  if (is_negative) return neg(EINVAL);
  std::memcpy(reinterpret_cast<void*>(static_cast<uintptr_t>(res)), &v, sizeof(v));
  return static_cast<u64>(err);
}

u64 bpf_rcu_read_lock(u64, u64, u64, u64, u64) {
  return 0;
}
u64 bpf_rcu_read_unlock(u64, u64, u64, u64, u64) {
  return 0;
}

}  // namespace userbpf::helpers
