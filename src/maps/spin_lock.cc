// The slow paths of the bpf_spin_lock word protocol (spin_lock.h).
#include "maps/spin_lock.h"

#include <sched.h>

#include "maps/map_lock.h"

namespace userbpf::maps {
namespace {

constinit std::atomic<uint32_t> g_next_token{1};

}  // namespace

uint32_t spin_lock_new_token() {
  uint32_t token = g_next_token.fetch_add(1, std::memory_order_relaxed);
  if (token == 0) token = g_next_token.fetch_add(1, std::memory_order_relaxed);  // wrapped
  t_spin.token = token;
  return token;
}

int spin_lock_wait(uint32_t* word, uint32_t token, uint32_t seen, bool bounded) {
  uint32_t spins = 0, rounds = 0;
  for (;;) {
    if (seen == token) return -EDEADLK;
    if (seen == 0) {
      if (__atomic_compare_exchange_n(word, &seen, token, false, __ATOMIC_ACQUIRE,
                                      __ATOMIC_RELAXED))
        return 0;
      continue;  // seen holds the new owner
    }
    if (++spins < kSpinsPerRound) {
      cpu_relax();
    } else {
      spins = 0;
      if (bounded && ++rounds >= kBoundedRounds) return -EBUSY;
      // sched_yield never fails on Linux, so errno is left alone (handlers).
      sched_yield();
    }
    seen = __atomic_load_n(word, __ATOMIC_RELAXED);
  }
}

}  // namespace userbpf::maps
