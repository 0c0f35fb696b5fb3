// Per-CPU maps end to end, on both engines: programs count on the copy of
// the CPU slot their run holds and the host's sum is exact with more threads
// than slots; host reads during those runs never see a torn word;
// bpf_map_lookup_percpu_elem, program updates, for_each and the
// program-side errnos; the host API's per-CPU view and flags.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "userbpf/userbpf.h"

namespace {

using userbpf::Engine;

constexpr uint32_t kCpus = 3;  // not the machine's CPU count: slots are the runtime's

struct Args {
  uint32_t key = 0;
  uint32_t cpu = 0;
  uint64_t n = 0;
  uint64_t out = 0;
};

class PercpuMapApi : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    userbpf::RuntimeOptions ro;
    ro.num_cpus = kCpus;
    auto r = userbpf::Runtime::create(ro);
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, std::string(USERBPF_TEST_PROGS_DIR) + "/percpu_maps.bpf.o");
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
    auto st = obj->load();
    ASSERT_TRUE(st.ok()) << st.error().message;
    array = std::make_unique<userbpf::Map>(obj->find_map("pcpu_array").value());
    hash = std::make_unique<userbpf::Map>(obj->find_map("pcpu_hash").value());
  }

  userbpf::Result<userbpf::RunResult> run(const char* prog, Args& a, uint32_t repeat = 1) {
    auto p = obj->find_program(prog);
    if (!p.ok()) return p.error();
    userbpf::RunOptions o;
    o.ctx = &a;
    o.ctx_size = sizeof(a);
    o.repeat = repeat;
    o.engine = GetParam();
    auto r = p->run(o);
    if (r.ok()) std::memcpy(&a, r->ctx_out.data(), sizeof(a));
    return r;
  }

  std::vector<uint64_t> all(userbpf::Map& m, uint32_t key) {
    std::vector<uint64_t> v(kCpus, ~0ull);
    auto st = m.lookup(&key, v.data());
    EXPECT_TRUE(st.ok()) << st.error().message;
    return v;
  }
  static uint64_t sum(const std::vector<uint64_t>& v) {
    uint64_t s = 0;
    for (uint64_t x : v) s += x;
    return s;
  }

  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
  std::unique_ptr<userbpf::Map> array, hash;
};

TEST_P(PercpuMapApi, DescribesItsPerCpuView) {
  EXPECT_TRUE(array->is_percpu());
  EXPECT_TRUE(hash->is_percpu());
  EXPECT_EQ(array->num_cpus(), kCpus);
  EXPECT_EQ(hash->num_cpus(), kCpus);
  EXPECT_EQ(array->value_buffer_size(), 8 * kCpus);
  EXPECT_STREQ(array->type_name(), "percpu_array");
  EXPECT_STREQ(hash->type_name(), "percpu_hash");
  auto plain = obj->find_map("plain_hash");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->is_percpu());
  EXPECT_EQ(plain->num_cpus(), 1u);
}

// T > N threads, each R runs of M increments: the host's sum is T * R * M.
TEST_P(PercpuMapApi, SumIsExactWithMoreThreadsThanSlots) {
  constexpr int kThreads = 8, kRepeat = 40;
  constexpr uint64_t kIncs = 5000;
  uint32_t key = 1;
  std::vector<uint64_t> zero(kCpus, 0);
  ASSERT_TRUE(hash->update(&key, zero.data()).ok());  // most runs find it
  std::atomic<int> bad_cpu{0}, failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&] {
      for (int r = 0; r < kRepeat; r++) {
        Args a;
        a.key = key;
        a.n = kIncs;
        auto res = run("count", a);
        if (!res.ok()) {
          failed++;
          continue;
        }
        if (res->retval >= kCpus) bad_cpu++;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(bad_cpu.load(), 0);
  const uint64_t total = uint64_t{kThreads} * kRepeat * kIncs;
  EXPECT_EQ(sum(all(*array, key)), total);
  EXPECT_EQ(sum(all(*hash, key)), total);
}

// A key the programs insert themselves (BPF_NOEXIST races between threads).
TEST_P(PercpuMapApi, SumIsExactWhenProgramsInsertTheKey) {
  constexpr int kThreads = 6;
  uint32_t key = 3;
  std::vector<std::thread> ts;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&] {
      Args a;
      a.key = key;
      a.n = 1000;
      if (!run("count", a, 5).ok()) failed++;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(sum(all(*hash, key)), uint64_t{kThreads} * 5 * 1000);
}

TEST_P(PercpuMapApi, HostReadsDuringRunsNeverTearWords) {
  constexpr int kThreads = 4;
  uint32_t key = 2;
  std::atomic<int> done{0}, failed{0};
  std::vector<uint64_t> zero(kCpus, 0);
  ASSERT_TRUE(hash->update(&key, zero.data()).ok());
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++)
    ts.emplace_back([&] {
      Args a;
      a.key = key;
      a.n = 20000;
      if (!run("paired", a, 20).ok()) failed++;
      done++;
    });
  uint64_t torn = 0, reads = 0;
  std::vector<uint64_t> v(kCpus);
  do {
    for (userbpf::Map* m : {array.get(), hash.get()}) {
      ASSERT_TRUE(m->lookup(&key, v.data()).ok());
      for (uint64_t x : v) torn += (x >> 32) != (x & 0xffffffffu);
      reads++;
    }
  } while (done.load() < kThreads);
  for (auto& t : ts) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(torn, 0u) << "of " << reads << " reads";
  uint64_t steps = 0;
  for (uint64_t x : all(*array, key)) steps += x & 0xffffffffu;
  EXPECT_EQ(steps, uint64_t{kThreads} * 20 * 20000);
}

TEST_P(PercpuMapApi, LookupPercpuElemReadsAndWritesAnyCpu) {
  uint32_t key = 1;
  std::vector<uint64_t> a = {10, 11, 12}, h = {20, 21, 22};
  ASSERT_TRUE(array->update(&key, a.data()).ok());
  ASSERT_TRUE(hash->update(&key, h.data()).ok());
  for (uint32_t c = 0; c < kCpus; c++) {
    Args args;
    args.key = key;
    args.cpu = c;
    ASSERT_TRUE(run("read_cpu", args).ok());
    EXPECT_EQ(args.out & 0xffffffffu, 10u + c);
    EXPECT_EQ(args.out >> 32, 20u + c);
  }
  Args past;
  past.key = key;
  past.cpu = kCpus;
  ASSERT_TRUE(run("read_cpu", past).ok());
  EXPECT_EQ(past.out, ~0ull);
  Args missing;
  missing.key = 3;  // in the array, not in the hash
  missing.cpu = 0;
  ASSERT_TRUE(run("read_cpu", missing).ok());
  EXPECT_EQ(missing.out, 0xffffffff00000000ull);

  Args w;
  w.key = key;
  w.cpu = 2;
  w.n = 777;
  ASSERT_TRUE(run("write_cpu", w).ok());
  EXPECT_EQ(all(*array, key), (std::vector<uint64_t>{10, 11, 777}));
}

TEST_P(PercpuMapApi, ProgramUpdateWritesItsOwnCopy) {
  Args a;
  a.key = 0;
  a.n = 99;
  auto r = run("update_own", a);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const uint64_t cpu = r->retval;
  ASSERT_LT(cpu, kCpus);
  for (userbpf::Map* m : {array.get(), hash.get()}) {
    auto v = all(*m, 0);
    for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(v[c], c == cpu ? 99u : 0u) << c;
  }
}

TEST_P(PercpuMapApi, ForEachSeesTheRunsCopies) {
  uint32_t k0 = 0, k1 = 1;
  ASSERT_TRUE(array->update(&k0, std::vector<uint64_t>{1, 1, 1}.data()).ok());
  ASSERT_TRUE(array->update(&k1, std::vector<uint64_t>{2, 2, 2}.data()).ok());
  ASSERT_TRUE(hash->update(&k1, std::vector<uint64_t>{40, 40, 40}.data()).ok());
  Args a;
  ASSERT_TRUE(run("sum_own", a).ok());
  EXPECT_EQ(a.out, 1u + 2 + 40);
}

TEST_P(PercpuMapApi, SleepableRunsUseSlotModN) {
  Args a;
  a.key = 0;
  auto r = run("count_sleepable", a, 10);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_LT(a.out, kCpus);
  EXPECT_EQ(sum(all(*array, 0)), 10u);
}

TEST_P(PercpuMapApi, LookupPercpuElemOnAPlainMapStopsTheRun) {
  Args a;
  auto r = run("percpu_on_plain", a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("not a per-CPU map"), std::string::npos) << r.error().message;
}

// The errno table of SPEC.md sections 2-3 from a program.
TEST_P(PercpuMapApi, ProgramErrnos) {
  Args a;
  auto r = run("errnos", a);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const std::vector<int64_t> want = {
      0, -EEXIST, 0,       -EINVAL, -EINVAL, -E2BIG,  -EINVAL, 0,       -EINVAL, 0, 0, 0, 0,
      0, -E2BIG,  -EEXIST, 0,       -EINVAL, -EINVAL, -ENOENT, -ENOENT, 0,       0, 0, 7};
  ASSERT_EQ(r->retval, want.size());
  auto codes = obj->find_map("codes");
  ASSERT_TRUE(codes.ok());
  for (uint32_t i = 0; i < want.size(); i++) {
    int64_t v = 0;
    ASSERT_TRUE(codes->lookup(&i, &v).ok());
    EXPECT_EQ(v, want[i]) << "operation " << i;
  }
}

TEST_P(PercpuMapApi, HostCpuFlags) {
  uint32_t key = 1;
  uint64_t v = 5;
  ASSERT_TRUE(array->update(&key, &v, userbpf::map_cpu_flags(1)).ok());
  ASSERT_TRUE(hash->update(&key, &v, userbpf::kMapFAllCpus).ok());
  EXPECT_EQ(all(*array, key), (std::vector<uint64_t>{0, 5, 0}));
  EXPECT_EQ(all(*hash, key), (std::vector<uint64_t>{5, 5, 5}));
  uint64_t one = 0;
  ASSERT_TRUE(array->lookup(&key, &one, userbpf::map_cpu_flags(1)).ok());
  EXPECT_EQ(one, 5u);
  auto st = array->lookup(&key, &one, userbpf::map_cpu_flags(kCpus));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ERANGE);
  EXPECT_NE(st.error().message.find("CPU 3"), std::string::npos) << st.error().message;
  EXPECT_EQ(hash->update(&key, &v, userbpf::map_cpu_flags(7)).error().code, ERANGE);
  EXPECT_EQ(hash->update(&key, &v, userbpf::kMapFCpu | userbpf::kMapFAllCpus).error().code, EINVAL);
  auto plain = obj->find_map("plain_hash");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->update(&key, &v, userbpf::kMapFAllCpus).error().code, EINVAL);
  EXPECT_EQ(plain->lookup(&key, &v, userbpf::map_cpu_flags(0)).error().code, EINVAL);
  // Batches in the host layout.
  uint32_t keys[2] = {0, 2};
  std::vector<uint64_t> vals = {1, 2, 3, 4, 5, 6};
  auto up = hash->update_batch(keys, vals.data(), 2);
  ASSERT_TRUE(up.ok()) << up.error().message;
  EXPECT_EQ(all(*hash, 2), (std::vector<uint64_t>{4, 5, 6}));
  // Room for every key (a bucket never splits across calls).
  std::vector<uint64_t> out(4 * kCpus);
  uint32_t okeys[4];
  auto lk = hash->lookup_and_delete_batch(nullptr, nullptr, okeys, out.data(), 4);
  ASSERT_TRUE(lk.ok()) << lk.error().message;
  EXPECT_TRUE(lk->done);
  ASSERT_EQ(lk->count, 3u);  // keys 0, 1, 2
  for (uint32_t i = 0; i < 3; i++) {
    const std::vector<uint64_t> got(out.begin() + i * kCpus, out.begin() + (i + 1) * kCpus);
    if (okeys[i] == 1) EXPECT_EQ(got, (std::vector<uint64_t>{5, 5, 5}));
    if (okeys[i] == 2) EXPECT_EQ(got, (std::vector<uint64_t>{4, 5, 6}));
  }
  EXPECT_EQ(hash->get_next_key(nullptr, okeys).error().code, ENOENT);
}

INSTANTIATE_TEST_SUITE_P(Engines, PercpuMapApi,
                         ::testing::Values(Engine::kInterpreter, Engine::kJit),
                         [](const ::testing::TestParamInfo<Engine>& i) {
                           return i.param == Engine::kJit ? "Jit" : "Interpreter";
                         });

}  // namespace
