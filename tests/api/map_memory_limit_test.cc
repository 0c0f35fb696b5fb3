// Object::set_map_memory_limit: a map's memory limit set before load, its
// errors (ENOENT unknown map, EBUSY after load), load failing with ENOMEM
// when creation needs more, and Map::memory_limit/memory_used after load.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "userbpf/userbpf.h"

namespace {

std::unique_ptr<userbpf::Object> open_basic(userbpf::Runtime& rt) {
  auto o = userbpf::Object::open(rt, std::string(USERBPF_TEST_PROGS_DIR) + "/api_basic.bpf.o");
  EXPECT_TRUE(o.ok()) << o.error().message;
  return o.ok() ? std::move(o.value()) : nullptr;
}

TEST(MapMemoryLimit, SetBeforeLoad) {
  auto rt = userbpf::Runtime::create();
  ASSERT_TRUE(rt.ok());
  auto obj = open_basic(**rt);
  ASSERT_TRUE(obj);
  userbpf::Status st = obj->set_map_memory_limit("nosuch", 1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ENOENT);
  ASSERT_TRUE(obj->set_map_memory_limit("squares", 1 << 20).ok());
  ASSERT_TRUE(obj->load().ok());
  auto m = obj->find_map("squares");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->memory_limit(), 1u << 20);
  EXPECT_GT(m->memory_used(), 0u);
  EXPECT_LE(m->memory_used(), 1u << 20);
  st = obj->set_map_memory_limit("squares", 2 << 20);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EBUSY);
  // Other maps have no limit.
  auto data = obj->find_map(".data");
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->memory_limit(), 0u);
  // Everything stored fits: host updates work.
  for (uint32_t k = 0; k < 128; k++) {
    uint64_t v = k;
    ASSERT_TRUE(m->update(&k, &v).ok()) << k;
  }
}

TEST(MapMemoryLimit, TooSmallForCreationFailsLoad) {
  auto rt = userbpf::Runtime::create();
  ASSERT_TRUE(rt.ok());
  auto obj = open_basic(**rt);
  ASSERT_TRUE(obj);
  ASSERT_TRUE(obj->set_map_memory_limit("squares", 4096).ok());
  userbpf::Status st = obj->load();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ENOMEM);
  EXPECT_NE(st.error().message.find("squares"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("memory_limit 4096"), std::string::npos) << st.error().message;
}

}  // namespace
