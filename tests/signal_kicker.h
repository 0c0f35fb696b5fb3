// Test support for programs and map operations run inside signal handlers:
// a handler installed for a scope, and a thread that signals workers in turn.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

namespace userbpf::test {

// handler for sig (SA_RESTART, nothing masked) until destroyed, then the
// previous disposition again. ok(): sigaction succeeded.
class ScopedSignal {
 public:
  ScopedSignal(int sig, void (*handler)(int)) : sig_(sig) {
    struct sigaction sa{};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ok_ = sigaction(sig, &sa, &old_) == 0;
  }
  ~ScopedSignal() {
    if (ok_) sigaction(sig_, &old_, nullptr);
  }
  ScopedSignal(const ScopedSignal&) = delete;
  ScopedSignal& operator=(const ScopedSignal&) = delete;
  bool ok() const { return ok_; }

 private:
  int sig_;
  struct sigaction old_{};
  bool ok_ = false;
};

// Sends sig to each of targets in turn, one every period, until stop() (or
// destruction). Stop it before joining the targets.
class SignalKicker {
 public:
  SignalKicker(std::vector<pthread_t> targets, int sig, std::chrono::microseconds period)
      : thread_([this, targets = std::move(targets), sig, period] {
          for (size_t i = 0; !stop_.load(std::memory_order_relaxed); i++) {
            pthread_kill(targets[i % targets.size()], sig);
            std::this_thread::sleep_for(period);
          }
        }) {}
  ~SignalKicker() { stop(); }
  SignalKicker(const SignalKicker&) = delete;
  SignalKicker& operator=(const SignalKicker&) = delete;
  void stop() {
    stop_.store(true, std::memory_order_relaxed);
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};  // before thread_: set up before it starts
  std::thread thread_;
};

}  // namespace userbpf::test
