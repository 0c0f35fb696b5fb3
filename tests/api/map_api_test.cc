// Public Map API tests: host operations and batch walks through the handle,
// and the errors (errno + message) for misuse.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "userbpf/userbpf.h"

namespace {

class MapApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = userbpf::Runtime::create();
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, std::string(USERBPF_TEST_PROGS_DIR) + "/api_basic.bpf.o");
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
    ASSERT_TRUE(obj->load().ok());
    auto m = obj->find_map("squares");
    ASSERT_TRUE(m.ok());
    map = std::make_unique<userbpf::Map>(m.value());
  }
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
  std::unique_ptr<userbpf::Map> map;
};

TEST_F(MapApiTest, DescribesItself) {
  EXPECT_EQ(map->name(), "squares");
  EXPECT_STREQ(map->type_name(), "hash");
  EXPECT_EQ(map->type(), 1u);
  EXPECT_EQ(map->key_size(), 4u);
  EXPECT_EQ(map->value_size(), 8u);
  EXPECT_EQ(map->value_buffer_size(), 8u);
  EXPECT_EQ(map->max_entries(), 128u);
  EXPECT_GT(map->memory_used(), 128u * 8);
}

TEST_F(MapApiTest, UpdateLookupEraseAndFlags) {
  uint32_t k = 7;
  uint64_t v = 49, out = 0;
  ASSERT_TRUE(map->update(&k, &v, 1 /* BPF_NOEXIST */).ok());
  auto st = map->update(&k, &v, 1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EEXIST);
  EXPECT_NE(st.error().message.find("squares"), std::string::npos) << st.error().message;
  ASSERT_TRUE(map->lookup(&k, &out).ok());
  EXPECT_EQ(out, 49u);
  EXPECT_EQ(map->update(&k, &v, 8).error().code, EINVAL);
  ASSERT_TRUE(map->lookup_and_delete(&k, &out).ok());
  EXPECT_EQ(out, 49u);
  EXPECT_EQ(map->lookup(&k, &out).error().code, ENOENT);
  EXPECT_EQ(map->erase(&k).error().code, ENOENT);
}

// A missing key (and the end of a key walk) is ENOENT with a message naming
// the map and the operation, the same on every call (its Error is built
// once per map handle and copied), and other errors of the same operation
// keep their own messages.
TEST_F(MapApiTest, NotFoundNamesTheMapAndTheOperation) {
  uint32_t k = 99, next = 0;
  uint64_t out = 0;
  for (int round = 0; round < 2; round++) {
    auto lookup = map->lookup(&k, &out);
    ASSERT_FALSE(lookup.ok());
    EXPECT_EQ(lookup.error().code, ENOENT);
    EXPECT_EQ(lookup.error().message, "map squares: lookup: No such file or directory");
    auto erase = map->erase(&k);
    ASSERT_FALSE(erase.ok());
    EXPECT_EQ(erase.error().code, ENOENT);
    EXPECT_EQ(erase.error().message, "map squares: delete: No such file or directory");
    auto walk = map->get_next_key(nullptr, &next);  // empty map: the walk ends at once
    ASSERT_FALSE(walk.ok());
    EXPECT_EQ(walk.error().code, ENOENT);
    EXPECT_EQ(walk.error().message, "map squares: get_next_key: No such file or directory");
  }
  auto bad_flags = map->lookup(&k, &out, 1u << 20);
  ASSERT_FALSE(bad_flags.ok());
  EXPECT_EQ(bad_flags.error().code, EINVAL);
  EXPECT_NE(bad_flags.error().message.find("map squares: lookup: "), std::string::npos)
      << bad_flags.error().message;
}

TEST_F(MapApiTest, BatchWalkSeesEveryElementOnce) {
  std::vector<uint32_t> keys;
  std::vector<uint64_t> vals;
  for (uint32_t i = 0; i < 100; i++) {
    keys.push_back(i * 3);
    vals.push_back(i * 9);
  }
  auto up = map->update_batch(keys.data(), vals.data(), 100);
  ASSERT_TRUE(up.ok()) << up.error().message;
  EXPECT_EQ(up->count, 100u);

  std::set<uint32_t> seen;
  uint32_t in = 0, out = 0;
  bool first = true;
  for (int guard = 0; guard < 1000; guard++) {
    uint32_t kbuf[16];
    uint64_t vbuf[16];
    auto r = map->lookup_batch(first ? nullptr : &in, &out, kbuf, vbuf, 16);
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (uint32_t i = 0; i < r->count; i++) {
      EXPECT_TRUE(seen.insert(kbuf[i]).second) << "key " << kbuf[i] << " twice";
      EXPECT_EQ(vbuf[i], uint64_t{kbuf[i]} * 3);
    }
    if (r->done) break;
    in = out;
    first = false;
  }
  EXPECT_EQ(seen.size(), 100u);

  // A full map stops update_batch with E2BIG and says how far it got.
  std::vector<uint32_t> more;
  for (uint32_t i = 0; i < 40; i++) more.push_back(1000 + i);
  std::vector<uint64_t> mvals(40, 1);
  auto full = map->update_batch(more.data(), mvals.data(), 40);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, E2BIG);
  EXPECT_NE(full.error().message.find("after 28 of 40"), std::string::npos) << full.error().message;

  auto del = map->delete_batch(keys.data(), 100);
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_EQ(del->count, 100u);
  uint32_t k = 3;
  uint64_t v;
  EXPECT_EQ(map->lookup(&k, &v).error().code, ENOENT);
}

TEST_F(MapApiTest, GetNextKeyWalksAllKeys) {
  for (uint32_t i = 0; i < 10; i++) {
    uint64_t v = i;
    ASSERT_TRUE(map->update(&i, &v).ok());
  }
  std::set<uint32_t> seen;
  uint32_t cur = 0, next = 0;
  const void* prev = nullptr;
  while (map->get_next_key(prev, &next).ok()) {
    seen.insert(next);
    cur = next;
    prev = &cur;
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(map->get_next_key(&cur, &next).error().code, ENOENT);
}

}  // namespace
