// struct bpf_spin_lock in map values: the lock word protocol shared by the
// helpers bpf_spin_lock / bpf_spin_unlock (src/helpers/helpers_spin_lock.cc),
// BPF_F_LOCK copies (special_fields.h) and the end of a run that still holds
// a lock (vm::RunLoop).
//
// The kernel takes the lock with IRQs disabled (__bpf_spin_lock_irqsave), so
// nothing else runs on that CPU while a program holds it, and its verifier
// proves that a holder calls no helper, takes no second lock and never
// returns holding it. User space has neither guarantee: a signal handler may
// run a program (or a host BPF_F_LOCK copy) on a thread whose interrupted
// code holds the very lock it wants, and userbpf checks programs at run
// time. So the lock word holds an owner token instead of 1:
//   word == 0      free
//   word == token  held by the thread whose nonzero token it is
// An acquisition that finds its own thread's token cannot wait (the holder
// is the code it interrupted): it fails with -EDEADLK at once.
//
// Deadlock freedom. Each thread counts the locks it holds or is acquiring,
// in any context (SpinThreadState::busy). A wait is bounded (then -EBUSY) when
// the thread was busy before it started, or when the caller asks (a nested
// run: signal handler, or a run inside another run on the same thread). A
// thread that is not busy holds no spin lock and is taking none, so no one
// waits for it: its unbounded wait cannot close a cycle. Two threads whose
// handlers wait for each other's interrupted holders both give up after the
// bound. The other rules that keep holders from waiting are the callers':
// one lock per run and no map update/delete while holding one
// (helpers_spin_lock.cc), and BPF_F_LOCK map operations refuse to start on
// a busy thread (map_check_lock_flag) so they never wait under a bucket
// lock for a lock their own thread holds.
//
// Invariants: busy is raised before the word is taken and lowered after it
// is released, so a handler never sees "not busy" while its thread holds a
// lock. Locks are released on the thread that took them.
// Contexts: any (program, host, signal handler). Never allocates; the slow
// path may sched_yield.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace userbpf::maps {

struct SpinThreadState {
  uint32_t token = 0;  // this thread's owner token, 0 until first use
  uint32_t busy = 0;   // spin locks this thread holds or is acquiring
};

// initial-exec: no lazy TLS allocation, so safe to touch in a signal handler.
inline constinit thread_local SpinThreadState t_spin __attribute__((tls_model("initial-exec")));

// Assigns this thread's token (nonzero, distinct per thread until 2^32
// threads were seen).
uint32_t spin_lock_new_token();

// Slow path of spin_lock_acquire: the word held `seen` on the first try.
int spin_lock_wait(uint32_t* word, uint32_t token, uint32_t seen, bool bounded);

// Spin rounds of a bounded wait: each is kSpinsPerRound pause instructions
// then a sched_yield (unbounded waits yield after the same number, since
// the holder may be preempted when there are more threads than cores).
inline constexpr uint32_t kSpinsPerRound = 256;
inline constexpr uint32_t kBoundedRounds = 128;

// Whether this thread holds or is taking a spin lock (in any context).
inline bool spin_lock_thread_busy() {
  return t_spin.busy != 0;
}

// Takes the lock word: 0; -EDEADLK if this thread holds it (an interrupted
// context); -EBUSY if the wait was bounded (nested, or this thread busy) and
// the lock stayed taken. Uncontended: one compare-exchange.
inline int spin_lock_acquire(uint32_t* word, bool nested) {
  SpinThreadState& t = t_spin;
  const uint32_t token = t.token != 0 ? t.token : spin_lock_new_token();
  const bool bounded = nested || t.busy != 0;
  t.busy++;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t seen = 0;
  if (__atomic_compare_exchange_n(word, &seen, token, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
      [[likely]]
    return 0;
  const int err = spin_lock_wait(word, token, seen, bounded);
  if (err != 0) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.busy--;
  }
  return err;
}

// Releases a word this thread took with spin_lock_acquire: one store.
inline void spin_lock_release(uint32_t* word) {
  __atomic_store_n(word, 0, __ATOMIC_RELEASE);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_spin.busy--;
}

}  // namespace userbpf::maps
