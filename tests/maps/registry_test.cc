// Tests of the map type registry (create_map checks and messages) and of the
// host access rules (frozen / BPF_F_RDONLY / BPF_F_WRONLY).
#include <gtest/gtest.h>

#include <cerrno>

#include "map_test_util.h"
#include "maps/array_map.h"
#include "maps/hash_map.h"
#include "maps/host_access.h"
#include "maps/percpu_maps.h"

namespace userbpf::maps {
namespace {

using test::create_errno;
using test::make_attr;
using test::must_create;

TEST(MapRegistry, FindsImplementedTypes) {
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kHASH)), &kHashMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kARRAY)), &kArrayMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kPERCPU_HASH)), &kPercpuHashMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kPERCPU_ARRAY)), &kPercpuArrayMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kLRU_HASH)), &kLruHashMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kLRU_PERCPU_HASH)), &kLruPercpuHashMapOps);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kUNSPEC)), nullptr);
  EXPECT_EQ(find_map_ops(static_cast<uint32_t>(MapType::kSTACK_TRACE)), nullptr);
  EXPECT_EQ(find_map_ops(1000), nullptr);
  EXPECT_EQ(find_map_ops(UINT32_MAX), nullptr);
}

TEST(MapRegistry, UnimplementedTypeIsEinvalNamingTheType) {
  std::string msg;
  EXPECT_EQ(create_errno(make_attr(MapType::kSTACK_TRACE, 4, 4, 1), &msg), EINVAL);
  EXPECT_NE(msg.find("7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stack_trace"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test_map"), std::string::npos) << msg;

  MapAttr a = make_attr(MapType::kHASH, 4, 4, 1);
  a.type = 1000;
  EXPECT_EQ(create_errno(a, &msg), EINVAL);
  EXPECT_NE(msg.find("1000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown"), std::string::npos) << msg;
}

TEST(MapRegistry, AllocCheckMessageNamesTheAttribute) {
  std::string msg;
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 8, 4, 1), &msg), EINVAL);
  EXPECT_NE(msg.find("key_size"), std::string::npos) << msg;
  EXPECT_EQ(create_errno(make_attr(MapType::kHASH, 4, 0, 1), &msg), EINVAL);
  EXPECT_NE(msg.find("value_size"), std::string::npos) << msg;
  EXPECT_EQ(create_errno(make_attr(MapType::kHASH, 4, 4, 0), &msg), EINVAL);
  EXPECT_NE(msg.find("max_entries"), std::string::npos) << msg;
}

TEST(MapRegistry, SharedChecks) {
  MapAttr a = make_attr(MapType::kHASH, 4, 4, 1);
  a.map_extra = 1;  // only bloom filters and arenas use it
  std::string msg;
  EXPECT_EQ(create_errno(a, &msg), EINVAL);
  EXPECT_NE(msg.find("map_extra"), std::string::npos) << msg;
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 4, 4, 1, kBpfFRdonly | kBpfFWronly)), EINVAL);
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 4, 4, 1, kBpfFRdonly)), 0);
  EXPECT_EQ(create_errno(make_attr(MapType::kARRAY, 4, 4, 1, kBpfFWronly)), 0);
}

TEST(MapRegistry, CreateSetsOpsAndAttr) {
  MapAttr a = make_attr(MapType::kHASH, 8, 16, 10, kBpfFNoPrealloc);
  a.name = "flows";
  MapPtr m = must_create(a);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->ops, &kHashMapOps);
  EXPECT_EQ(m->attr.name, "flows");
  EXPECT_EQ(m->attr.key_size, 8u);
  EXPECT_EQ(m->attr.value_size, 16u);
  EXPECT_EQ(m->attr.max_entries, 10u);
  EXPECT_EQ(m->attr.map_flags, kBpfFNoPrealloc);
  EXPECT_GT(m->memory_used.load(), 0u);
}

TEST(MapRegistry, DestroyNullIsNoop) {
  destroy_map(nullptr);
}

TEST(MapHostAccess, FrozenAndAccessFlags) {
  MapPtr m = must_create(make_attr(MapType::kARRAY, 4, 4, 1));
  ASSERT_TRUE(m);
  EXPECT_EQ(map_host_access(m.get(), true, false), 0);
  EXPECT_EQ(map_host_access(m.get(), false, true), 0);
  m->frozen.store(true);
  EXPECT_EQ(map_host_access(m.get(), true, false), 0);
  EXPECT_EQ(map_host_access(m.get(), false, true), -EPERM);
  EXPECT_EQ(map_host_access(m.get(), true, true), -EPERM);

  MapPtr ro = must_create(make_attr(MapType::kHASH, 4, 4, 1, kBpfFRdonly));
  ASSERT_TRUE(ro);
  EXPECT_EQ(map_host_access(ro.get(), true, false), 0);
  EXPECT_EQ(map_host_access(ro.get(), false, true), -EPERM);

  MapPtr wo = must_create(make_attr(MapType::kHASH, 4, 4, 1, kBpfFWronly));
  ASSERT_TRUE(wo);
  EXPECT_EQ(map_host_access(wo.get(), true, false), -EPERM);
  EXPECT_EQ(map_host_access(wo.get(), false, true), 0);
}

}  // namespace
}  // namespace userbpf::maps
