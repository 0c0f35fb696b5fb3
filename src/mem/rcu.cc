// The RCU domain: grace-period detection by scanning slots and reader
// records, the reader-record pool, the reclaimer task, synchronize_rcu and
// rcu_barrier.
#include "mem/rcu.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "base/assert.h"

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
uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// ---- reader records ----
//
// Invariants: readers[i].owned is 1 for exactly the records threads hold;
// owned_count == number of them; every record at index >= high_water has
// never been owned; a record that is not owned shows epoch 0. A thread
// takes its record with a seq_cst fence after the count is raised, and
// writers fence before they read the count: either a writer sees the record
// or every section on it sees what the writer unlinked first.
struct ReaderPool {
  detail::RcuReader readers[detail::kMaxRcuReaders];
  alignas(64) std::atomic<uint32_t> high_water{0};
  std::atomic<uint32_t> owned_count{0};
  // Whether readers use the light path: set once, before the first record
  // is handed out, and never changed.
  std::atomic<bool> membarrier{false};
};
constinit ReaderPool g_pool;
constinit std::atomic<uint64_t> g_next_domain_id{1};  // 0: a record that never had one

// Registers the process for membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
// (once; host). False: readers fence themselves.
bool init_membarrier() {
#if defined(USERBPF_RCU_TSAN)
  return false;  // TSan sees fences, not membarrier's ordering
#else
  const char* off = getenv("USERBPF_RCU_NO_MEMBARRIER");
  if (off && *off && *off != '0') return false;
  const int saved_errno = errno;
  const long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  const bool ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                  syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  errno = saved_errno;
  g_pool.membarrier.store(ok, std::memory_order_relaxed);
  return ok;
#endif
}

// In a child after fork() only the forking thread lives on: the records of
// the others (some perhaps inside a section) would block grace periods
// forever.
void reset_records_in_child() {
  const uint32_t hw = g_pool.high_water.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < hw; i++) {
    detail::RcuReader& r = g_pool.readers[i];
    if (&r == detail::t_reader) continue;
    r.epoch.store(0, std::memory_order_relaxed);
    r.owned.store(0, std::memory_order_relaxed);
  }
  g_pool.owned_count.store(detail::t_reader ? 1 : 0, std::memory_order_relaxed);
}

// Once per process, before the first record is handed out: the fence
// choice, and the fork handler.
bool init_records() {
  pthread_atfork(nullptr, nullptr, reset_records_in_child);
  return init_membarrier();
}

// Set by the thread's exit (the holder below) and by use_slots_only: no
// (more) record for this thread.
constinit thread_local bool t_no_record = false;

detail::RcuReader* take_record() {
  for (;;) {
    const uint32_t hw = g_pool.high_water.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < hw; i++) {
      detail::RcuReader& r = g_pool.readers[i];
      uint32_t expected = 0;
      if (r.owned.load(std::memory_order_relaxed) == 0 &&
          r.owned.compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                          std::memory_order_relaxed))
        return &r;
    }
    if (hw == detail::kMaxRcuReaders) return nullptr;  // full: slots
    uint32_t expected = hw;
    g_pool.high_water.compare_exchange_strong(expected, hw + 1, std::memory_order_acq_rel,
                                              std::memory_order_relaxed);
  }
}

void give_back_record() {
  detail::RcuReader* r = detail::t_reader;
  if (!r) return;
  detail::t_reader = nullptr;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  // A section still open (a guard that outlives its thread's exit cannot
  // exist; belt and braces): the record stays out of the pool for good.
  if (r->epoch.load(std::memory_order_relaxed) != 0) return;
  g_pool.owned_count.fetch_sub(1, std::memory_order_release);
  r->owned.store(0, std::memory_order_release);
}

// Gives the thread's record back when the thread exits (thread_local
// destructors run before pthread_join returns).
struct RecordHolder {
  bool armed = false;
  ~RecordHolder() {
    t_no_record = true;  // a later thread_local destructor reads on slots
    give_back_record();
  }
};
thread_local RecordHolder t_holder;

// The calling thread's new record, or null (pool full, thread exiting).
// Host context only: magic statics and thread_local registration.
detail::RcuReader* register_record() {
  if (t_no_record) return nullptr;
  static const bool light = init_records();
  detail::RcuReader* r = take_record();
  if (!r) return nullptr;
  r->light = light;
  g_pool.owned_count.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  t_holder.armed = true;  // registers its destructor
  detail::t_reader = r;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return r;
}

}  // namespace

RcuReaderStats rcu_reader_stats() {
  return {g_pool.high_water.load(std::memory_order_relaxed),
          g_pool.owned_count.load(std::memory_order_relaxed),
          g_pool.membarrier.load(std::memory_order_relaxed)};
}

RcuDomain::RcuDomain(SlotTable& slots, BackgroundWorker& worker)
    : slots_(slots),
      id_(g_next_domain_id.fetch_add(1, std::memory_order_relaxed)),
      worker_(worker) {
  worker_.add_task(&RcuDomain::reclaim_task, this);
}

RcuDomain::~RcuDomain() {
  (void)rcu_barrier();
  worker_.remove_task(&RcuDomain::reclaim_task, this);
}

bool RcuDomain::poll(uint64_t cookie, RcuFlavor flavor, bool expedite) const {
  SlotRange r = flavor_range(slots_, flavor);
  for (uint32_t i = r.begin; i < r.end; i++) {
    uint64_t s = slots_.slot_state(i);
    if (s != 0 && s < cookie) return false;
  }
  return flavor == RcuFlavor::kTasksTrace || readers_passed(cookie, expedite);
}

bool RcuDomain::readers_passed(uint64_t cookie, bool expedite) const {
  // A domain no record ever entered: nothing to scan, no fence. The mark
  // is set and fenced before the first such section (switch_domain);
  // start_gp's read-modify-write (a full barrier on x86-64 and arm64)
  // ordered the unlink before the cookie, and the acquire fence orders our
  // load of the cookie (whoever took it) before this load: either we see
  // the mark or the section sees the unlink.
  std::atomic_thread_fence(std::memory_order_acquire);
  if (!record_readers_.load(std::memory_order_relaxed)) return true;
  // Orders what was unlinked before the cookie (start_gp may have run on
  // another thread) before the loads below: the writer's half of the fence
  // path, and of a record's registration.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Acquire: a count raised by a registration comes with the fence choice.
  if (g_pool.owned_count.load(std::memory_order_acquire) == 0) return true;
  if (g_pool.membarrier.load(std::memory_order_relaxed) &&
      mb_epoch_.load(std::memory_order_acquire) < cookie) {
    if (!expedite && now_ns() - mb_time_ns_.load(std::memory_order_relaxed) < mb_gap_ns_)
      return false;  // a poll after the gap will tell
    heavy_barrier();
  }
  const uint32_t hw = g_pool.high_water.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < hw; i++) {
    const detail::RcuReader& rec = g_pool.readers[i];
    const uint64_t e = rec.epoch.load(std::memory_order_acquire);
    if (e == 0 || e >= cookie) continue;  // idle, or entered after the advance
    // Acquire after the epoch: the domain of that section, or of a later one
    // (that section is over).
    if (rec.domain.load(std::memory_order_acquire) == id_) return false;
  }
  return true;
}

void RcuDomain::heavy_barrier() const {
  const uint64_t e = slots_.epoch().load(std::memory_order_seq_cst);
  const int saved_errno = errno;  // may run in a signal handler
  const long rc = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  errno = saved_errno;
  USERBPF_ASSERT(rc == 0);  // registered before any reader took the light path
  // Every record store before the barrier is visible to us now, and every
  // section entered after it sees what was unlinked before epoch e.
  uint64_t cur = mb_epoch_.load(std::memory_order_relaxed);
  while (cur < e && !mb_epoch_.compare_exchange_weak(cur, e, std::memory_order_release,
                                                     std::memory_order_relaxed)) {
  }
  mb_time_ns_.store(now_ns(), std::memory_order_relaxed);
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
  if (SlotTable::thread_in_slot() || RcuReadGuard::in_record_section())
    return make_error(EDEADLK, "synchronize_rcu called inside a read-side section");
  uint64_t cookie = start_gp();
  for (uint32_t round = 0; !poll(cookie, flavor, true); round++) pause_briefly(round);
  return Status::Ok();
}

Status RcuDomain::rcu_barrier() {
  if (SlotTable::thread_in_slot() || RcuReadGuard::in_record_section())
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
  // Registering is for host threads: never in a signal handler (kNoWait),
  // nor inside a run or slot section (a handler may have interrupted it).
  if (mode == EnterMode::kWait && !detail::t_reader && !SlotTable::thread_in_slot()) {
    if (detail::RcuReader* r = register_record()) {
      if (r->domain.load(std::memory_order_relaxed) != rcu.id()) switch_domain(r, rcu);
      enter_record(r, rcu);
      return;
    }
  }
  const int slot = rcu.slots().enter(mode);
  kind_ = slot;
  if (slot < 0) return;
  rcu_ = &rcu;
  outer_ = t_domain_;
  t_domain_ = &rcu;
}

void RcuReadGuard::leave_slow() {
  if (kind_ < 0) return;  // a miss
  // Out of the section before the slot is gone, as RcuReadHold::release.
  t_domain_ = outer_;
  rcu_->slots().leave(kind_);
}

void RcuReadGuard::switch_domain(detail::RcuReader* r, RcuDomain& rcu) {
  // Mark the domain, then fence before the record can show it (to a
  // signal handler of this thread too): paired with start_gp's
  // read-modify-write, which orders a writer's unlink before readers_passed
  // reads the mark, either the writer sees the mark (and scans the records)
  // or every section of the domain on this record sees the unlink.
  if (!rcu.record_readers_.load(std::memory_order_relaxed))
    rcu.record_readers_.store(true, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  r->domain.store(rcu.id(), std::memory_order_relaxed);
}

void RcuReadGuard::use_slots_only(bool on) {
  USERBPF_ASSERT(!in_record_section());
  t_no_record = on;
  if (on) give_back_record();
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
