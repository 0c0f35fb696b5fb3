// BPF_MAP_TYPE_PERCPU_ARRAY: creation checks, the host layout (every CPU's
// copy, BPF_F_CPU, BPF_F_ALL_CPUS), the errno table of SPEC.md sections 2-3,
// program-side ops on the held slot's copy, access_ok, batches, memory
// charging and the inline-lookup layout.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "maps/array_map.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "percpu_test_util.h"

namespace userbpf::maps {
namespace {

using test::cpu_flags;
using test::host_lookup;
using test::host_update;
using test::on_slot;
using test::PercpuFixture;

constexpr uint32_t kCpus = 4;

TEST(PercpuArray, AllocChecks) {
  PercpuFixture f(kCpus);
  auto t = MapType::kPERCPU_ARRAY;
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4)), 0);
  EXPECT_EQ(f.create_errno(f.attr(t, 8, 8, 4)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 0, 4)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 0)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNumaNode)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFMmapable)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFInnerMap)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoPrealloc)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFRdonlyProg | kBpfFWronlyProg)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, kPcpuMinUnitSize, 1)), 0);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, kPcpuMinUnitSize + 1, 1)), E2BIG);
}

TEST(PercpuArray, HostLayoutEveryCpu) {
  PercpuFixture f(kCpus);
  // value_size 12: stride 16, padding 4 bytes per CPU.
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 12, 3));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops->host_value_size(m), 16u * kCpus);
  EXPECT_EQ(map_num_cpus(m), kCpus);
  std::vector<uint8_t> in(16 * kCpus, 0xee), out(16 * kCpus, 0xaa);
  for (uint32_t c = 0; c < kCpus; c++)
    for (uint32_t b = 0; b < 12; b++) in[c * 16 + b] = static_cast<uint8_t>(c * 16 + b);
  uint32_t k = 2;
  ASSERT_EQ(host_update(m, &k, in.data()), 0);
  ASSERT_EQ(host_lookup(m, &k, out.data()), 0);
  // Whole 8-byte words per copy, the padding too (the kernel's
  // copy_map_value_long).
  EXPECT_EQ(out, in);
  // Untouched keys read zero on every CPU.
  k = 0;
  ASSERT_EQ(host_lookup(m, &k, out.data()), 0);
  for (uint8_t b : out) EXPECT_EQ(b, 0);
}

TEST(PercpuArray, HostErrnos) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 4));
  ASSERT_TRUE(m);
  auto v = test::percpu_u64(kCpus, 10);
  std::vector<uint64_t> out(kCpus);
  uint32_t k = 1;
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfAny), 0);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfExist), 0);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfNoexist), -EEXIST);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfNoexist | kBpfExist), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfFLock), -EINVAL);          // no spin lock
  EXPECT_EQ(host_update(m, &k, v.data(), 32), -EINVAL);                 // unknown bit
  EXPECT_EQ(host_update(m, &k, v.data(), uint64_t{1} << 32), -EINVAL);  // CPU without F_CPU
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfFCpu | kBpfFAllCpus), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), cpu_flags(kCpus)), -ERANGE);
  EXPECT_EQ(host_update(m, &k, v.data(), cpu_flags(kCpus - 1)), 0);
  EXPECT_EQ(host_update(m, &k, v.data(), cpu_flags(0, kBpfNoexist)), -EEXIST);
  k = 4;
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfAny), -E2BIG);
  EXPECT_EQ(host_update(m, &k, v.data(), cpu_flags(kCpus)), -ERANGE);  // flags first
  EXPECT_EQ(host_lookup(m, &k, out.data()), -ENOENT);
  EXPECT_EQ(m->ops->delete_elem(m, &k), -EINVAL);
  k = 0;
  EXPECT_EQ(m->ops->delete_elem(m, &k), -EINVAL);
  EXPECT_EQ(host_lookup(m, &k, out.data(), kBpfFAllCpus), -EINVAL);  // update only
  EXPECT_EQ(host_lookup(m, &k, out.data(), kBpfFLock), -EINVAL);
  EXPECT_EQ(host_lookup(m, &k, out.data(), uint64_t{2} << 32), -EINVAL);
  EXPECT_EQ(host_lookup(m, &k, out.data(), cpu_flags(kCpus)), -ERANGE);
  EXPECT_EQ(host_lookup(m, &k, out.data(), cpu_flags(0)), 0);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), 0), -kEnotsupp);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), kBpfFCpu), -EINVAL);
  // get_next_key: NULL or out of range gives 0, the last ENOENT.
  uint32_t next = 99;
  EXPECT_EQ(m->ops->get_next_key(m, nullptr, &next), 0);
  EXPECT_EQ(next, 0u);
  k = 2;
  EXPECT_EQ(m->ops->get_next_key(m, &k, &next), 0);
  EXPECT_EQ(next, 3u);
  k = 3;
  EXPECT_EQ(m->ops->get_next_key(m, &k, &next), -ENOENT);
  k = 77;
  EXPECT_EQ(m->ops->get_next_key(m, &k, &next), 0);
  EXPECT_EQ(next, 0u);
}

TEST(PercpuArray, CpuAndAllCpusFlags) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 4, 2));
  ASSERT_TRUE(m);
  uint32_t k = 1, one = 0xabcd;
  ASSERT_EQ(host_update(m, &k, &one, cpu_flags(2)), 0);
  std::vector<uint64_t> all(kCpus);
  ASSERT_EQ(host_lookup(m, &k, all.data()), 0);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(all[c], c == 2 ? 0xabcdu : 0u) << c;
  // BPF_F_CPU lookup: value_size bytes of that CPU only.
  uint8_t buf[8];
  std::memset(buf, 0x77, sizeof(buf));
  ASSERT_EQ(host_lookup(m, &k, buf, cpu_flags(2)), 0);
  uint32_t got;
  std::memcpy(&got, buf, 4);
  EXPECT_EQ(got, 0xabcdu);
  EXPECT_EQ(buf[4], 0x77) << "wrote past value_size";
  uint32_t seven = 7;
  ASSERT_EQ(host_update(m, &k, &seven, kBpfFAllCpus | kBpfExist), 0);
  ASSERT_EQ(host_lookup(m, &k, all.data()), 0);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(all[c], 7u) << c;
}

TEST(PercpuArray, ProgramSeesTheHeldSlotsCopy) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 2));
  ASSERT_TRUE(m);
  uint32_t k = 1;
  auto v = test::percpu_u64(kCpus, 100);
  ASSERT_EQ(host_update(m, &k, v.data()), 0);
  for (uint32_t s = 0; s < kCpus; s++) {
    on_slot(f.dom(), s, [&] {
      auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &k));
      ASSERT_TRUE(p);
      EXPECT_EQ(*p, 100u + s);
      EXPECT_EQ(p, m->ops->lookup_percpu_elem(m, &k, s));
      uint64_t nv = 1000 + s;
      EXPECT_EQ(m->ops->update_elem(m, &k, &nv, kBpfExist), 0);
      EXPECT_EQ(*p, 1000u + s);
    });
  }
  std::vector<uint64_t> out(kCpus);
  ASSERT_EQ(host_lookup(m, &k, out.data()), 0);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(out[c], 1000u + c);
  // Any CPU's copy through lookup_percpu_elem; none past the last CPU.
  on_slot(f.dom(), 0, [&] {
    for (uint32_t c = 0; c < kCpus; c++)
      EXPECT_EQ(*static_cast<uint64_t*>(m->ops->lookup_percpu_elem(m, &k, c)), 1000u + c);
    EXPECT_EQ(m->ops->lookup_percpu_elem(m, &k, kCpus), nullptr);
    uint32_t bad = 2;
    EXPECT_EQ(m->ops->lookup_percpu_elem(m, &bad, 0), nullptr);
    EXPECT_EQ(m->ops->lookup_elem(m, &bad), nullptr);
  });
}

TEST(PercpuArray, SleepableSlotsUseSlotModN) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 1));
  ASSERT_TRUE(m);
  uint32_t k = 0;
  on_slot(f.dom(), kCpus + 1,
          [&] { EXPECT_EQ(m->ops->lookup_elem(m, &k), m->ops->lookup_percpu_elem(m, &k, 1)); });
}

TEST(PercpuArray, ProgramErrnos) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 2));
  ASSERT_TRUE(m);
  on_slot(f.dom(), 1, [&] {
    uint64_t v = 5;
    uint32_t k = 1;
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfAny), 0);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfNoexist), -EEXIST);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfExist), 0);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, 3), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFLock), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFCpu), -EINVAL);  // host-only flags
    k = 2;
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfAny), -E2BIG);
    EXPECT_EQ(m->ops->delete_elem(m, &k), -EINVAL);
  });
  // Only slot 1's copy was written.
  std::vector<uint64_t> out(kCpus);
  uint32_t k = 1;
  ASSERT_EQ(host_lookup(m, &k, out.data()), 0);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(out[c], c == 1 ? 5u : 0u) << c;
}

TEST(PercpuArray, ForEachPassesTheHeldSlotsCopies) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 3));
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < 3; k++) {
    auto v = test::percpu_u64(kCpus, 10 * k);
    ASSERT_EQ(host_update(m, &k, v.data()), 0);
  }
  on_slot(f.dom(), 2, [&] {
    uint64_t sum = 0;
    long n = test::for_each_sum(m, &sum);
    EXPECT_EQ(n, 3);
    EXPECT_EQ(sum, (0u + 2) + (10u + 2) + (20u + 2));
  });
}

TEST(PercpuArray, AccessOkCoversEachCopyOnly) {
  PercpuFixture f(kCpus);
  // value_size 12 (stride 16), 3 entries: 48 bytes per CPU, cpu_stride 64.
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 12, 3));
  ASSERT_TRUE(m);
  uint32_t k = 0;
  auto* c0 = static_cast<char*>(m->ops->lookup_percpu_elem(m, &k, 0));
  ASSERT_TRUE(c0);
  auto ok = [&](const void* p, size_t n, bool w = true) {
    return m->ops->access_ok(m, reinterpret_cast<uintptr_t>(p), n, w);
  };
  for (uint32_t c = 0; c < kCpus; c++) {
    for (uint32_t i = 0; i < 3; i++) {
      auto* v = static_cast<char*>(m->ops->lookup_percpu_elem(m, &i, c));
      ASSERT_TRUE(v);
      EXPECT_TRUE(ok(v, 12)) << c << "/" << i;
      EXPECT_TRUE(ok(v + 4, 8));
      EXPECT_FALSE(ok(v, 13));      // into the padding
      EXPECT_FALSE(ok(v + 12, 1));  // padding
    }
  }
  auto* v2 = static_cast<char*>(m->ops->lookup_percpu_elem(m, &(k = 2), 0));
  EXPECT_FALSE(ok(v2 + 16, 8));  // the tail of CPU 0's block
  auto* last = static_cast<char*>(m->ops->lookup_percpu_elem(m, &(k = 2), kCpus - 1));
  EXPECT_FALSE(ok(last + 64, 8));  // past the last CPU
  EXPECT_FALSE(ok(c0 - 8, 8));
}

TEST(PercpuArray, BatchOps) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 4, 5));
  ASSERT_TRUE(m);
  // update_batch in the host layout (stride 8 per CPU), then with ALL_CPUS.
  uint32_t keys[3] = {0, 2, 4};
  std::vector<uint64_t> vals(3 * kCpus);
  for (uint32_t i = 0; i < 3; i++)
    for (uint32_t c = 0; c < kCpus; c++) vals[i * kCpus + c] = 100 * i + c;
  BatchArgs up{nullptr, nullptr, keys, vals.data(), 3, 0, 0};
  ASSERT_EQ(m->ops->update_batch(m, up), 0);
  EXPECT_EQ(up.count, 3u);
  // Room for more than the 5 keys: the walk reaches the end (ENOENT).
  std::vector<uint32_t> okeys(8);
  std::vector<uint64_t> ovals(8 * kCpus);
  BatchArgs lk{nullptr, nullptr, okeys.data(), ovals.data(), 8, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lk), -ENOENT);
  ASSERT_EQ(lk.count, 5u);
  for (uint32_t c = 0; c < kCpus; c++) {
    EXPECT_EQ(ovals[0 * kCpus + c], c);
    EXPECT_EQ(ovals[1 * kCpus + c], 0u);
    EXPECT_EQ(ovals[2 * kCpus + c], 100u + c);
    EXPECT_EQ(ovals[4 * kCpus + c], 200u + c);
  }
  // BPF_F_CPU lookup_batch: one value per key, stride round_up(4, 8) = 8.
  std::vector<uint64_t> one(8, ~0ull);
  BatchArgs lc{nullptr, nullptr, okeys.data(), one.data(), 8, cpu_flags(3), 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lc), -ENOENT);
  ASSERT_EQ(lc.count, 5u);
  EXPECT_EQ(one[0], 3u);
  EXPECT_EQ(one[2], 103u);
  EXPECT_EQ(one[4], 203u);
  BatchArgs bad{nullptr, nullptr, okeys.data(), one.data(), 5, cpu_flags(kCpus), 0};
  EXPECT_EQ(m->ops->lookup_batch(m, bad), -ERANGE);
  BatchArgs badall{nullptr, nullptr, okeys.data(), one.data(), 5, kBpfFAllCpus, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, badall), -EINVAL);
  // update_batch with BPF_F_ALL_CPUS: one 8-byte-strided value per key.
  uint64_t same[2] = {55, 66};
  uint32_t k2[2] = {1, 3};
  BatchArgs ua{nullptr, nullptr, k2, same, 2, kBpfFAllCpus, 0};
  ASSERT_EQ(m->ops->update_batch(m, ua), 0);
  std::vector<uint64_t> out(kCpus);
  ASSERT_EQ(host_lookup(m, &k2[1], out.data()), 0);
  for (uint32_t c = 0; c < kCpus; c++) EXPECT_EQ(out[c], 66u);
  BatchArgs del{nullptr, nullptr, k2, nullptr, 2, 0, 0};
  EXPECT_EQ(m->ops->delete_batch(m, del), -kEnotsupp);
  EXPECT_EQ(m->ops->lookup_and_delete_batch(m, del), -kEnotsupp);
}

TEST(PercpuArray, MemoryIsChargedAndLimited) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 8, 1000));
  ASSERT_TRUE(m);
  EXPECT_GE(m->memory_used.load(), 1000u * 8 * kCpus);
  MapAttr small = f.attr(MapType::kPERCPU_ARRAY, 4, 8, 1000);
  small.memory_limit = 8000;  // one CPU's worth
  EXPECT_EQ(f.create_errno(small), ENOMEM);
}

// gen_lookup_percpu (the hook a JIT would inline): base + cpu * cpu_stride +
// key * elem_size is exactly lookup_percpu_elem; gen_lookup stays off.
TEST(PercpuArray, InlineLayoutMatchesLookup) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 20, 7));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops->gen_lookup, nullptr);
  ArrayLayout lay;
  ASSERT_TRUE(m->ops->gen_lookup_percpu(m, &lay));
  EXPECT_EQ(lay.elem_size, 24u);
  EXPECT_EQ(lay.max_entries, 7u);
  EXPECT_EQ(lay.cpu_stride % 64, 0u);
  for (uint32_t c = 0; c < kCpus; c++) {
    for (uint32_t i = 0; i < 7; i++) {
      auto v = reinterpret_cast<uintptr_t>(m->ops->lookup_percpu_elem(m, &i, c));
      EXPECT_EQ(v, lay.base + c * lay.cpu_stride + uint64_t{i} * lay.elem_size);
      // Elements of 24 bytes: access_ok's division path.
      EXPECT_TRUE(m->ops->access_ok(m, v, 20, true));
      EXPECT_TRUE(m->ops->access_ok(m, v + 16, 4, true));
      EXPECT_FALSE(m->ops->access_ok(m, v + 16, 5, true));
      EXPECT_FALSE(m->ops->access_ok(m, v + 20, 4, false));
    }
  }
}

// value_at: every byte of every copy maps to the copy's start (so a found
// value needs no grant slot); a 12-byte value's padding to 0.
TEST(PercpuArray, ValueAtFindsEachCopy) {
  PercpuFixture f(kCpus);
  Map* m = f.create(f.attr(MapType::kPERCPU_ARRAY, 4, 12, 3));
  ASSERT_TRUE(m);
  ASSERT_NE(m->ops->value_at, nullptr);
  for (uint32_t k = 0; k < 3; k++) {
    for (uint32_t c = 0; c < kCpus; c++) {
      auto p = reinterpret_cast<uintptr_t>(m->ops->lookup_percpu_elem(m, &k, c));
      ASSERT_NE(p, 0u);
      for (uint32_t i = 0; i < 12; i++) EXPECT_EQ(m->ops->value_at(m, p + i), p) << k << " " << c;
      EXPECT_EQ(m->ops->value_at(m, p + 12), 0u) << k << " " << c;  // padding to 16
      EXPECT_TRUE(m->ops->access_ok(m, p, 12, true));
      EXPECT_FALSE(m->ops->access_ok(m, p + 4, 12, false));
    }
  }
  uint64_t local = 0;
  EXPECT_EQ(m->ops->value_at(m, reinterpret_cast<uintptr_t>(&local)), 0u);
}

}  // namespace
}  // namespace userbpf::maps
