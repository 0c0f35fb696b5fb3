// Map helpers against a small fake map (an array of four u64 with its own
// MapOps): the helpers go through map->ops, pass the kernel's return values
// back, refuse writes to read-only maps, and drive for_each_map_elem's
// callback through RunContext::call_fn.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "helper_test_util.h"
#include "helpers/helper_fns.h"
#include "maps/map.h"

namespace userbpf::helpers {
namespace {

using testing::s;
using testing::TestRun;
using testing::u;

struct FakeArray : maps::Map {
  uint64_t values[4] = {};
};

FakeArray* fake(maps::Map* m) {
  return static_cast<FakeArray*>(m);
}

void* fake_lookup(maps::Map* m, const void* key) {
  uint32_t i;
  std::memcpy(&i, key, 4);
  return i < 4 ? &fake(m)->values[i] : nullptr;
}

long fake_update(maps::Map* m, const void* key, const void* value, uint64_t flags) {
  uint32_t i;
  std::memcpy(&i, key, 4);
  if (flags > maps::kBpfExist) return -EINVAL;
  if (i >= 4) return -E2BIG;
  if (flags == maps::kBpfNoexist) return -EEXIST;
  std::memcpy(&fake(m)->values[i], value, 8);
  return 0;
}

long fake_delete(maps::Map*, const void*) {
  return -EINVAL;
}

long fake_for_each(maps::Map* m, maps::ForEachCallback cb, void* cb_ctx, uint64_t) {
  long n = 0;
  for (uint32_t i = 0; i < 4; i++) {
    n++;
    if (cb(cb_ctx, m, &i, &fake(m)->values[i])) break;
  }
  return n;
}

const maps::MapOps kFakeOps = {
    .lookup_elem = fake_lookup,
    .update_elem = fake_update,
    .delete_elem = fake_delete,
    .for_each_elem = fake_for_each,
};

const maps::MapOps kNoOps = {};

class MapHelpers : public ::testing::Test {
 protected:
  MapHelpers() {
    map_.ops = &kFakeOps;
    map_.attr.type = 2;
    map_.attr.key_size = 4;
    map_.attr.value_size = 8;
    map_.attr.max_entries = 4;
  }
  uint64_t m() { return u(static_cast<maps::Map*>(&map_)); }
  FakeArray map_;
};

TEST_F(MapHelpers, LookupReturnsTheValuePointerOrNull) {
  uint32_t key = 2;
  EXPECT_EQ(bpf_map_lookup_elem(m(), u(&key), 0, 0, 0), u(&map_.values[2]));
  key = 4;
  EXPECT_EQ(bpf_map_lookup_elem(m(), u(&key), 0, 0, 0), 0u);
}

TEST_F(MapHelpers, UpdateAndDeletePassTheMapsErrno) {
  uint32_t key = 1;
  uint64_t value = 0xfeed;
  EXPECT_EQ(bpf_map_update_elem(m(), u(&key), u(&value), maps::kBpfAny, 0), 0u);
  EXPECT_EQ(map_.values[1], 0xfeedu);
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), maps::kBpfNoexist, 0)), -EEXIST);
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), 7, 0)), -EINVAL);
  key = 9;
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), 0, 0)), -E2BIG);
  EXPECT_EQ(s(bpf_map_delete_elem(m(), u(&key), 0, 0, 0)), -EINVAL);
}

TEST_F(MapHelpers, ReadOnlyMapsRefuseProgramWrites) {
  uint32_t key = 0;
  uint64_t value = 1;
  map_.attr.map_flags = maps::kBpfFRdonlyProg;
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), 0, 0)), -EPERM);
  EXPECT_EQ(s(bpf_map_delete_elem(m(), u(&key), 0, 0, 0)), -EPERM);
  EXPECT_NE(bpf_map_lookup_elem(m(), u(&key), 0, 0, 0), 0u);  // reads stay allowed
  EXPECT_EQ(map_.values[0], 0u);
  // Freezing only blocks the host: programs still write (BPF_MAP_FREEZE).
  map_.attr.map_flags = 0;
  map_.frozen = true;
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), 0, 0)), 0);
  EXPECT_EQ(map_.values[0], 1u);
}

TEST_F(MapHelpers, MissingOpsAreNotSupported) {
  map_.ops = &kNoOps;
  uint32_t key = 0;
  uint64_t value = 1;
  EXPECT_EQ(bpf_map_lookup_elem(m(), u(&key), 0, 0, 0), 0u);
  EXPECT_EQ(s(bpf_map_update_elem(m(), u(&key), u(&value), 0, 0)), -EOPNOTSUPP);
  EXPECT_EQ(s(bpf_map_delete_elem(m(), u(&key), 0, 0, 0)), -EOPNOTSUPP);
  TestRun run;
  EXPECT_EQ(s(bpf_for_each_map_elem(m(), 1, 0, 0, 0)), -EOPNOTSUPP);
}

TEST_F(MapHelpers, ForEachCallsBackWithMapKeyValueAndContext) {
  TestRun run;
  for (uint32_t i = 0; i < 4; i++) map_.values[i] = 10 * i;
  int ctx_obj = 0;
  std::vector<uint64_t> seen;
  run.callback = [&](uint64_t fn, uint64_t map, uint64_t key, uint64_t value, uint64_t ctx,
                     uint64_t a5) {
    EXPECT_EQ(fn, 0x42u);
    EXPECT_EQ(map, m());
    EXPECT_EQ(ctx, u(&ctx_obj));
    EXPECT_EQ(a5, 0u);
    uint32_t k;
    std::memcpy(&k, reinterpret_cast<const void*>(key), 4);
    EXPECT_EQ(value, u(&map_.values[k]));
    seen.push_back(*reinterpret_cast<uint64_t*>(value));
    return uint64_t{0};
  };
  EXPECT_EQ(bpf_for_each_map_elem(m(), 0x42, u(&ctx_obj), 0, 0), 4u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{0, 10, 20, 30}));
}

TEST_F(MapHelpers, ForEachStopsOnOneAndOnFaults) {
  TestRun run;
  run.callback = [&](uint64_t, uint64_t, uint64_t key, uint64_t, uint64_t, uint64_t) {
    return uint64_t{*reinterpret_cast<const uint32_t*>(key) == 1};
  };
  EXPECT_EQ(bpf_for_each_map_elem(m(), 1, 0, 0, 0), 2u);  // includes the stopping element
  run.calls = 0;
  run.callback = [&](uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t) {
    run.rc.faulted = true;
    return uint64_t{0};
  };
  bpf_for_each_map_elem(m(), 1, 0, 0, 0);
  EXPECT_EQ(run.calls, 1);
}

TEST_F(MapHelpers, ForEachFlagsMustBeZero) {
  TestRun run;
  EXPECT_EQ(s(bpf_for_each_map_elem(m(), 1, 0, 1, 0)), -EINVAL);
  EXPECT_EQ(run.calls, 0);
}

}  // namespace
}  // namespace userbpf::helpers
