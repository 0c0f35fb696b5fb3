// Public API tests: open -> load -> run -> maps, errors for misuse, and runs
// that fault or never end returning an Error while the host keeps going.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "userbpf/userbpf.h"

namespace {

std::string prog_path(const char* name) {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/" + name + ".bpf.o";
}

struct Args {
  uint32_t a, b;
  uint64_t out;
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = userbpf::Runtime::create();
    ASSERT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, prog_path("api_basic"));
    ASSERT_TRUE(o.ok()) << o.error().message;
    obj = std::move(o.value());
  }
  void load() {
    auto st = obj->load();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;
};

TEST_F(ApiTest, RunsSyscallProgramOverContextBlob) {
  load();
  auto prog = obj->find_program("compute");
  ASSERT_TRUE(prog.ok());
  EXPECT_EQ(prog->section(), "syscall");
  EXPECT_STREQ(prog->type_name(), "syscall");
  EXPECT_TRUE(prog->sleepable());

  Args args{5, 10, 0};
  userbpf::RunOptions ro;
  ro.ctx = &args;
  ro.ctx_size = sizeof(args);
  auto r = prog->run(ro);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->retval, 6u);
  ASSERT_EQ(r->ctx_out.size(), sizeof(Args));
  Args out;
  std::memcpy(&out, r->ctx_out.data(), sizeof(out));
  // 5*3 + 100 + sum(i^2, i<10) = 15 + 100 + 285
  EXPECT_EQ(out.out, 400u);

  auto squares = obj->find_map("squares");
  ASSERT_TRUE(squares.ok());
  for (uint32_t i = 0; i < 10; i++) {
    uint64_t v = 0;
    ASSERT_TRUE(squares->lookup(&i, &v).ok()) << i;
    EXPECT_EQ(v, uint64_t{i} * i);
  }
  uint32_t missing = 10;
  uint64_t v;
  auto st = squares->lookup(&missing, &v);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ENOENT);
}

TEST_F(ApiTest, GlobalDataVisibleToHostAndRodataFrozen) {
  load();
  auto prog = obj->find_program("compute");
  ASSERT_TRUE(prog.ok());
  Args args{1, 0, 0};
  userbpf::RunOptions ro;
  ro.ctx = &args;
  ro.ctx_size = sizeof(args);
  ro.repeat = 7;
  ASSERT_TRUE(prog->run(ro).ok());

  auto bss = obj->find_map(".bss");
  ASSERT_TRUE(bss.ok());
  uint32_t zero = 0;
  std::vector<uint8_t> val(bss->value_buffer_size());
  ASSERT_TRUE(bss->lookup(&zero, val.data()).ok());
  uint64_t runs;
  std::memcpy(&runs, val.data(), sizeof(runs));
  EXPECT_EQ(runs, 7u);
  EXPECT_EQ(prog->stats().run_cnt, 7u);

  auto rodata = obj->find_map(".rodata");
  ASSERT_TRUE(rodata.ok());
  std::vector<uint8_t> ro_val(rodata->value_buffer_size());
  ASSERT_TRUE(rodata->lookup(&zero, ro_val.data()).ok());
  uint64_t mult;
  std::memcpy(&mult, ro_val.data(), sizeof(mult));
  EXPECT_EQ(mult, 3u);
  auto st = rodata->update(&zero, ro_val.data());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EPERM);

  // .data is writable from the host and the program sees the change.
  auto data = obj->find_map(".data");
  ASSERT_TRUE(data.ok());
  std::vector<uint8_t> d(data->value_buffer_size());
  ASSERT_TRUE(data->lookup(&zero, d.data()).ok());
  uint64_t seed = 1000;
  std::memcpy(d.data(), &seed, sizeof(seed));  // seed is the first .data variable
  ASSERT_TRUE(data->update(&zero, d.data()).ok());
  args = {2, 0, 0};
  ro.repeat = 1;
  auto r = prog->run(ro);
  ASSERT_TRUE(r.ok());
  std::memcpy(&args, r->ctx_out.data(), sizeof(args));
  EXPECT_EQ(args.out, 2u * 3 + 1000);
}

TEST_F(ApiTest, FaultingProgramReturnsErrorAndHostSurvives) {
  load();
  auto prog = obj->find_program("null_deref");
  ASSERT_TRUE(prog.ok());
  auto r = prog->run({});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EFAULT);
  EXPECT_NE(r.error().message.find("pc"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("0x10"), std::string::npos) << r.error().message;
  EXPECT_EQ(prog->stats().faults, 1u);
  // The runtime still works after the fault.
  auto ok = obj->find_program("compute");
  Args args{1, 1, 0};
  userbpf::RunOptions ro;
  ro.ctx = &args;
  ro.ctx_size = sizeof(args);
  EXPECT_TRUE(ok->run(ro).ok());
}

TEST_F(ApiTest, RunawayLoopStopsAtInstructionBudget) {
  load();
  auto prog = obj->find_program("spin_forever");
  ASSERT_TRUE(prog.ok());
  userbpf::RunOptions ro;
  ro.insn_budget = 1'000'000;
  auto r = prog->run(ro);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ELOOP);
  EXPECT_NE(r.error().message.find("budget"), std::string::npos) << r.error().message;
}

TEST_F(ApiTest, XdpRunsOverPacketAndWritesItBack) {
  load();
  auto prog = obj->find_program("xdp_len");
  ASSERT_TRUE(prog.ok());
  std::vector<uint8_t> pkt(64, 0x11);
  userbpf::RunOptions ro;
  ro.packet = pkt.data();
  ro.packet_size = pkt.size();
  auto r = prog->run(ro);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->retval, 2u);  // XDP_PASS
  ASSERT_EQ(r->packet_out.size(), pkt.size());
  EXPECT_EQ(r->packet_out[0], 0x42);
  EXPECT_EQ(r->packet_out[1], 0x11);
  pkt.resize(20);
  ro.packet_size = pkt.size();
  r = prog->run(ro);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->retval, 3u);  // XDP_TX
  // An xdp program takes a packet, not a context blob.
  uint64_t blob = 0;
  ro.ctx = &blob;
  ro.ctx_size = sizeof(blob);
  EXPECT_EQ(prog->run(ro).error().code, EINVAL);
}

TEST_F(ApiTest, MisuseIsReportedWithErrno) {
  auto before = obj->find_program("compute");
  ASSERT_FALSE(before.ok());
  EXPECT_EQ(before.error().code, EINVAL);
  EXPECT_TRUE(obj->set_map_max_entries("squares", 256).ok());
  EXPECT_EQ(obj->set_map_max_entries("nope", 1).error().code, ENOENT);
  load();
  EXPECT_EQ(obj->load().error().code, EBUSY);
  EXPECT_EQ(obj->find_map("squares")->max_entries(), 256u);
  EXPECT_EQ(obj->find_program("nope").error().code, ENOENT);
  EXPECT_EQ(obj->find_map("nope").error().code, ENOENT);
  auto missing = userbpf::Object::open(*rt, "/nonexistent.bpf.o");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
}

}  // namespace
