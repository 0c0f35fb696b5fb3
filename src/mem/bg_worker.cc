// The background worker thread: an eventcount on a futex (kick is a store and,
// only when the worker sleeps, one FUTEX_WAKE) and a loop over the tasks.
#include "mem/bg_worker.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

namespace userbpf::mem {

namespace {

void futex_wait(std::atomic<uint32_t>* word, uint32_t val, uint64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
              static_cast<long>(timeout_ns % 1'000'000'000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, val,
          timeout_ns ? &ts : nullptr, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

constexpr uint64_t kIdleTimeoutNs = 100'000'000;  // a pass every 100 ms anyway

}  // namespace

BackgroundWorker::BackgroundWorker() : thread_([this] { loop(); }) {}

BackgroundWorker::~BackgroundWorker() {
  stop_.store(true, std::memory_order_seq_cst);
  kick_slow();
  thread_.join();
}

void BackgroundWorker::add_task(TaskFn fn, void* arg) {
  std::lock_guard<std::mutex> lk(mu_);
  tasks_.push_back({fn, arg});
}

void BackgroundWorker::remove_task(TaskFn fn, void* arg) {
  std::lock_guard<std::mutex> lk(mu_);
  tasks_.erase(std::remove_if(tasks_.begin(), tasks_.end(),
                              [&](const Task& t) { return t.fn == fn && t.arg == arg; }),
               tasks_.end());
}

void BackgroundWorker::kick_slow() {
  pending_.store(1, std::memory_order_seq_cst);
  if (waiting_.exchange(0, std::memory_order_seq_cst)) futex_wake(&waiting_);
}

void BackgroundWorker::run_sync() {
  // A pass that starts after the kick has seen everything before it; two
  // completed passes from now guarantee one of them started after.
  uint64_t target = passes_.load(std::memory_order_acquire) + 2;
  std::unique_lock<std::mutex> lk(done_mu_);
  while (passes_.load(std::memory_order_acquire) < target) {
    lk.unlock();
    kick_slow();
    lk.lock();
    done_cv_.wait_for(lk, std::chrono::milliseconds(1));
  }
}

void BackgroundWorker::loop() {
  while (!stop_.load(std::memory_order_acquire)) {
    pending_.store(0, std::memory_order_seq_cst);
    uint64_t delay = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (const Task& t : tasks_) {
        uint64_t d = t.fn(t.arg);
        if (d && (!delay || d < delay)) delay = d;
      }
    }
    {
      std::lock_guard<std::mutex> lk(done_mu_);
      passes_.fetch_add(1, std::memory_order_release);
    }
    done_cv_.notify_all();
    if (stop_.load(std::memory_order_acquire)) break;
    // Sleep unless kicked meanwhile: waiting_ = 1 before re-checking pending_
    // pairs with kick_slow's store of pending_ before its exchange of waiting_.
    waiting_.store(1, std::memory_order_seq_cst);
    if (pending_.load(std::memory_order_seq_cst) == 0)
      futex_wait(&waiting_, 1, delay ? delay : kIdleTimeoutNs);
    waiting_.store(0, std::memory_order_relaxed);
  }
}

}  // namespace userbpf::mem
