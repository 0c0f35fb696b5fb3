// CPU slots: slow paths of enter (another free slot, waiting, misses), the
// sleepable pool and the CPU-number fallbacks.
#include "mem/cpu_slots.h"

#include <sched.h>
#include <sys/sysinfo.h>
#include <time.h>

#include "base/assert.h"

namespace userbpf::mem {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

void sleep_ns(long ns) {
  timespec ts{0, ns};
  nanosleep(&ts, nullptr);
}

}  // namespace

uint32_t current_cpu_id_slow() {
  int cpu = sched_getcpu();
  return cpu < 0 ? 0 : static_cast<uint32_t>(cpu);
}

uint32_t possible_cpus() {
  int n = get_nprocs_conf();
  return n > 0 ? static_cast<uint32_t>(n) : 1;
}

SlotTable::SlotTable(uint32_t num_slots, uint32_t num_sleepable)
    : n_(num_slots ? num_slots : possible_cpus()),
      m_(num_sleepable ? num_sleepable : n_),
      slots_(new Slot[n_ + m_]) {}

SlotTable::~SlotTable() = default;

bool SlotTable::thread_in_slot() {
  return detail::t_depth != 0;
}

int SlotTable::enter_slow(uint32_t first, EnterMode mode) {
  for (uint32_t spins = 0;; spins++) {
    for (uint32_t k = 1; k <= n_; k++) {
      uint32_t idx = first + k < n_ ? first + k : first + k - n_;
      if (slots_[idx].state.load(std::memory_order_relaxed) == 0 && try_claim(idx)) {
        detail::set_level(this, static_cast<int>(idx));
        return static_cast<int>(idx);
      }
    }
    if (mode == EnterMode::kNoWait) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
      detail::t_depth--;
      return kSlotMiss;
    }
    // More runnable threads than slots: wait for a holder to leave. Holders of
    // normal slots never block, so this ends. Holders keeping a slot across
    // sections (hold_fresh) are asked to let go, again at each yield: they
    // may not have seen the first request before their mark.
    if (spins == 0 || spins >= 64) request_yield(false);
    if (spins < 64) {
      cpu_relax();
    } else {
      sched_yield();
    }
  }
}

int SlotTable::enter_sleepable() {
  if (!detail::push_level()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return kSlotMiss;
  }
  uint32_t start = current_cpu_id() % m_;
  for (uint32_t round = 0;; round++) {
    for (uint32_t k = 0; k < m_; k++) {
      uint32_t idx = n_ + (start + k) % m_;
      if (slots_[idx].state.load(std::memory_order_relaxed) == 0 && try_claim(idx)) {
        detail::set_level(this, static_cast<int>(idx));
        return static_cast<int>(idx);
      }
    }
    // Sleepable holders may block for long: back off to sleeping. Holders
    // keeping a slot across sections are asked to let go (each round).
    request_yield(true);
    if (round < 16)
      sched_yield();
    else
      sleep_ns(50'000);
  }
}

bool SlotTable::try_enter_slot(uint32_t idx) {
  USERBPF_ASSERT(idx < n_ + m_);
  if (!detail::push_level()) return false;
  if (slots_[idx].state.load(std::memory_order_relaxed) == 0 && try_claim(idx)) {
    detail::set_level(this, static_cast<int>(idx));
    return true;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  detail::t_depth--;
  return false;
}

}  // namespace userbpf::mem
