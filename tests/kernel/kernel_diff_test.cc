// Differential tests: the same BPF object loaded into the Linux kernel
// (through Debian's libbpf, run with BPF_PROG_TEST_RUN) and into userbpf, on
// the same inputs; return values, packets and map contents must match.
// Skipped cleanly without root or a working bpf() syscall.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <sched.h>
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

  // num_cpus: CPU slots of the runtime (0: the default, possible CPUs).
  explicit UserObject(const std::string& path, uint32_t num_cpus = 0) {
    userbpf::RuntimeOptions rto;
    if (num_cpus != 0) rto.num_cpus = num_cpus;
    auto r = userbpf::Runtime::create(rto);
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

int err_of(const userbpf::Status& st) {
  return st.ok() ? 0 : st.error().code;
}

// One host operation with a u32 key on the kernel's map (bpf(2)) and on
// userbpf's (the API): the errnos must match, and the values read where
// both succeed. step numbers the operations in failure messages.
struct HostPair {
  int fd;
  userbpf::Map& um;
  int step = 0;

  void update(uint32_t key, const void* value, uint64_t flags) {
    int ke = bpf_map_update_elem(fd, &key, value, flags) ? errno : 0;
    int ue = err_of(um.update(&key, value, flags));
    EXPECT_EQ(ue, ke) << "step " << step << ": update key " << key << " flags " << flags;
    step++;
  }
  // bytes: the value buffer's size (both sides' buffers start as 0xa5).
  void lookup(uint32_t key, size_t bytes, uint64_t flags, bool and_delete) {
    std::vector<uint8_t> kv(bytes, 0xa5), uv(bytes, 0xa5);
    int ke, ue;
    if (and_delete) {
      ke = bpf_map_lookup_and_delete_elem_flags(fd, &key, kv.data(), flags) ? errno : 0;
      ue = err_of(um.lookup_and_delete(&key, uv.data(), flags));
    } else {
      ke = bpf_map_lookup_elem_flags(fd, &key, kv.data(), flags) ? errno : 0;
      ue = err_of(um.lookup(&key, uv.data(), flags));
    }
    EXPECT_EQ(ue, ke) << "step " << step << ": lookup key " << key << " flags " << flags;
    if (ke == 0 && ue == 0) EXPECT_EQ(uv, kv) << "step " << step << ": value of key " << key;
    step++;
  }
};

// One XDP run of pkt in the kernel (prog fd kfd) and in userbpf (prog):
// r0 and the packet out of each must be equal. what names the case.
void expect_same_xdp_run(int kfd, userbpf::Program& prog, const std::vector<uint8_t>& pkt,
                         const std::string& what) {
  std::vector<uint8_t> kout(pkt.size() + 8192);
  bpf_test_run_opts topts = xdp_opts(pkt);
  topts.data_out = kout.data();
  topts.data_size_out = static_cast<uint32_t>(kout.size());
  ASSERT_EQ(bpf_prog_test_run_opts(kfd, &topts), 0) << std::strerror(errno);
  kout.resize(topts.data_size_out);
  userbpf::RunOptions ro;
  ro.packet = pkt.data();
  ro.packet_size = pkt.size();
  auto ur = prog.run(ro);
  ASSERT_TRUE(ur.ok()) << ur.error().message;
  EXPECT_EQ(static_cast<int32_t>(ur->retval), static_cast<int32_t>(topts.retval)) << what;
  EXPECT_EQ(ur->packet_out, kout) << what;
}

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

    expect_same_xdp_run(kfd, *prog, pkt, "round " + std::to_string(round));
    for (uint32_t i = 0; i < 16; i++) {
      uint64_t kv = 0, uv = 0;
      ASSERT_EQ(bpf_map_lookup_elem(kmap, &i, &kv), 0);
      ASSERT_TRUE(results->lookup(&i, &uv).ok());
      EXPECT_EQ(uv, kv) << "round " << round << " result " << i;
    }
  }
}

// bpf_xdp_adjust_tail's limits: a linear frame grows to the kernel's 3520
// bytes and shrinks to the Ethernet header, never further.
TEST(KernelDiff, XdpTailLimitsMatchKernel) {
  const std::string path = prog_path("diff_xdp_tail");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  UserObject u(path);
  ASSERT_TRUE(u.obj);
  auto prog = u.obj->find_program("xdp_tail");
  ASSERT_TRUE(prog.ok());
  const int kfd = k.prog_fd("xdp_tail");
  ASSERT_GE(kfd, 0);
  for (int32_t len : {18, 64, 1500, 3000, 3520}) {
    for (int32_t delta : {0, 1, 100, 3520 - len, 3520 - len + 1, 3520 - len + 8, 4096, -1, 14 - len,
                          13 - len, -len}) {
      std::vector<uint8_t> pkt(static_cast<size_t>(len), 0x5a);
      std::memcpy(pkt.data() + 14, &delta, sizeof(delta));
      expect_same_xdp_run(kfd, *prog, pkt,
                          "len " + std::to_string(len) + " delta " + std::to_string(delta));
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

// Pins the calling thread to CPU 0 for its lifetime, then restores the mask:
// the kernel's LRU lists (and userbpf's CPU slots) are chosen by the CPU
// an operation runs on.
struct PinToCpu0 {
  cpu_set_t saved;
  bool ok = false;
  PinToCpu0() {
    if (sched_getaffinity(0, sizeof(saved), &saved) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    ok = sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  ~PinToCpu0() {
    if (ok) sched_setaffinity(0, sizeof(saved), &saved);
  }
};

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
  UserObject uo(path, static_cast<uint32_t>(ncpus));  // the kernel's CPUs
  ASSERT_TRUE(uo.obj);
  userbpf::Object* u = uo.obj.get();
  // The program's per-CPU writes must land in the same CPU's copy on both.
  PinToCpu0 pin;
  ASSERT_TRUE(pin.ok);

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

// LRU hash maps (LRU_HASH, LRU_PERCPU_HASH, common and per-CPU lists) with
// as many userbpf CPU slots as the kernel has possible CPUs and the thread
// pinned to CPU 0, so both sides work on the same CPU's lists and the
// eviction order is deterministic: the program-side errnos (a full map
// evicts, never E2BIG), creation (BPF_F_NO_PREALLOC is ENOTSUPP,
// BPF_F_NO_COMMON_LRU rounds max_entries up to a multiple of the CPUs),
// then per map one sequence of host inserts, program lookups (which mark
// keys used), host lookups (which do not), program inserts past
// max_entries, updates of existing keys and lookup_and_delete, replayed on
// both: errnos, values and the set of keys left must match at every step.
TEST(KernelDiff, LruMapsMatchKernel) {
  PinToCpu0 pin;
  ASSERT_TRUE(pin.ok);
  const std::string path = prog_path("diff_lru");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  const int ncpus = libbpf_num_possible_cpus();
  ASSERT_GT(ncpus, 0);
  UserObject uo(path, static_cast<uint32_t>(ncpus));  // the kernel's CPUs
  ASSERT_TRUE(uo.obj);
  userbpf::Object* u = uo.obj.get();

  // Runs a program on both with a packet; the return values must match.
  auto run_both = [&](const char* prog, const std::vector<uint8_t>& pkt) {
    bpf_test_run_opts topts = xdp_opts(pkt);
    EXPECT_EQ(bpf_prog_test_run_opts(k.prog_fd(prog), &topts), 0) << std::strerror(errno);
    userbpf::RunOptions ro;
    ro.packet = pkt.data();
    ro.packet_size = pkt.size();
    auto ur = u->find_program(prog)->run(ro);
    EXPECT_TRUE(ur.ok()) << (ur.ok() ? "" : ur.error().message);
    if (ur.ok()) EXPECT_EQ(ur->retval, topts.retval) << prog;
    return static_cast<int>(topts.retval);
  };
  auto key_set = [&](const char* map) {
    std::set<uint32_t> ks, us;
    uint32_t cur = 0, next = 0;
    for (bool first = true; bpf_map_get_next_key(k.map_fd(map), first ? nullptr : &cur, &next) == 0;
         first = false) {
      ks.insert(next);
      cur = next;
    }
    auto um = u->find_map(map);
    for (bool first = true; um->get_next_key(first ? nullptr : &cur, &next).ok(); first = false) {
      us.insert(next);
      cur = next;
    }
    return std::make_pair(ks, us);
  };

  // Program side: every return code.
  std::vector<uint8_t> pkt(64, 0);
  run_both("lru_errnos", pkt);
  auto codes = u->find_map("codes");
  ASSERT_TRUE(codes.ok());
  int nonzero = 0;
  for (uint32_t i = 0; i < 48; i++) {
    int64_t kv = 0, uv = 0;
    ASSERT_EQ(bpf_map_lookup_elem(k.map_fd("codes"), &i, &kv), 0);
    ASSERT_TRUE(codes->lookup(&i, &uv).ok());
    EXPECT_EQ(uv, kv) << "program operation " << i;
    nonzero += kv != 0;
  }
  EXPECT_GT(nonzero, 5);
  EXPECT_EQ(run_both("lru_fill", pkt), 20);
  for (const char* map : {"lru_hash", "lru_pcpu"}) {
    auto [ks, us] = key_set(map);
    EXPECT_EQ(us, ks) << map << ": keys left after 20 program inserts into 8 entries";
    EXPECT_LE(ks.size(), 8u);
  }

  // Creation.
  {
    bpf_map_create_opts co;
    std::memset(&co, 0, sizeof(co));
    co.sz = sizeof(co);
    co.map_flags = BPF_F_NO_PREALLOC;
    int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "lru_nopre", 4, 8, 8, &co);
    int ke = fd < 0 ? errno : 0;
    if (fd >= 0) close(fd);
    EXPECT_EQ(ke, 524) << "the kernel's ENOTSUPP";
    auto bad = userbpf::Object::open(*uo.rt, prog_path("diff_lru_noprealloc"));
    ASSERT_TRUE(bad.ok()) << bad.error().message;
    userbpf::Status st = bad.value()->load();
    EXPECT_EQ(err_of(st), ke) << (st.ok() ? "" : st.error().message);
    bpf_map_info info;
    std::memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    ASSERT_EQ(bpf_obj_get_info_by_fd(k.map_fd("lru_round"), &info, &len), 0);
    EXPECT_EQ(u->find_map("lru_round")->max_entries(), info.max_entries);
    EXPECT_EQ(info.max_entries % static_cast<uint32_t>(ncpus), 0u);
  }

  // Host and program sequences, per map.
  const char* names[] = {"lru_hash", "lru_pcpu", "lru_hash_nc", "lru_pcpu_nc"};
  for (uint32_t which = 0; which < 4; which++) {
    const char* map = names[which];
    SCOPED_TRACE(map);
    const int fd = k.map_fd(map);
    ASSERT_GE(fd, 0);
    auto um = u->find_map(map);
    ASSERT_TRUE(um.ok());
    const size_t vbytes = um->value_buffer_size();
    ASSERT_EQ(vbytes, (which & 1) ? 8u * ncpus : 8u);
    HostPair ops{fd, um.value()};
    // Empties the map on both sides.
    for (uint32_t key : key_set(map).first) {
      bpf_map_delete_elem(fd, &key);
      (void)um->erase(&key);
    }
    for (uint32_t key : key_set(map).second) (void)um->erase(&key);
    auto value_for = [&](uint32_t key, uint64_t salt) {
      std::vector<uint64_t> v(vbytes / 8);
      for (size_t c = 0; c < v.size(); c++) v[c] = key * 1000 + salt + c;
      return v;
    };
    auto update = [&](uint32_t key, uint64_t flags, uint64_t salt = 0) {
      ops.update(key, value_for(key, salt).data(), flags);
    };
    auto lookup = [&](uint32_t key, uint64_t flags, bool and_delete = false) {
      ops.lookup(key, vbytes, flags, and_delete);
    };
    auto keys_pkt = [&](std::vector<uint32_t> keys) {
      std::vector<uint32_t> w = {which, static_cast<uint32_t>(keys.size())};
      w.insert(w.end(), keys.begin(), keys.end());
      std::vector<uint8_t> p(64 + w.size() * 4, 0);
      std::memcpy(p.data(), w.data(), w.size() * 4);
      return p;
    };
    auto expect_same_keys = [&](const char* when) {
      auto [ks, us] = key_set(map);
      EXPECT_EQ(us, ks) << "keys after " << when;
      EXPECT_LE(ks.size(), 8u) << when;
      return ks;
    };

    for (uint32_t key = 100; key < 108; key++) update(key, BPF_ANY);
    expect_same_keys("filling");
    // Per-CPU lists: CPU 0's list holds max_entries / CPUs of the keys.
    const uint32_t marked[2] = {which < 2 ? 101u : 105u, which < 2 ? 103u : 107u};
    EXPECT_EQ(run_both("lru_touch", keys_pkt({marked[0], marked[1]})), 2);
    lookup(100, 0);
    lookup(104, 0);
    for (uint32_t key = 108; key < 114; key++) update(key, BPF_NOEXIST);
    std::set<uint32_t> now = expect_same_keys("host inserts past max_entries");
    // One common list: the marked keys survived. (Per-CPU lists of four
    // demote them again within these inserts, in both.)
    if (which < 2) EXPECT_TRUE(now.count(101) && now.count(103)) << "marked keys evicted";
    run_both("lru_put", keys_pkt({114, 115, 116, 117}));
    now = expect_same_keys("program inserts");
    ASSERT_FALSE(now.empty());
    uint32_t newest = *now.rbegin();
    update(newest, BPF_EXIST, 1);
    expect_same_keys("BPF_EXIST update of an existing key");
    update(newest, BPF_ANY, 2);
    now = expect_same_keys("BPF_ANY update of an existing key");
    for (uint32_t key : now) lookup(key, 0);
    update(newest, 3, 4);
    update(newest, BPF_F_LOCK, 4);
    update(999, BPF_EXIST, 4);
    lookup(newest, BPF_F_LOCK);
    lookup(999, 0);
    lookup(999, 0, true);
    if (!now.empty()) lookup(*now.begin(), 0, true);
    now = expect_same_keys("lookup_and_delete");
    {
      uint32_t key = 999;
      int ke = bpf_map_delete_elem(fd, &key) ? errno : 0;
      EXPECT_EQ(err_of(um->erase(&key)), ke);
    }
    // lookup_batch: the same keys and values.
    std::vector<uint32_t> kk(16), uk(16);
    std::vector<uint8_t> kvals(16 * vbytes), uvals(16 * vbytes);
    uint32_t kout = 0, uout = 0, kcount = 16;
    bpf_map_batch_opts bo;
    std::memset(&bo, 0, sizeof(bo));
    bo.sz = sizeof(bo);
    int kerr =
        bpf_map_lookup_batch(fd, nullptr, &kout, kk.data(), kvals.data(), &kcount, &bo) ? errno : 0;
    auto ub = um->lookup_batch(nullptr, &uout, uk.data(), uvals.data(), 16);
    ASSERT_TRUE(ub.ok()) << ub.error().message;
    EXPECT_EQ(kerr == ENOENT, ub->done);
    ASSERT_EQ(ub->count, kcount);
    std::map<uint32_t, std::vector<uint8_t>> kb, ubm;
    for (uint32_t i = 0; i < kcount; i++) {
      kb[kk[i]].assign(kvals.begin() + i * vbytes, kvals.begin() + (i + 1) * vbytes);
      ubm[uk[i]].assign(uvals.begin() + i * vbytes, uvals.begin() + (i + 1) * vbytes);
    }
    EXPECT_EQ(ubm, kb);
  }
}

// bpf_spin_lock in ARRAY and HASH values (SPEC.md sections 2-3): program-side
// BPF_F_LOCK updates (every code), programs taking the lock, and the same
// host operations through bpf(2) and the userbpf API: BPF_F_LOCK lookups,
// updates, lookup_and_delete and batches, on maps with and without a lock;
// errno and the resulting bytes (the lock word reads as zeros) must match.
TEST(KernelDiff, SpinLockMatchesKernel) {
  const std::string path = prog_path("diff_spin_lock");
  KernelObject k(path);
  SKIP_OR_FAIL_ON_KERNEL(k);
  UserObject u(path);
  ASSERT_TRUE(u.obj);
  constexpr uint64_t kLock = BPF_F_LOCK;

  // Program side.
  std::vector<uint8_t> pkt(64, 0);
  auto run_both = [&](const char* name) {
    bpf_test_run_opts topts = xdp_opts(pkt);
    EXPECT_EQ(bpf_prog_test_run_opts(k.prog_fd(name), &topts), 0) << std::strerror(errno);
    userbpf::RunOptions ro;
    ro.packet = pkt.data();
    ro.packet_size = pkt.size();
    auto ur = u.obj->find_program(name)->run(ro);
    ASSERT_TRUE(ur.ok()) << ur.error().message;
    EXPECT_EQ(ur->retval, topts.retval) << name;
  };
  run_both("lock_updates");
  auto codes = u.obj->find_map("codes");
  ASSERT_TRUE(codes.ok());
  int nonzero = 0;
  for (uint32_t i = 0; i < 16; i++) {
    int64_t kv = 0, uv = 0;
    ASSERT_EQ(bpf_map_lookup_elem(k.map_fd("codes"), &i, &kv), 0);
    ASSERT_TRUE(codes->lookup(&i, &uv).ok());
    EXPECT_EQ(uv, kv) << "program operation " << i;
    nonzero += kv != 0;
  }
  EXPECT_GT(nonzero, 4);
  run_both("bump");  // no hash key 0 yet: XDP_DROP after the array's bump

  struct Target {
    const char* map;
    uint32_t value_size;
    bool hash;
  };
  const Target targets[] = {{"lock_array", 24, false},
                            {"lock_hash", 24, true},
                            {"plain_array", 8, false},
                            {"plain_hash", 8, true}};
  for (const Target& t : targets) {
    SCOPED_TRACE(t.map);
    const int fd = k.map_fd(t.map);
    ASSERT_GE(fd, 0);
    auto um = u.obj->find_map(t.map);
    ASSERT_TRUE(um.ok());
    HostPair ops{fd, um.value()};
    auto update = [&](uint32_t key, uint64_t flags, uint8_t fill) {
      // Every byte set, the lock word's too: neither side may store it.
      std::vector<uint8_t> v(t.value_size);
      for (size_t i = 0; i < v.size(); i++) v[i] = static_cast<uint8_t>(fill + i);
      ops.update(key, v.data(), flags);
    };
    auto lookup = [&](uint32_t key, uint64_t flags, bool and_delete = false) {
      ops.lookup(key, t.value_size, flags, and_delete);
    };
    for (uint32_t key : {0u, 1u, 2u}) {
      update(key, kLock, 0x10);
      lookup(key, kLock);
      lookup(key, 0);
      update(key, BPF_ANY, 0x20);
      lookup(key, kLock);
      update(key, kLock | BPF_NOEXIST, 0x30);
      update(key, kLock | BPF_EXIST, 0x40);
      lookup(key, kLock);
    }
    update(5, kLock | BPF_EXIST, 0x50);
    update(1, kLock | 8, 0x50);
    update(1, 8, 0x50);
    update(1, 3, 0x50);
    update(9, kLock, 0x60);  // arrays: E2BIG
    lookup(9, kLock);
    lookup(1, kLock | 8);
    lookup(1, 8);
    lookup(1, kLock, true);
    lookup(2, kLock | 8, true);
    lookup(2, 0, true);
    lookup(7, kLock, true);
    for (uint32_t key = 3; key < 6; key++) update(key, kLock, static_cast<uint8_t>(key));

    // Batches with elem_flags BPF_F_LOCK.
    bpf_map_batch_opts bo;
    std::memset(&bo, 0, sizeof(bo));
    bo.sz = sizeof(bo);
    bo.elem_flags = kLock;
    std::vector<uint32_t> ukeys = {3, 4}, kkeys = ukeys;
    std::vector<uint8_t> vals(2 * t.value_size, 0x77);
    uint32_t kcount = 2;
    int kerr = bpf_map_update_batch(fd, kkeys.data(), vals.data(), &kcount, &bo) ? errno : 0;
    auto ub = um->update_batch(ukeys.data(), vals.data(), 2, kLock);
    EXPECT_EQ(ub.ok() ? 0 : ub.error().code, kerr) << "update_batch";
    std::vector<uint32_t> kk(16), uk(16);
    std::vector<uint8_t> kvals(16 * t.value_size), uvals(16 * t.value_size);
    uint32_t kout = 0, uout = 0;
    kcount = 16;
    kerr =
        bpf_map_lookup_batch(fd, nullptr, &kout, kk.data(), kvals.data(), &kcount, &bo) ? errno : 0;
    auto lb = um->lookup_batch(nullptr, &uout, uk.data(), uvals.data(), 16, kLock);
    EXPECT_EQ(lb.ok() ? (lb->done ? ENOENT : 0) : lb.error().code, kerr) << "lookup_batch";
    if (kerr == ENOENT && lb.ok()) {
      ASSERT_EQ(lb->count, kcount);
      std::map<uint32_t, std::vector<uint8_t>> kb, ubm;
      for (uint32_t i = 0; i < kcount; i++) {
        kb[kk[i]].assign(kvals.begin() + i * t.value_size, kvals.begin() + (i + 1) * t.value_size);
        ubm[uk[i]].assign(uvals.begin() + i * t.value_size, uvals.begin() + (i + 1) * t.value_size);
      }
      EXPECT_EQ(ubm, kb);
    }
  }

  // Programs taking the locks: the values after three bumps (the hash now
  // has key 0, inserted with BPF_F_LOCK above).
  for (int i = 0; i < 3; i++) run_both("bump");
  for (const char* name : {"lock_array", "lock_hash"}) {
    uint32_t key = 0;
    std::vector<uint8_t> kv(24, 0xa5), uv(24, 0xa5);
    ASSERT_EQ(bpf_map_lookup_elem_flags(k.map_fd(name), &key, kv.data(), kLock), 0);
    ASSERT_TRUE(u.obj->find_map(name)->lookup(&key, uv.data(), kLock).ok());
    EXPECT_EQ(uv, kv) << name;
  }
}

}  // namespace
