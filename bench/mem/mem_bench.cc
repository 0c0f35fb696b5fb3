// Benchmarks of src/mem against the bars of issue 3: slot enter+leave
// <= 10 ns, RCU read section <= 2 ns, synchronize_rcu idle <= 20 us, object
// alloc+free pairs next to glibc malloc/free and jemalloc on the same sizes,
// and bpf_obj_new + bpf_obj_drop without an engine around them (what the
// kfuncs cost; the program-level figure is bench/progs/obj_new_drop).
// `make bench` prints the pairs at 16..4000 bytes under its table
// (bench/run_bench.sh). Run: build/bench/mem/userbpf_mem_bench
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "maps/bpf_obj.h"
#include "mem/domain.h"
#include "mem/obj_cache.h"

#ifdef USERBPF_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

// glibc's own entry points (exported), so the comparison stays glibc even
// when jemalloc replaces malloc in this binary.
extern "C" void* __libc_malloc(size_t);
extern "C" void __libc_free(void*);

namespace userbpf::mem {
namespace {

struct Env {
  SlotTable slots;
  BackgroundWorker worker;
  RcuDomain rcu{slots, worker};
  PagePool pages;
  MemAlloc alloc{slots, rcu, worker, pages};
  Env() {
    if (!alloc.init({}).ok()) std::abort();
  }
};

Env& env() {
  static Env* e = new Env();
  return *e;
}

void BM_SlotEnterLeave(benchmark::State& state) {
  SlotTable& t = env().slots;
  for (auto _ : state) {
    int s = t.enter();
    benchmark::DoNotOptimize(s);
    t.leave(s);
  }
}
BENCHMARK(BM_SlotEnterLeave)->Threads(1)->Threads(2);

void BM_CurrentCpuId(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(current_cpu_id());
}
BENCHMARK(BM_CurrentCpuId);

// A read-side section inside a program run (the thread already holds a slot
// of the domain): what bpf_rcu_read_lock/unlock and nested host lookups pay.
void BM_RcuReadSectionNested(benchmark::State& state) {
  RcuDomain& rcu = env().rcu;
  SlotGuard run(rcu.slots());  // as a run: a slot, marked as the domain's section
  RcuDomain* outer = RcuReadGuard::set_current(&rcu);
  for (auto _ : state) {
    RcuReadGuard g(rcu);
    benchmark::DoNotOptimize(&g);
  }
  RcuReadGuard::set_current(outer);
}
BENCHMARK(BM_RcuReadSectionNested);

// The same inside a host thread's section on its reader record.
void BM_RcuReadSectionNestedInRecord(benchmark::State& state) {
  RcuDomain& rcu = env().rcu;
  RcuReadGuard outer(rcu);
  if (!outer.on_record()) state.SkipWithError("no reader record");
  for (auto _ : state) {
    RcuReadGuard g(rcu);
    benchmark::DoNotOptimize(&g);
  }
}
BENCHMARK(BM_RcuReadSectionNestedInRecord);

// A read-side section from a host thread outside any section: on the
// thread's reader record (rcu.h; the first one registers it).
void BM_RcuReadSectionStandalone(benchmark::State& state) {
  RcuDomain& rcu = env().rcu;
  for (auto _ : state) {
    RcuReadGuard g(rcu);
    benchmark::DoNotOptimize(&g);
  }
}
BENCHMARK(BM_RcuReadSectionStandalone)->Threads(1)->Threads(2);

// The same on the slot fallback (pool full, or a thread that may not
// register): claims and releases a slot.
void BM_RcuReadSectionSlot(benchmark::State& state) {
  RcuDomain& rcu = env().rcu;
  RcuReadGuard::use_slots_only(true);
  for (auto _ : state) {
    RcuReadGuard g(rcu);
    benchmark::DoNotOptimize(&g);
  }
  RcuReadGuard::use_slots_only(false);
}
BENCHMARK(BM_RcuReadSectionSlot);

// A grace period with nothing to wait for, on a domain no reader record
// ever entered (readers hold slots: program runs, map operations).
void BM_SynchronizeRcuIdle(benchmark::State& state) {
  Env& e = env();
  RcuDomain rcu{e.slots, e.worker};
  for (auto _ : state) {
    if (!rcu.synchronize_rcu().ok()) state.SkipWithError("synchronize_rcu failed");
  }
}
BENCHMARK(BM_SynchronizeRcuIdle)->UseRealTime();

// The same on a domain read through records (this thread owns one): each
// grace period pays a membarrier.
void BM_SynchronizeRcuIdleRecordReaders(benchmark::State& state) {
  RcuDomain& rcu = env().rcu;
  {
    RcuReadGuard registers(rcu);
  }
  for (auto _ : state) {
    if (!rcu.synchronize_rcu().ok()) state.SkipWithError("synchronize_rcu failed");
  }
}
BENCHMARK(BM_SynchronizeRcuIdleRecordReaders)->UseRealTime();

// alloc+free pair on a held slot (a program's bpf_obj_new + bpf_obj_drop
// without the interpreter around it).
void BM_ObjAllocFree(benchmark::State& state) {
  Env& e = env();
  size_t size = static_cast<size_t>(state.range(0));
  SlotGuard g(e.slots);
  for (auto _ : state) {
    void* p = e.alloc.alloc(g.slot(), size);
    benchmark::DoNotOptimize(p);
    e.alloc.free(g.slot(), p);
  }
}
BENCHMARK(BM_ObjAllocFree)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4000);

// The same pair including the slot claim (a host call or a one-shot run).
void BM_ObjAllocFreeWithSlot(benchmark::State& state) {
  Env& e = env();
  size_t size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    int s = e.slots.enter();
    void* p = e.alloc.alloc(s, size);
    benchmark::DoNotOptimize(p);
    e.alloc.free(s, p);
    e.slots.leave(s);
  }
}
BENCHMARK(BM_ObjAllocFreeWithSlot)->Arg(64)->Threads(1)->Threads(2);

// bpf_obj_new + bpf_obj_drop of a size-byte object as the kfuncs run them
// (maps/bpf_obj.h: zeroing, the hidden state word, the ownership check on
// drop), from a held slot of the domain.
void BM_ObjNewDrop(benchmark::State& state) {
  static MemDomain* d = new MemDomain();
  const auto size = static_cast<uint32_t>(state.range(0));
  SlotGuard g(d->slots);
  for (auto _ : state) {
    void* p = maps::obj_new(*d, size);
    benchmark::DoNotOptimize(p);
    if (maps::obj_drop(*d, p, false) != maps::ObjError::kOk) state.SkipWithError("drop failed");
  }
}
BENCHMARK(BM_ObjNewDrop)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4000);

void BM_GlibcMallocFree(benchmark::State& state) {
  size_t size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void* p = __libc_malloc(size);
    benchmark::DoNotOptimize(p);
    __libc_free(p);
  }
}
BENCHMARK(BM_GlibcMallocFree)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4000);

#ifdef USERBPF_HAVE_JEMALLOC
void BM_JemallocFree(benchmark::State& state) {
  size_t size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void* p = mallocx(size, 0);
    benchmark::DoNotOptimize(p);
    dallocx(p, 0);
  }
}
BENCHMARK(BM_JemallocFree)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4000);
#endif

}  // namespace
}  // namespace userbpf::mem

BENCHMARK_MAIN();
