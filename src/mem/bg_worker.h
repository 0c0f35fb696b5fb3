// The background thread of a memory domain: the kernel's irq_work and RCU
// kthreads in one. Tasks (the RCU reclaimer, each object cache's refill and
// trim) run on it, one after another, whenever someone kicks it or their
// requested delay passes.
//
// Contexts: kick() from any context (programs, signal handlers): one relaxed
// check in the common case, a futex wake at most. add_task/remove_task/
// run_sync and the destructor: host only (they take a mutex). Tasks run on
// the worker thread with the task mutex held; remove_task returns only once
// the task is not running.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace userbpf::mem {

class BackgroundWorker {
 public:
  // A task returns the delay in ns after which it wants to run again even
  // without a kick (0: only when kicked).
  using TaskFn = uint64_t (*)(void* arg);

  BackgroundWorker();
  ~BackgroundWorker();
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;

  void add_task(TaskFn fn, void* arg);
  void remove_task(TaskFn fn, void* arg);

  // Asks for a pass over all tasks soon. Async-signal-safe, never blocks.
  void kick() {
    if (pending_.load(std::memory_order_relaxed)) return;
    kick_slow();
  }

  // Kicks and waits until a full pass that started after this call is done.
  // Host only, never from the worker thread itself.
  void run_sync();

  uint64_t passes() const { return passes_.load(std::memory_order_relaxed); }

 private:
  void kick_slow();
  void loop();

  struct Task {
    TaskFn fn;
    void* arg;
  };
  std::mutex mu_;  // guards tasks_ and is held while tasks run
  std::vector<Task> tasks_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> passes_{0};
  std::atomic<uint32_t> pending_{0};
  std::atomic<uint32_t> waiting_{0};  // futex word: 1 while the worker sleeps
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace userbpf::mem
