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
#include <map>
#include <random>
#include <set>
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

// Per-CPU maps (SPEC.md section 3) with as many userbpf CPU slots as the
// kernel has possible CPUs: the program-side errnos, then the same host
// operations through bpf(2) and the userbpf API (the per-CPU layout with its
// padding, flags, errnos, lookup_and_delete, get_next_key, batches).
// BPF_F_CPU / BPF_F_ALL_CPUS are kernel 7.0 (BEYOND the running kernel):
// not compared.
TEST(KernelDiff, PercpuMapsMatchKernel) {
  const std::string path = prog_path("diff_percpu");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  const int ncpus = libbpf_num_possible_cpus();
  ASSERT_GT(ncpus, 0);
  userbpf::RuntimeOptions rto;
  rto.num_cpus = static_cast<uint32_t>(ncpus);
  auto rt = userbpf::Runtime::create(rto);
  ASSERT_TRUE(rt.ok());
  auto o = userbpf::Object::open(**rt, path);
  ASSERT_TRUE(o.ok()) << o.error().message;
  std::unique_ptr<userbpf::Object> u = std::move(o.value());
  ASSERT_TRUE(u->load().ok());

  // Program side: every return code, and the values the program read.
  std::vector<uint8_t> pkt(64, 0);
  bpf_test_run_opts topts = xdp_opts(pkt);
  ASSERT_EQ(bpf_prog_test_run_opts(k.prog_fd("percpu_errnos"), &topts), 0) << std::strerror(errno);
  userbpf::RunOptions ro;
  ro.packet = pkt.data();
  ro.packet_size = pkt.size();
  auto ur = u->find_program("percpu_errnos")->run(ro);
  ASSERT_TRUE(ur.ok()) << ur.error().message;
  EXPECT_EQ(ur->retval, topts.retval);
  auto codes = u->find_map("codes");
  ASSERT_TRUE(codes.ok());
  for (uint32_t i = 0; i < 32; i++) {
    int64_t kv = 0, uv = 0;
    ASSERT_EQ(bpf_map_lookup_elem(k.map_fd("codes"), &i, &kv), 0);
    ASSERT_TRUE(codes->lookup(&i, &uv).ok());
    EXPECT_EQ(uv, kv) << "program operation " << i;
  }

  // Host side: the same operations on both, errno and bytes compared.
  struct Target {
    const char* map;
    uint32_t key_size, value_size;
  };
  const Target targets[] = {{"pcpu_array", 4, 8}, {"pcpu_hash", 4, 8}, {"pcpu_hash12", 8, 12}};
  for (const Target& t : targets) {
    SCOPED_TRACE(t.map);
    const int fd = k.map_fd(t.map);
    ASSERT_GE(fd, 0);
    auto um = u->find_map(t.map);
    ASSERT_TRUE(um.ok());
    const size_t stride = (t.value_size + 7) / 8 * 8, vbytes = stride * ncpus;
    ASSERT_EQ(um->value_buffer_size(), vbytes);
    auto key_of = [&](uint64_t key) {
      std::vector<uint8_t> kb(t.key_size);
      std::memcpy(kb.data(), &key, t.key_size);
      return kb;
    };
    auto err_of = [](const userbpf::Status& st) { return st.ok() ? 0 : st.error().code; };
    int step = 0;
    // update: a value per CPU, padding bytes included.
    auto update = [&](uint64_t key, uint64_t flags, uint8_t fill) {
      std::vector<uint8_t> v(vbytes);
      for (size_t i = 0; i < vbytes; i++) v[i] = static_cast<uint8_t>(fill + i);
      auto kb = key_of(key);
      int ke = bpf_map_update_elem(fd, kb.data(), v.data(), flags) ? errno : 0;
      int ue = err_of(um->update(kb.data(), v.data(), flags));
      EXPECT_EQ(ue, ke) << "step " << step << ": update key " << key << " flags " << flags;
      step++;
    };
    auto lookup = [&](uint64_t key, uint64_t flags, bool and_delete = false) {
      std::vector<uint8_t> kv(vbytes, 0xa5), uv(vbytes, 0xa5);
      auto kb = key_of(key);
      int ke, ue;
      if (and_delete) {
        ke = bpf_map_lookup_and_delete_elem_flags(fd, kb.data(), kv.data(), flags) ? errno : 0;
        ue = err_of(um->lookup_and_delete(kb.data(), uv.data(), flags));
      } else {
        ke = bpf_map_lookup_elem_flags(fd, kb.data(), kv.data(), flags) ? errno : 0;
        ue = err_of(um->lookup(kb.data(), uv.data(), flags));
      }
      EXPECT_EQ(ue, ke) << "step " << step << ": lookup key " << key << " flags " << flags;
      if (ke == 0 && ue == 0) EXPECT_EQ(uv, kv) << "step " << step << ": values of key " << key;
      step++;
    };
    auto erase = [&](uint64_t key) {
      auto kb = key_of(key);
      int ke = bpf_map_delete_elem(fd, kb.data()) ? errno : 0;
      int ue = err_of(um->erase(kb.data()));
      EXPECT_EQ(ue, ke) << "step " << step << ": delete key " << key;
      step++;
    };
    for (uint64_t key : {1, 2}) {
      update(key, BPF_ANY, 0x10);
      lookup(key, 0);
      update(key, BPF_NOEXIST, 0x20);
      update(key, BPF_EXIST, 0x30);
      lookup(key, 0);
    }
    update(3, BPF_EXIST, 0x40);
    update(1, 3, 0x40);
    update(1, BPF_F_LOCK, 0x40);
    update(1, 32, 0x40);
    update(1, uint64_t{1} << 32, 0x40);
    update(9, BPF_ANY, 0x50);  // array: E2BIG
    lookup(9, 0);
    lookup(1, BPF_F_LOCK);
    lookup(1, 2);
    lookup(1, uint64_t{1} << 32);
    erase(7);
    erase(2);
    lookup(2, 0);
    lookup(1, 0, true);
    lookup(1, BPF_F_LOCK, true);
    lookup(3, 0, true);
    for (uint64_t key = 20; key < 32; key++) update(key, BPF_NOEXIST, static_cast<uint8_t>(key));
    // get_next_key walks: the same set of keys.
    std::set<std::vector<uint8_t>> kset, uset;
    std::vector<uint8_t> cur(t.key_size), next(t.key_size);
    for (bool first = true;
         bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data()) == 0; first = false) {
      kset.insert(next);
      cur = next;
    }
    for (bool first = true; um->get_next_key(first ? nullptr : cur.data(), next.data()).ok();
         first = false) {
      uset.insert(next);
      cur = next;
    }
    EXPECT_EQ(uset, kset);
    for (const auto& kb : kset) {
      uint64_t key = 0;
      std::memcpy(&key, kb.data(), t.key_size);
      lookup(key, 0);
    }
    // lookup_batch over everything: same keys, same per-CPU values.
    std::vector<uint8_t> kk(32 * t.key_size), kvals(32 * vbytes), uk(32 * t.key_size),
        uvals(32 * vbytes);
    uint64_t kout = 0, uout = 0;
    uint32_t kcount = 32;
    bpf_map_batch_opts bo;
    std::memset(&bo, 0, sizeof(bo));
    bo.sz = sizeof(bo);
    int kerr =
        bpf_map_lookup_batch(fd, nullptr, &kout, kk.data(), kvals.data(), &kcount, &bo) ? errno : 0;
    auto ub = um->lookup_batch(nullptr, &uout, uk.data(), uvals.data(), 32);
    ASSERT_TRUE(ub.ok()) << ub.error().message;
    EXPECT_EQ(kerr == ENOENT, ub->done);
    ASSERT_EQ(ub->count, kcount);
    std::map<std::vector<uint8_t>, std::vector<uint8_t>> kb_map, ub_map;
    for (uint32_t i = 0; i < kcount; i++) {
      kb_map[std::vector<uint8_t>(kk.begin() + i * t.key_size, kk.begin() + (i + 1) * t.key_size)] =
          std::vector<uint8_t>(kvals.begin() + i * vbytes, kvals.begin() + (i + 1) * vbytes);
      ub_map[std::vector<uint8_t>(uk.begin() + i * t.key_size, uk.begin() + (i + 1) * t.key_size)] =
          std::vector<uint8_t>(uvals.begin() + i * vbytes, uvals.begin() + (i + 1) * vbytes);
    }
    EXPECT_EQ(ub_map, kb_map);
  }
}

}  // namespace
