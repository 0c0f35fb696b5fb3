// bpf_probe_read{,_user,_kernel}{,_str}: valid reads, NULL and unmapped
// addresses (-EFAULT, destination zeroed, no crash), string truncation and
// the kernel's length conventions.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "helper_test_util.h"
#include "helpers/helper_fns.h"
#include "helpers/nofault.h"

namespace userbpf::helpers {
namespace {

using testing::s;
using testing::u;

using ProbeFn = u64 (*)(u64, u64, u64, u64, u64);

// A readable page followed by an inaccessible one (PROT_NONE, so nothing
// else can be mapped there during the test), and a page that was mapped and
// then unmapped.
class GuardedPage : public ::testing::Test {
 protected:
  void SetUp() override {
    void* p = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    base_ = static_cast<char*>(p);
    ASSERT_EQ(mprotect(base_ + kPage, kPage, PROT_NONE), 0);
    void* gone = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(gone, MAP_FAILED);
    ASSERT_EQ(munmap(gone, kPage), 0);
    unmapped_ = static_cast<char*>(gone);
  }
  void TearDown() override { munmap(base_, 2 * kPage); }
  char* last_bytes(size_t n) { return base_ + kPage - n; }
  char* guard() { return base_ + kPage; }
  char* unmapped() { return unmapped_; }

  static constexpr size_t kPage = 4096;
  char* base_ = nullptr;
  char* unmapped_ = nullptr;
};

class ProbeRead : public GuardedPage, public ::testing::WithParamInterface<ProbeFn> {};

TEST_P(ProbeRead, CopiesValidMemory) {
  const char src[] = "0123456789abcdef";
  char dst[16] = {};
  EXPECT_EQ(s(GetParam()(u(dst), 16, u(src), 0, 0)), 0);
  EXPECT_EQ(std::memcmp(dst, src, 16), 0);
  std::memcpy(last_bytes(8), "ABCDEFGH", 8);  // right up to the guard page
  EXPECT_EQ(s(GetParam()(u(dst), 8, u(last_bytes(8)), 0, 0)), 0);
  EXPECT_EQ(std::memcmp(dst, "ABCDEFGH", 8), 0);
}

TEST_P(ProbeRead, BadAddressesFaultAndZeroTheDestination) {
  char dst[16];
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam()(u(dst), 16, 0, 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);

  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam()(u(dst), 16, u(unmapped()), 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);

  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam()(u(dst), 16, u(guard()), 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);

  // Straddling: 8 readable bytes, then the inaccessible page.
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam()(u(dst), 16, u(last_bytes(8)), 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);

  // Wrapping around the address space.
  EXPECT_EQ(s(GetParam()(u(dst), 16, ~0ull - 4, 0, 0)), -EFAULT);
}

TEST_P(ProbeRead, ProtNoneFaults) {
  ASSERT_EQ(mprotect(base_, kPage, PROT_NONE), 0);
  char dst[4] = {1, 2, 3, 4};
  EXPECT_EQ(s(GetParam()(u(dst), 4, u(base_), 0, 0)), -EFAULT);
  EXPECT_EQ(std::memcmp(dst, "\0\0\0\0", 4), 0);
  ASSERT_EQ(mprotect(base_, kPage, PROT_READ | PROT_WRITE), 0);
}

TEST_P(ProbeRead, ZeroSizeIsANoOp) {
  char dst[1] = {7};
  EXPECT_EQ(s(GetParam()(u(dst), 0, 0, 0, 0)), 0);
  EXPECT_EQ(dst[0], 7);
}

TEST_P(ProbeRead, KeepsErrnoForInterruptedCode) {
  char dst[4];
  errno = 1234;
  EXPECT_EQ(s(GetParam()(u(dst), 4, 0, 0, 0)), -EFAULT);
  EXPECT_EQ(errno, 1234);
}

INSTANTIATE_TEST_SUITE_P(AllForms, ProbeRead,
                         ::testing::Values(&bpf_probe_read, &bpf_probe_read_user,
                                           &bpf_probe_read_kernel));

struct StrForm {
  ProbeFn fn;
  int64_t empty_len;  // what an empty string returns
};

class ProbeReadStr : public GuardedPage, public ::testing::WithParamInterface<StrForm> {};

TEST_P(ProbeReadStr, LengthIncludesTheNul) {
  char dst[16];
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), u("hello"), 0, 0)), 6);
  EXPECT_STREQ(dst, "hello");
  // Nothing past the NUL is written.
  for (size_t i = 6; i < sizeof(dst); i++) EXPECT_EQ(dst[i], 0x5a) << i;
}

TEST_P(ProbeReadStr, TruncatesToTheBuffer) {
  char dst[8];
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam().fn(u(dst), 4, u("hello"), 0, 0)), 4);
  EXPECT_STREQ(dst, "hel");
  EXPECT_EQ(dst[4], 0x5a);
  // Exactly fitting: the string and its NUL fill the buffer.
  EXPECT_EQ(s(GetParam().fn(u(dst), 6, u("hello"), 0, 0)), 6);
  EXPECT_STREQ(dst, "hello");
  EXPECT_EQ(s(GetParam().fn(u(dst), 1, u("hello"), 0, 0)), 1);
  EXPECT_EQ(dst[0], 0);
}

TEST_P(ProbeReadStr, EmptyStringFollowsTheKernelConvention) {
  char dst[4] = {9, 9, 9, 9};
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), u(""), 0, 0)), GetParam().empty_len);
  EXPECT_EQ(dst[0], 0);
  EXPECT_EQ(dst[1], 9);
}

TEST_P(ProbeReadStr, LongStringsAcrossChunks) {
  std::string long_str(1000, 'q');
  std::vector<char> dst(2000, 1);
  EXPECT_EQ(s(GetParam().fn(u(dst.data()), 2000, u(long_str.c_str()), 0, 0)), 1001);
  EXPECT_EQ(std::string(dst.data()), long_str);
  EXPECT_EQ(s(GetParam().fn(u(dst.data()), 700, u(long_str.c_str()), 0, 0)), 700);
  EXPECT_EQ(std::string(dst.data()), std::string(699, 'q'));
}

TEST_P(ProbeReadStr, StringEndingAtAGuardPage) {
  std::memcpy(last_bytes(4), "abc", 4);  // NUL is the page's last byte
  char dst[64];
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), u(last_bytes(4)), 0, 0)), 4);
  EXPECT_STREQ(dst, "abc");
  // Room ends before the page does: no fault either.
  std::memcpy(last_bytes(4), "abcd", 4);
  EXPECT_EQ(s(GetParam().fn(u(dst), 3, u(last_bytes(4)), 0, 0)), 3);
  EXPECT_STREQ(dst, "ab");
}

TEST_P(ProbeReadStr, RunningIntoAGuardPageFaults) {
  std::memcpy(last_bytes(4), "abcd", 4);  // no NUL before the guard page
  char dst[64];
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), u(last_bytes(4)), 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), 0, 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);
  std::memset(dst, 0x5a, sizeof(dst));
  EXPECT_EQ(s(GetParam().fn(u(dst), sizeof(dst), u(unmapped()), 0, 0)), -EFAULT);
  for (char c : dst) EXPECT_EQ(c, 0);
  EXPECT_EQ(s(GetParam().fn(u(dst), 0, 0, 0, 0)), 0);  // size 0: nothing read
}

INSTANTIATE_TEST_SUITE_P(AllForms, ProbeReadStr,
                         ::testing::Values(StrForm{&bpf_probe_read_str, 0},
                                           StrForm{&bpf_probe_read_user_str, 0},
                                           StrForm{&bpf_probe_read_kernel_str, 1}));

// The pipe fallback (for sandboxes that forbid process_vm_readv) gives the
// same results.
class PipeFallback : public GuardedPage {
 protected:
  void SetUp() override {
    GuardedPage::SetUp();
    set_nofault_pipe_fallback(true);
  }
  void TearDown() override {
    set_nofault_pipe_fallback(false);
    GuardedPage::TearDown();
  }
};

TEST_F(PipeFallback, CopiesAndFaultsLikeProcessVmReadv) {
  std::vector<char> src(10000);
  for (size_t i = 0; i < src.size(); i++) src[i] = static_cast<char>(i * 7);
  std::vector<char> dst(src.size());
  EXPECT_EQ(s(bpf_probe_read(u(dst.data()), dst.size(), u(src.data()), 0, 0)), 0);
  EXPECT_EQ(dst, src);
  EXPECT_EQ(s(bpf_probe_read(u(dst.data()), 16, 0, 0, 0)), -EFAULT);
  EXPECT_EQ(s(bpf_probe_read(u(dst.data()), 16, u(unmapped()), 0, 0)), -EFAULT);
  std::memcpy(last_bytes(8), "ABCDEFGH", 8);
  EXPECT_EQ(s(bpf_probe_read(u(dst.data()), 8, u(last_bytes(8)), 0, 0)), 0);
  EXPECT_EQ(s(bpf_probe_read(u(dst.data()), 16, u(last_bytes(8)), 0, 0)), -EFAULT);
  for (int i = 0; i < 16; i++) EXPECT_EQ(dst[i], 0);
}

TEST_F(PipeFallback, Strings) {
  char dst[32];
  EXPECT_EQ(s(bpf_probe_read_kernel_str(u(dst), sizeof(dst), u("pipe"), 0, 0)), 5);
  EXPECT_STREQ(dst, "pipe");
  std::memcpy(last_bytes(4), "abc", 4);
  EXPECT_EQ(s(bpf_probe_read_user_str(u(dst), sizeof(dst), u(last_bytes(4)), 0, 0)), 4);
  std::memcpy(last_bytes(4), "abcd", 4);
  EXPECT_EQ(s(bpf_probe_read_user_str(u(dst), sizeof(dst), u(last_bytes(4)), 0, 0)), -EFAULT);
}

}  // namespace
}  // namespace userbpf::helpers
