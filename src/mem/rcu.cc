// The RCU domain: grace-period detection by scanning slots, the reclaimer
// task, synchronize_rcu and rcu_barrier.
#include "mem/rcu.h"

#include <sched.h>
#include <time.h>

#include <algorithm>

namespace userbpf::mem {

namespace {

struct SlotRange {
  uint32_t begin, end;
};

SlotRange flavor_range(const SlotTable& t, RcuFlavor f) {
  switch (f) {
    case RcuFlavor::kNormal:
      return {0, t.num_slots()};
    case RcuFlavor::kTasksTrace:
      return {t.num_slots(), t.total_slots()};
    case RcuFlavor::kBoth:
      break;
  }
  return {0, t.total_slots()};
}

void pause_briefly(uint32_t round) {
  if (round < 100) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  } else if (round < 200) {
    sched_yield();
  } else {
    timespec ts{0, 20'000};
    nanosleep(&ts, nullptr);
  }
}

constexpr uint64_t kRepollNs = 50'000;  // reclaimer re-checks pending batches after 50 us

}  // namespace

RcuDomain::RcuDomain(SlotTable& slots, BackgroundWorker& worker) : slots_(slots), worker_(worker) {
  worker_.add_task(&RcuDomain::reclaim_task, this);
}

RcuDomain::~RcuDomain() {
  (void)rcu_barrier();
  worker_.remove_task(&RcuDomain::reclaim_task, this);
}

bool RcuDomain::poll_gp(uint64_t cookie, RcuFlavor flavor) const {
  SlotRange r = flavor_range(slots_, flavor);
  for (uint32_t i = r.begin; i < r.end; i++) {
    uint64_t s = slots_.slot_state(i);
    if (s != 0 && s < cookie) return false;
  }
  return true;
}

void RcuDomain::call_rcu(RcuHead* head, void (*func)(RcuHead*), RcuFlavor flavor) {
  head->func = func;
  queued_.fetch_add(1, std::memory_order_relaxed);
  auto& list = pending_[static_cast<int>(flavor)];
  RcuHead* old = list.load(std::memory_order_relaxed);
  do {
    head->next = old;
  } while (
      !list.compare_exchange_weak(old, head, std::memory_order_release, std::memory_order_relaxed));
  worker_.kick();
}

Status RcuDomain::synchronize_rcu(RcuFlavor flavor) {
  if (SlotTable::thread_in_slot())
    return make_error(EDEADLK, "synchronize_rcu called inside a read-side section");
  uint64_t cookie = start_gp();
  for (uint32_t round = 0; !poll_gp(cookie, flavor); round++) pause_briefly(round);
  return Status::Ok();
}

Status RcuDomain::rcu_barrier() {
  if (SlotTable::thread_in_slot())
    return make_error(EDEADLK, "rcu_barrier called inside a read-side section");
  // Everything queued before now is taken by pass taken_gen_ + 1 at the latest.
  uint64_t target = taken_gen_.load(std::memory_order_acquire) + 1;
  for (uint32_t round = 0; done_gen_.load(std::memory_order_acquire) < target; round++) {
    worker_.kick();
    timespec ts{0, round < 10 ? 20'000 : 200'000};
    nanosleep(&ts, nullptr);
  }
  return Status::Ok();
}

uint64_t RcuDomain::reclaim_task(void* self) {
  return static_cast<RcuDomain*>(self)->reclaim();
}

uint64_t RcuDomain::reclaim() {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t gen = taken_gen_.load(std::memory_order_relaxed) + 1;
  bool took = false;
  uint64_t cookie = 0;
  for (int f = 0; f < kNumRcuFlavors; f++) {
    RcuHead* list = pending_[f].exchange(nullptr, std::memory_order_acquire);
    if (!list) continue;
    if (!took) cookie = start_gp();  // one grace period serves every list of this pass
    took = true;
    batches_.push_back({cookie, gen, static_cast<RcuFlavor>(f), list});
  }
  taken_gen_.store(gen, std::memory_order_release);

  // Run every batch whose grace period is over; batches stay ordered per
  // flavor because cookies grow with gen.
  for (auto it = batches_.begin(); it != batches_.end();) {
    if (!poll_gp(it->cookie, it->flavor)) {
      ++it;
      continue;
    }
    uint64_t n = 0;
    for (RcuHead* h = it->list; h;) {
      RcuHead* next = h->next;  // func may free h
      h->func(h);
      h = next;
      n++;
    }
    done_.fetch_add(n, std::memory_order_relaxed);
    it = batches_.erase(it);
  }
  uint64_t min_gen = gen + 1;
  for (const Batch& b : batches_) min_gen = std::min(min_gen, b.gen);
  done_gen_.store(min_gen - 1, std::memory_order_release);
  return batches_.empty() ? 0 : kRepollNs;
}

void RcuReadGuard::claim(RcuDomain& rcu, EnterMode mode) {
  slot_ = rcu.slots().enter(mode);
  if (slot_ < 0) return;
  rcu_ = &rcu;
  outer_ = t_domain_;
  t_domain_ = &rcu;
}

void RcuReadGuard::release() {
  // Out of the section before the slot is gone, as RcuReadHold::release.
  t_domain_ = outer_;
  rcu_->slots().leave(slot_);
}

void RcuReadHold::release() {
  if (slot_ < 0) return;
  // Out of the section before the slot is gone: a signal handler arriving
  // in between must claim a slot of its own.
  RcuReadGuard::set_current(outer_);
  slots_.leave(slot_);
  slot_ = kSlotMiss;
}

int RcuReadHold::reclaim() {
  if (slot_ >= 0) {
    const bool asked = mark_.requests_word->load(std::memory_order_relaxed) != mark_.requests;
    release();
    // A thread waits for a slot of our pool: let it run before we claim again
    // (it may be waiting on this very CPU).
    if (asked) sched_yield();
  }
  const int slot = sleepable_ ? slots_.enter_sleepable() : slots_.enter();
  if (slot < 0) return kSlotMiss;
  mark_ = slots_.hold_mark(slot);
  outer_ = RcuReadGuard::set_current(&rcu_);
  slot_ = slot;
  return slot;
}

}  // namespace userbpf::mem
