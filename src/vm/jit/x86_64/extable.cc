// The JIT's exception table: probe (PROBE_MEM32) accesses that fault on an
// unpopulated page are resolved by a SIGSEGV handler: a load yields 0, a
// store is dropped, and execution resumes after the instruction, as the
// kernel does for arena accesses. Faults elsewhere go to the previous handler.
//
// Contexts: register/unregister run on host threads (compile, image
// destruction); the handler runs in any thread, in signal context, and only
// reads: slots are fixed static storage of atomics, so it takes no lock and
// never allocates. A slot's table is dereferenced only when the faulting rip
// lies in that slot's code range, i.e. while that image's code is executing
// on the faulting thread and so cannot be destroyed (an image is unregistered
// before its code is unmapped, and a new image can only be mapped there after).
#include <signal.h>
#include <sys/ucontext.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "vm/jit/x86_64/jit_internal.h"

namespace userbpf::vm::jit {
namespace {

constexpr int kMaxSlots = 1024;

struct Slot {
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<const JitImage*> image{nullptr};
};

Slot g_slots[kMaxSlots];
struct sigaction g_prev;
std::once_flag g_install_once;

const ExtableEntry* find_entry(const JitImage* img, uint32_t off) {
  size_t lo = 0, hi = img->extable.size();
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    const ExtableEntry& e = img->extable[mid];
    if (off < e.start) {
      hi = mid;
    } else if (off >= e.end) {
      lo = mid + 1;
    } else {
      return &e;
    }
  }
  return nullptr;
}

// Faults that are not ours: the previous disposition, exactly as if we were
// not installed (default: reset and return, so the fault recurs and kills).
void chain(int sig, siginfo_t* info, void* uc) {
  if (g_prev.sa_flags & SA_SIGINFO) {
    if (g_prev.sa_sigaction != nullptr) {
      g_prev.sa_sigaction(sig, info, uc);
      return;
    }
  } else if (g_prev.sa_handler != SIG_DFL && g_prev.sa_handler != SIG_IGN) {
    g_prev.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);
}

void on_segv(int sig, siginfo_t* info, void* ucv) {
  auto* uc = static_cast<ucontext_t*>(ucv);
  const uintptr_t rip = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  for (Slot& slot : g_slots) {
    const uintptr_t start = slot.start.load(std::memory_order_acquire);
    if (rip < start || rip >= slot.end.load(std::memory_order_acquire)) continue;
    const JitImage* img = slot.image.load(std::memory_order_acquire);
    if (img == nullptr) break;
    const ExtableEntry* e = find_entry(img, static_cast<uint32_t>(rip - start));
    if (e == nullptr || rip != start + e->start) break;  // only at the access itself
    if (e->dst_greg >= 0) uc->uc_mcontext.gregs[e->dst_greg] = 0;
    uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(start + e->end);
    return;
  }
  chain(sig, info, ucv);
}

void install() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = &on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_prev);
}

}  // namespace

int register_extable(const JitImage* image) {
  std::call_once(g_install_once, install);
  const uintptr_t start = reinterpret_cast<uintptr_t>(image->code);
  for (int i = 0; i < kMaxSlots; ++i) {
    const JitImage* expected = nullptr;
    if (g_slots[i].image.compare_exchange_strong(expected, image, std::memory_order_acq_rel)) {
      // start before end: a half-set slot has end 0 and matches nothing.
      g_slots[i].start.store(start, std::memory_order_release);
      g_slots[i].end.store(start + image->code_size, std::memory_order_release);
      return i;
    }
  }
  return -1;
}

void unregister_extable(int slot) {
  if (slot < 0 || slot >= kMaxSlots) return;
  g_slots[slot].end.store(0, std::memory_order_release);
  g_slots[slot].start.store(0, std::memory_order_release);
  g_slots[slot].image.store(nullptr, std::memory_order_release);
}

}  // namespace userbpf::vm::jit
