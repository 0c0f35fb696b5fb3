// Object::read_global: global variables of .rodata/.data/.bss found by symbol
// name, initial values before load, live map values after runs.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "userbpf/userbpf.h"

namespace {

std::string prog_path(const char* name) {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/" + name + ".bpf.o";
}

uint64_t as_u64(const std::vector<uint8_t>& b) {
  uint64_t v = 0;
  EXPECT_EQ(b.size(), sizeof(v));
  if (b.size() == sizeof(v)) std::memcpy(&v, b.data(), sizeof(v));
  return v;
}

class GlobalVarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = userbpf::Runtime::create();
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, prog_path("api_basic"));
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
  }
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
};

TEST_F(GlobalVarTest, ReadsInitialValuesBeforeLoad) {
  auto m = obj->read_global("multiplier");  // .rodata
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(as_u64(*m), 3u);
  auto s = obj->read_global("seed");  // .data
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(as_u64(*s), 100u);
  auto g = obj->read_global("greeting");  // .data, 16 bytes
  ASSERT_TRUE(g.ok()) << g.error().message;
  ASSERT_EQ(g->size(), 16u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(g->data())), "hello");
  auto b = obj->read_global("runs");  // .bss
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(as_u64(*b), 0u);
}

TEST_F(GlobalVarTest, ReadsLiveValuesAfterRuns) {
  ASSERT_TRUE(obj->load().ok());
  auto prog = obj->find_program("compute");
  ASSERT_TRUE(prog.ok());
  struct {
    uint32_t a, b;
    uint64_t out;
  } args{1, 2, 0};
  userbpf::RunOptions opts;
  opts.ctx = &args;
  opts.ctx_size = sizeof(args);
  opts.repeat = 5;
  ASSERT_TRUE(prog->run(opts).ok());
  auto b = obj->read_global("runs");
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(as_u64(*b), 5u);
  auto m = obj->read_global("multiplier");  // frozen .rodata stays readable
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(as_u64(*m), 3u);
}

TEST_F(GlobalVarTest, UnknownNamesAreEnoent) {
  auto r = obj->read_global("no_such_variable");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  // Maps and functions are not global variables.
  EXPECT_EQ(obj->read_global("squares").error().code, ENOENT);
  EXPECT_EQ(obj->read_global("compute").error().code, ENOENT);
}

}  // namespace
