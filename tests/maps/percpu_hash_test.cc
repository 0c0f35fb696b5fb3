// BPF_MAP_TYPE_PERCPU_HASH, preallocated and BPF_F_NO_PREALLOC: creation
// checks, the host layout and flags, the errno table of SPEC.md sections
// 2-3, program-side ops on the held slot's copy (in-place updates, inserts
// that zero the other CPUs), element reuse, access_ok, batches and memory.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "maps/hash_map.h"
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

constexpr uint32_t kCpus = 3;

class PercpuHash : public ::testing::TestWithParam<bool> {
 protected:
  PercpuHash() : f(kCpus) {}
  uint32_t flags() const { return GetParam() ? kBpfFNoPrealloc : 0; }
  Map* create(uint32_t key_size, uint32_t value_size, uint32_t max_entries) {
    return f.create(f.attr(MapType::kPERCPU_HASH, key_size, value_size, max_entries, flags()));
  }
  template <class K = uint32_t>
  std::vector<uint64_t> all(Map* m, K key) {
    std::vector<uint64_t> out(kCpus, ~0ull);
    EXPECT_EQ(host_lookup(m, &key, out.data()), 0) << "key " << key;
    return out;
  }
  PercpuFixture f;
};

TEST(PercpuHashCreate, AllocChecks) {
  PercpuFixture f(kCpus);
  auto t = MapType::kPERCPU_HASH;
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4)), 0);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoPrealloc)), 0);
  EXPECT_EQ(f.create_errno(f.attr(t, 0, 8, 4)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 0, 4)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 0)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNumaNode)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFNoCommonLru)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, 8, 4, kBpfFMmapable)), EINVAL);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, kPcpuMinUnitSize, 1)), 0);
  EXPECT_EQ(f.create_errno(f.attr(t, 4, kPcpuMinUnitSize + 1, 1)), E2BIG);
}

TEST_P(PercpuHash, HostLayoutAndErrnos) {
  Map* m = create(4, 8, 3);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops->host_value_size(m), 8u * kCpus);
  auto v = test::percpu_u64(kCpus, 10);
  std::vector<uint64_t> out(kCpus);
  uint32_t k = 5;
  EXPECT_EQ(host_lookup(m, &k, out.data()), -ENOENT);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfExist), -ENOENT);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfNoexist), 0);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfNoexist), -EEXIST);
  EXPECT_EQ(all(m, k), v);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfNoexist | kBpfExist), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfFLock), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), 64), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), uint64_t{1} << 33), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), kBpfFCpu | kBpfFAllCpus), -EINVAL);
  EXPECT_EQ(host_update(m, &k, v.data(), cpu_flags(kCpus)), -ERANGE);
  EXPECT_EQ(host_lookup(m, &k, out.data(), cpu_flags(kCpus)), -ERANGE);
  EXPECT_EQ(host_lookup(m, &k, out.data(), kBpfFAllCpus), -EINVAL);
  EXPECT_EQ(host_lookup(m, &k, out.data(), kBpfFLock), -EINVAL);
  for (uint32_t i = 6; i < 8; i++) EXPECT_EQ(host_update(m, &i, v.data()), 0);
  uint32_t k4 = 4;
  EXPECT_EQ(host_update(m, &k4, v.data()), -E2BIG);  // full
  EXPECT_EQ(host_update(m, &k, v.data()), 0);        // replacing is fine when full
  EXPECT_EQ(m->ops->delete_elem(m, &k4), -ENOENT);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k4, out.data(), 0), -ENOENT);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), kBpfFCpu), -EINVAL);
  EXPECT_EQ(m->ops->lookup_and_delete_elem(m, &k, out.data(), 0), 0);
  EXPECT_EQ(out, v);
  EXPECT_EQ(host_lookup(m, &k, out.data()), -ENOENT);
  EXPECT_EQ(m->ops->delete_elem(m, &(k = 6)), 0);
  EXPECT_EQ(m->ops->delete_elem(m, &k), -ENOENT);
  EXPECT_EQ(host_update(m, &k4, v.data()), 0);  // room again
  // get_next_key walks every key once, NULL / a missing key start over.
  std::set<uint32_t> seen;
  uint32_t next = 0;
  const void* cur = nullptr;
  uint32_t key = 0;
  while (m->ops->get_next_key(m, cur, &next) == 0) {
    EXPECT_TRUE(seen.insert(next).second);
    key = next;
    cur = &key;
  }
  EXPECT_EQ(seen, (std::set<uint32_t>{4, 7}));
  uint32_t missing = 1000;
  EXPECT_EQ(m->ops->get_next_key(m, &missing, &next), 0);
}

TEST_P(PercpuHash, CpuAndAllCpusFlags) {
  Map* m = create(4, 4, 4);
  ASSERT_TRUE(m);
  uint32_t k = 1, one = 77;
  // Insert with BPF_F_CPU: that CPU's copy, the others zero.
  ASSERT_EQ(host_update(m, &k, &one, cpu_flags(1)), 0);
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{0, 77, 0}));
  uint32_t two = 88;
  ASSERT_EQ(host_update(m, &k, &two, cpu_flags(2, kBpfExist)), 0);
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{0, 77, 88}));
  uint8_t buf[8];
  std::memset(buf, 0x5a, sizeof(buf));
  ASSERT_EQ(host_lookup(m, &k, buf, cpu_flags(2)), 0);
  uint32_t got;
  std::memcpy(&got, buf, 4);
  EXPECT_EQ(got, 88u);
  EXPECT_EQ(buf[4], 0x5a) << "wrote past value_size";
  uint32_t nine = 9;
  ASSERT_EQ(host_update(m, &(k = 2), &nine, kBpfFAllCpus | kBpfNoexist), 0);
  EXPECT_EQ(all(m, 2), (std::vector<uint64_t>{9, 9, 9}));
}

TEST_P(PercpuHash, ProgramOpsUseTheHeldSlotsCopy) {
  Map* m = create(8, 8, 4);
  ASSERT_TRUE(m);
  uint64_t k = 42;
  on_slot(f.dom(), 2, [&] {
    EXPECT_EQ(m->ops->lookup_elem(m, &k), nullptr);
    uint64_t v = 5;
    ASSERT_EQ(m->ops->update_elem(m, &k, &v, kBpfNoexist), 0);
    auto* p = static_cast<uint64_t*>(m->ops->lookup_elem(m, &k));
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, 5u);
    EXPECT_EQ(p, m->ops->lookup_percpu_elem(m, &k, 2));
    EXPECT_EQ(m->ops->lookup_percpu_elem(m, &k, kCpus), nullptr);
    v = 6;  // an existing key is updated in place: the pointer stays the copy
    ASSERT_EQ(m->ops->update_elem(m, &k, &v, kBpfExist), 0);
    EXPECT_EQ(*p, 6u);
  });
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{0, 0, 6}));
  on_slot(f.dom(), 0, [&] {
    uint64_t v = 1;
    ASSERT_EQ(m->ops->update_elem(m, &k, &v, kBpfAny), 0);
  });
  EXPECT_EQ(all(m, k), (std::vector<uint64_t>{1, 0, 6}));
  // Program errnos.
  on_slot(f.dom(), 1, [&] {
    uint64_t v = 3, other = 43;
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfNoexist), -EEXIST);
    EXPECT_EQ(m->ops->update_elem(m, &other, &v, kBpfExist), -ENOENT);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFLock), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, 3), -EINVAL);
    EXPECT_EQ(m->ops->update_elem(m, &k, &v, kBpfFCpu), -EINVAL);
    EXPECT_EQ(m->ops->delete_elem(m, &other), -ENOENT);
    EXPECT_EQ(m->ops->delete_elem(m, &k), 0);
    EXPECT_EQ(m->ops->lookup_elem(m, &k), nullptr);
  });
}

// A deleted element's memory comes back for another key: whatever its
// copies held must not show through on the CPUs a program insert skips.
TEST_P(PercpuHash, ReusedElementsStartZeroed) {
  Map* m = create(4, 8, 2);
  ASSERT_TRUE(m);
  auto v = test::percpu_u64(kCpus, 1000);
  for (int round = 0; round < 200; round++) {
    uint32_t k = round % 7;
    ASSERT_EQ(host_update(m, &k, v.data()), 0);
    ASSERT_EQ(m->ops->delete_elem(m, &k), 0);
    uint32_t k2 = 100 + round;
    // A program insert never refills the allocator inline (no-prealloc: an
    // empty slot cache is ENOMEM until the background worker refills it).
    long rc = -ENOMEM;
    for (int tries = 0; rc == -ENOMEM && tries < 2000; tries++) {
      if (tries) std::this_thread::sleep_for(std::chrono::microseconds(100));
      on_slot(f.dom(), 1, [&] {
        uint64_t one = 1;
        rc = m->ops->update_elem(m, &k2, &one, kBpfNoexist);
      });
    }
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(all(m, k2), (std::vector<uint64_t>{0, 1, 0})) << "round " << round;
    uint64_t seven = 7;  // BPF_F_CPU: one value of value_size bytes
    ASSERT_EQ(host_update(m, &k2, &seven, cpu_flags(2)), 0);
    ASSERT_EQ(all(m, k2), (std::vector<uint64_t>{0, 1, 7}));
    ASSERT_EQ(m->ops->delete_elem(m, &k2), 0);
    ASSERT_EQ(host_update(m, &k2, &seven, cpu_flags(0)), 0);
    ASSERT_EQ(all(m, k2), (std::vector<uint64_t>{7, 0, 0})) << "round " << round;
    ASSERT_EQ(m->ops->delete_elem(m, &k2), 0);
  }
}

TEST_P(PercpuHash, ForEachPassesTheHeldSlotsCopies) {
  Map* m = create(4, 8, 8);
  ASSERT_TRUE(m);
  for (uint32_t k = 0; k < 5; k++) {
    auto v = test::percpu_u64(kCpus, 10 * k);
    ASSERT_EQ(host_update(m, &k, v.data()), 0);
  }
  on_slot(f.dom(), 1, [&] {
    uint64_t sum = 0;
    long n = test::for_each_sum(m, &sum);
    EXPECT_EQ(n, 5);
    EXPECT_EQ(sum, 0u + 10 + 20 + 30 + 40 + 5 * 1);
  });
}

TEST_P(PercpuHash, AccessOkCoversEachCopyOnly) {
  Map* m = create(4, 12, 4);  // stride 16: 4 bytes of padding per copy
  ASSERT_TRUE(m);
  std::vector<uint8_t> v(16 * kCpus, 1);
  uint32_t k = 3;
  ASSERT_EQ(host_update(m, &k, v.data()), 0);
  auto ok = [&](const void* p, size_t n, bool w) {
    return m->ops->access_ok(m, reinterpret_cast<uintptr_t>(p), n, w);
  };
  on_slot(f.dom(), 0, [&] {
    for (uint32_t c = 0; c < kCpus; c++) {
      auto* p = static_cast<char*>(m->ops->lookup_percpu_elem(m, &k, c));
      ASSERT_TRUE(p);
      EXPECT_TRUE(ok(p, 12, true)) << c;
      EXPECT_TRUE(ok(p + 8, 4, true));
      EXPECT_FALSE(ok(p, 13, false));      // into the padding
      EXPECT_FALSE(ok(p + 12, 4, false));  // padding
      EXPECT_FALSE(ok(p + 8, 12, false));  // across two copies
    }
    auto* p0 = static_cast<char*>(m->ops->lookup_percpu_elem(m, &k, 0));
    EXPECT_TRUE(ok(p0 - 8, 4, false));  // the key: readable, not writable
    EXPECT_FALSE(ok(p0 - 8, 4, true));
  });
}

TEST_P(PercpuHash, BatchOps) {
  Map* m = create(4, 4, 16);
  ASSERT_TRUE(m);
  // update_batch in the host layout (8 bytes per CPU).
  std::vector<uint32_t> keys;
  std::vector<uint64_t> vals;
  for (uint32_t i = 0; i < 10; i++) {
    keys.push_back(i);
    for (uint32_t c = 0; c < kCpus; c++) vals.push_back(100 * i + c);
  }
  BatchArgs up{nullptr, nullptr, keys.data(), vals.data(), 10, 0, 0};
  ASSERT_EQ(m->ops->update_batch(m, up), 0);
  EXPECT_EQ(up.count, 10u);
  // lookup_batch: every key once, all copies.
  std::vector<uint32_t> okeys(16);
  std::vector<uint64_t> ovals(16 * kCpus);
  BatchArgs lk{nullptr, nullptr, okeys.data(), ovals.data(), 16, 0, 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lk), -ENOENT);
  ASSERT_EQ(lk.count, 10u);
  for (uint32_t j = 0; j < 10; j++)
    for (uint32_t c = 0; c < kCpus; c++)
      EXPECT_EQ(ovals[j * kCpus + c], 100u * okeys[j] + c) << okeys[j] << "/" << c;
  // BPF_F_CPU: value_size (4-byte) strides, the hash batch's kernel layout.
  std::vector<uint32_t> one(16);
  BatchArgs lc{nullptr, nullptr, okeys.data(), one.data(), 16, cpu_flags(2), 0};
  EXPECT_EQ(m->ops->lookup_batch(m, lc), -ENOENT);
  ASSERT_EQ(lc.count, 10u);
  for (uint32_t j = 0; j < 10; j++) EXPECT_EQ(one[j], 100u * okeys[j] + 2);
  BatchArgs range{nullptr, nullptr, okeys.data(), one.data(), 16, cpu_flags(kCpus), 0};
  EXPECT_EQ(m->ops->lookup_batch(m, range), -ERANGE);
  BatchArgs cpudel{nullptr, nullptr, okeys.data(), ovals.data(), 16, cpu_flags(0), 0};
  EXPECT_EQ(m->ops->lookup_and_delete_batch(m, cpudel), -EINVAL);
  // update_batch with ALL_CPUS: one value per key, stride round_up(4, 8).
  uint64_t same[2] = {5, 6};
  uint32_t k2[2] = {3, 11};
  BatchArgs ua{nullptr, nullptr, k2, same, 2, kBpfFAllCpus, 0};
  ASSERT_EQ(m->ops->update_batch(m, ua), 0);
  EXPECT_EQ(all(m, 11), (std::vector<uint64_t>{6, 6, 6}));
  EXPECT_EQ(all(m, 3), (std::vector<uint64_t>{5, 5, 5}));
  // lookup_and_delete_batch empties the map in the host layout.
  BatchArgs ld{nullptr, nullptr, okeys.data(), ovals.data(), 16, 0, 0};
  EXPECT_EQ(m->ops->lookup_and_delete_batch(m, ld), -ENOENT);
  EXPECT_EQ(ld.count, 11u);
  uint32_t next;
  EXPECT_EQ(m->ops->get_next_key(m, nullptr, &next), -ENOENT);
  // delete_batch.
  ASSERT_EQ(m->ops->update_batch(m, up), 0);
  BatchArgs del{nullptr, nullptr, keys.data(), nullptr, 10, 0, 0};
  EXPECT_EQ(m->ops->delete_batch(m, del), 0);
  EXPECT_EQ(del.count, 10u);
  EXPECT_EQ(m->ops->get_next_key(m, nullptr, &next), -ENOENT);
}

TEST_P(PercpuHash, MemoryIsChargedPerCopy) {
  Map* m = create(4, 64, 1000);
  ASSERT_TRUE(m);
  std::vector<uint8_t> v(64 * kCpus, 3);
  for (uint32_t k = 0; k < 1000; k++) ASSERT_EQ(host_update(m, &k, v.data()), 0);
  EXPECT_GE(m->memory_used.load(), 1000u * 64 * kCpus);
  MapAttr small = f.attr(MapType::kPERCPU_HASH, 4, 64, 1000, flags());
  small.memory_limit = 100000;
  if (!GetParam()) {
    EXPECT_EQ(f.create_errno(small), ENOMEM);  // prealloc needs ~200 KB up front
  } else {
    Map* lim = f.create(small);
    ASSERT_TRUE(lim);
    long rc = 0;
    uint32_t k = 0;
    for (; k < 1000 && rc == 0; k++) rc = host_update(lim, &k, v.data());
    EXPECT_EQ(rc, -ENOMEM);
    EXPECT_LE(lim->memory_used.load(), 100000u);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, PercpuHash, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "NoPrealloc" : "Prealloc";
                         });

}  // namespace
}  // namespace userbpf::maps
