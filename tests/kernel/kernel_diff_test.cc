// Differential tests: the same BPF object loaded into the Linux kernel
// (through Debian's libbpf, run with BPF_PROG_TEST_RUN) and into userbpf, on
// the same inputs; return values, packets and map contents must match.
// Skipped cleanly without root or a working bpf() syscall.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "userbpf/userbpf.h"

namespace {

std::string prog_path(const char* name) {
  return std::string(USERBPF_TEST_PROGS_DIR) + "/" + name + ".bpf.o";
}

// The object loaded into the kernel; skip reason set when the kernel is not
// available to us.
struct KernelObject {
  bpf_object* obj = nullptr;
  std::string skip;
  std::string error;

  explicit KernelObject(const std::string& path) {
    if (geteuid() != 0) {
      skip = "not root";
      return;
    }
    libbpf_set_print([](libbpf_print_level, const char*, va_list) { return 0; });
    obj = bpf_object__open_file(path.c_str(), nullptr);
    if (!obj) {
      error = "libbpf cannot open " + path + ": " + std::strerror(errno);
      return;
    }
    int err = bpf_object__load(obj);
    if (err) {
      if (err == -EPERM || err == -ENOSYS || err == -EACCES)
        skip = std::string("bpf() not available: ") + std::strerror(-err);
      else
        error = "kernel refused " + path + ": " + std::strerror(-err);
      bpf_object__close(obj);
      obj = nullptr;
    }
  }
  ~KernelObject() {
    if (obj) bpf_object__close(obj);
  }
  int prog_fd(const char* name) {
    bpf_program* p = bpf_object__find_program_by_name(obj, name);
    return p ? bpf_program__fd(p) : -1;
  }
  int map_fd(const char* name) {
    bpf_map* m = bpf_object__find_map_by_name(obj, name);
    return m ? bpf_map__fd(m) : -1;
  }
};

// libbpf's LIBBPF_OPTS macro is C; C++ fills the sized struct by hand.
bpf_test_run_opts xdp_opts(const std::vector<uint8_t>& pkt) {
  bpf_test_run_opts o;
  std::memset(&o, 0, sizeof(o));
  o.sz = sizeof(o);
  o.data_in = pkt.data();
  o.data_size_in = static_cast<uint32_t>(pkt.size());
  o.repeat = 1;
  return o;
}

#define SKIP_OR_FAIL_ON_KERNEL(k)                    \
  do {                                               \
    if (!(k).skip.empty()) GTEST_SKIP() << (k).skip; \
    ASSERT_TRUE((k).error.empty()) << (k).error;     \
  } while (0)

struct UserObject {
  std::unique_ptr<userbpf::Runtime> rt;
  std::unique_ptr<userbpf::Object> obj;

  explicit UserObject(const std::string& path) {
    auto r = userbpf::Runtime::create();
    EXPECT_TRUE(r.ok());
    rt = std::move(r.value());
    auto o = userbpf::Object::open(*rt, path);
    EXPECT_TRUE(o.ok()) << (o.ok() ? "" : o.error().message);
    if (!o.ok()) return;
    obj = std::move(o.value());
    auto st = obj->load();
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message);
    if (!st.ok()) obj.reset();
  }
};

TEST(KernelDiff, PacketMathMatchesKernel) {
  const std::string path = prog_path("diff_packet");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  UserObject u(path);
  ASSERT_TRUE(u.obj);
  auto prog = u.obj->find_program("packet_math");
  ASSERT_TRUE(prog.ok());
  auto results = u.obj->find_map("results");
  ASSERT_TRUE(results.ok());
  int kfd = k.prog_fd("packet_math"), kmap = k.map_fd("results");
  ASSERT_GE(kfd, 0);
  ASSERT_GE(kmap, 0);

  std::mt19937 rng(1234);
  for (int round = 0; round < 40; round++) {
    std::vector<uint8_t> pkt(14 + rng() % 300);
    for (auto& b : pkt) b = static_cast<uint8_t>(rng());

    std::vector<uint8_t> kout(pkt.size() + 512);
    bpf_test_run_opts topts = xdp_opts(pkt);
    topts.data_out = kout.data();
    topts.data_size_out = static_cast<uint32_t>(kout.size());
    ASSERT_EQ(bpf_prog_test_run_opts(kfd, &topts), 0) << std::strerror(errno);
    kout.resize(topts.data_size_out);

    userbpf::RunOptions ro;
    ro.packet = pkt.data();
    ro.packet_size = pkt.size();
    auto ur = prog->run(ro);
    ASSERT_TRUE(ur.ok()) << ur.error().message;

    EXPECT_EQ(ur->retval, topts.retval) << "round " << round;
    EXPECT_EQ(ur->packet_out, kout) << "round " << round;
    for (uint32_t i = 0; i < 16; i++) {
      uint64_t kv = 0, uv = 0;
      ASSERT_EQ(bpf_map_lookup_elem(kmap, &i, &kv), 0);
      ASSERT_TRUE(results->lookup(&i, &uv).ok());
      EXPECT_EQ(uv, kv) << "round " << round << " result " << i;
    }
  }
}

TEST(KernelDiff, MapErrnosMatchKernel) {
  const std::string path = prog_path("diff_maps");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  UserObject u(path);
  ASSERT_TRUE(u.obj);
  auto prog = u.obj->find_program("map_errnos");
  ASSERT_TRUE(prog.ok());
  auto codes = u.obj->find_map("codes");
  ASSERT_TRUE(codes.ok());

  std::vector<uint8_t> pkt(64, 0);
  bpf_test_run_opts topts = xdp_opts(pkt);
  ASSERT_EQ(bpf_prog_test_run_opts(k.prog_fd("map_errnos"), &topts), 0) << std::strerror(errno);
  userbpf::RunOptions ro;
  ro.packet = pkt.data();
  ro.packet_size = pkt.size();
  auto ur = prog->run(ro);
  ASSERT_TRUE(ur.ok()) << ur.error().message;
  EXPECT_EQ(ur->retval, topts.retval);

  int kmap = k.map_fd("codes");
  int nonzero = 0;
  for (uint32_t i = 0; i < 32; i++) {
    int64_t kv = 0, uv = 0;
    ASSERT_EQ(bpf_map_lookup_elem(kmap, &i, &kv), 0);
    ASSERT_TRUE(codes->lookup(&i, &uv).ok());
    EXPECT_EQ(uv, kv) << "operation " << i;
    nonzero += kv != 0;
  }
  EXPECT_GT(nonzero, 5);  // the program really recorded error codes
}

}  // namespace
