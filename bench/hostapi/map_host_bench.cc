// Host API map operations (lookup, update, delete+insert, get_next_key) on
// ARRAY and HASH maps, u32 keys and u64 values, through the public API: the
// cost a host program pays per call, errno plumbing included. The maps come
// from the bench/progs objects, resized before load to the size benchmarked.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "userbpf/userbpf.h"

namespace {

// A loaded object whose map `name` has `entries` entries; aborts the run on
// any error (a benchmark cannot report one meaningfully).
struct Fixture {
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
  userbpf::Map map{nullptr};

  Fixture(const char* object, const char* name, uint32_t entries) {
    auto r = userbpf::Runtime::create();
    if (!r.ok()) die(r.error());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, std::string(USERBPF_BENCH_PROGS_DIR) + "/" + object);
    if (!o.ok()) die(o.error());
    obj = std::move(o.value());
    if (auto st = obj->set_map_max_entries(name, entries); !st.ok()) die(st.error());
    if (auto st = obj->load(); !st.ok()) die(st.error());
    auto m = obj->find_map(name);
    if (!m.ok()) die(m.error());
    map = m.value();
    for (uint32_t k = 0; k < entries; k++) {
      uint64_t v = k;
      if (auto st = map.update(&k, &v); !st.ok()) die(st.error());
    }
  }
  [[noreturn]] static void die(const userbpf::Error& e) {
    std::fprintf(stderr, "map_host_bench: %s\n", e.message.c_str());
    std::abort();
  }
};

// The bench programs' scattered key order (an odd multiplier permutes keys).
inline uint32_t scatter(uint64_t i, uint32_t entries) {
  return static_cast<uint32_t>(i * 0x9e3779b1u) & (entries - 1);
}

constexpr const char* kArrayObj = "array_lookup.bpf.o";
constexpr const char* kHashObj = "hash_lookup.bpf.o";

void lookup(benchmark::State& state, const char* object) {
  const auto entries = static_cast<uint32_t>(state.range(0));
  Fixture f(object, "table", entries);
  uint64_t i = 0, value;
  for (auto _ : state) {
    uint32_t key = scatter(i++, entries);
    benchmark::DoNotOptimize(f.map.lookup(&key, &value).ok());
  }
  state.SetItemsProcessed(state.iterations());
}

void update(benchmark::State& state, const char* object) {
  const auto entries = static_cast<uint32_t>(state.range(0));
  Fixture f(object, "table", entries);
  uint64_t i = 0;
  for (auto _ : state) {
    uint32_t key = scatter(i, entries);
    uint64_t value = i++;
    benchmark::DoNotOptimize(f.map.update(&key, &value).ok());
  }
  state.SetItemsProcessed(state.iterations());
}

void get_next_key(benchmark::State& state, const char* object) {
  const auto entries = static_cast<uint32_t>(state.range(0));
  Fixture f(object, "table", entries);
  uint32_t key = 0, next;
  bool first = true;
  for (auto _ : state) {  // walks the map, starting over at the end
    bool ok = f.map.get_next_key(first ? nullptr : &key, &next).ok();
    first = !ok;
    key = next;
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ArrayLookup(benchmark::State& s) {
  lookup(s, kArrayObj);
}
void BM_ArrayUpdate(benchmark::State& s) {
  update(s, kArrayObj);
}
void BM_ArrayGetNextKey(benchmark::State& s) {
  get_next_key(s, kArrayObj);
}
void BM_HashLookup(benchmark::State& s) {
  lookup(s, kHashObj);
}
void BM_HashUpdate(benchmark::State& s) {
  update(s, kHashObj);
}
void BM_HashGetNextKey(benchmark::State& s) {
  get_next_key(s, kHashObj);
}

void BM_HashLookupMissing(benchmark::State& state) {
  const auto entries = static_cast<uint32_t>(state.range(0));
  Fixture f(kHashObj, "table", entries);
  uint64_t i = 0, value;
  for (auto _ : state) {
    uint32_t key = entries + scatter(i++, entries);  // never present: ENOENT path
    benchmark::DoNotOptimize(f.map.lookup(&key, &value).ok());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_HashDeleteInsert(benchmark::State& state) {
  const auto entries = static_cast<uint32_t>(state.range(0));
  Fixture f(kHashObj, "table", entries);
  uint64_t i = 0;
  for (auto _ : state) {
    uint32_t key = scatter(i, entries);
    uint64_t value = i++;
    bool ok = f.map.erase(&key).ok() && f.map.update(&key, &value, 1 /* BPF_NOEXIST */).ok();
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_ArrayLookup)->Arg(1024)->Arg(1 << 16);
BENCHMARK(BM_ArrayUpdate)->Arg(1024)->Arg(1 << 16);
BENCHMARK(BM_ArrayGetNextKey)->Arg(1024);
BENCHMARK(BM_HashLookup)->Arg(1024)->Arg(1 << 16);
BENCHMARK(BM_HashLookupMissing)->Arg(1024);
BENCHMARK(BM_HashUpdate)->Arg(1024)->Arg(1 << 16);
BENCHMARK(BM_HashDeleteInsert)->Arg(1024)->Arg(1 << 16);
BENCHMARK(BM_HashGetNextKey)->Arg(1024);

}  // namespace
