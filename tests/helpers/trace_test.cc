// bpf_trace_printk, bpf_trace_vprintk and bpf_snprintf: the kernel's format
// rules (accepted conversions, -EINVAL cases, the 512-byte string budget) and
// the output, captured through the run's PrintSink.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "helper_test_util.h"
#include "helpers/bprintf.h"
#include "helpers/helper_fns.h"

namespace userbpf::helpers {
namespace {

using testing::s;
using testing::TestRun;
using testing::u;

// bpf_trace_printk with a string literal, as bpf_printk passes it.
template <size_t N>
int64_t printk(const char (&fmt)[N], uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0) {
  return s(bpf_trace_printk(u(fmt), N, a1, a2, a3));
}

// bpf_snprintf into a string (the output as the buffer holds it).
int64_t snprintf_args(std::string* out, size_t size, const char* fmt,
                      std::initializer_list<uint64_t> args) {
  std::vector<uint64_t> data(args);
  std::vector<char> buf(size + 1, '#');
  int64_t ret = s(bpf_snprintf(size ? u(buf.data()) : 0, size, u(fmt),
                               data.empty() ? 0 : u(data.data()), data.size() * 8));
  if (out) *out = ret >= 0 && size ? std::string(buf.data()) : std::string(buf.data(), size);
  return ret;
}

std::string fmt1(const char* fmt, std::initializer_list<uint64_t> args) {
  std::string out;
  int64_t ret = snprintf_args(&out, 256, fmt, args);
  if (ret < 0) return "<errno " + std::to_string(-ret) + ">";
  EXPECT_EQ(static_cast<size_t>(ret), out.size() + 1) << fmt;
  return out;
}

TEST(TracePrintk, OneLinePerCallWithNewline) {
  TestRun run;
  EXPECT_EQ(printk("hello %d", static_cast<uint64_t>(-5)), 8);
  EXPECT_EQ(printk("already\n"), 8);
  EXPECT_EQ(printk(""), 0);
  ASSERT_EQ(run.printed.lines.size(), 3u);
  EXPECT_EQ(run.printed.lines[0], "hello -5\n");
  EXPECT_EQ(run.printed.lines[1], "already\n");  // no second newline
  EXPECT_EQ(run.printed.lines[2], "\n");
}

TEST(TracePrintk, IntegerConversions) {
  TestRun run;
  printk("%d %i %u", 0xffffffffull, 0x1'0000'0007ull, 0xffffffffull);
  printk("%ld %lu %lld", ~0ull, ~0ull, 0x8000000000000000ull);
  printk("%x %X %llx", 0x1'deadbeefull, 0xabcdefull, 0x123456789abcdefull);
  ASSERT_EQ(run.printed.lines.size(), 3u);
  EXPECT_EQ(run.printed.lines[0], "-1 7 4294967295\n");  // int-sized: low 32 bits
  EXPECT_EQ(run.printed.lines[1], "-1 18446744073709551615 -9223372036854775808\n");
  EXPECT_EQ(run.printed.lines[2], "deadbeef ABCDEF 123456789abcdef\n");
}

TEST(TracePrintk, FlagsAndWidth) {
  EXPECT_EQ(fmt1("[%5d][%-5d][%05d][%+d][% d][%-05d]", {42, 42, 42, 42, 42, 42}),
            "[   42][42   ][00042][+42][ 42][42   ]");
  EXPECT_EQ(fmt1("[%05d][%+05d][%8x][%08X]", {static_cast<uint64_t>(-42), 7, 0xbeef, 0xbeef}),
            "[-0042][+0007][    beef][0000BEEF]");
  EXPECT_EQ(fmt1("[%+u][% x]", {5, 5}), "[5][5]");  // sign flags only for signed
  EXPECT_EQ(fmt1("[%6s][%-6s][%3c]", {u("ab"), u("ab"), 'z'}), "[    ab][ab    ][  z]");
  EXPECT_EQ(fmt1("[%06s]", {u("ab")}), "[    ab]");  // strings pad with spaces
}

TEST(TracePrintk, CharsStringsPercent) {
  EXPECT_EQ(fmt1("%c%c%c", {'a', 0x162, 'c'}), "abc");  // %c takes the low byte
  EXPECT_EQ(fmt1("%s-%s", {u("one"), u("two")}), "one-two");
  EXPECT_EQ(fmt1("100%%", {}), "100%");
  EXPECT_EQ(fmt1("%d%%%d", {1, 2}), "1%2");
  EXPECT_EQ(fmt1("%pks %pus.", {u("k"), u("u")}), "k u.");
  // Plain text may carry UTF-8.
  EXPECT_EQ(fmt1("caf\xc3\xa9 %d", {1}), "caf\xc3\xa9 1");
}

TEST(TracePrintk, BadStringPointersPrintEmpty) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  munmap(page, 4096);
  EXPECT_EQ(fmt1("[%s][%s][%d]", {0, u(page), 7}), "[][][7]");
}

TEST(TracePrintk, Pointers) {
  EXPECT_EQ(fmt1("%p", {0x1234}), "0000000000001234");
  EXPECT_EQ(fmt1("%px %pK", {0xffff888012345678ull, 1}), "ffff888012345678 0000000000000001");
  EXPECT_EQ(fmt1("[%8p]", {0xabc}), "[     abc]");
  EXPECT_EQ(fmt1("%pS %ps %pB", {0x401000, 0x10, 0x20}), "0x401000 0x10 0x20");
  // bstr_printf eats the alphanumerics after a %p<x> conversion.
  EXPECT_EQ(fmt1("%pSRfoo.", {0x10}), "0x10.");
  const uint8_t ip4[4] = {192, 168, 1, 20};
  EXPECT_EQ(fmt1("%pI4 %pi4", {u(ip4), u(ip4)}), "192.168.1.20 192.168.001.020");
  const uint8_t ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(fmt1("%pI6", {u(ip6)}), "2001:0db8:0000:0000:0000:0000:0000:0001");
  EXPECT_EQ(fmt1("%pi6", {u(ip6)}), "20010db8000000000000000000000001");
  EXPECT_EQ(fmt1("%pI4", {0}), "0.0.0.0");  // unreadable: zeros
}

TEST(TracePrintk, RejectsWhatTheKernelRejects) {
  TestRun run;
  const int64_t einval = -EINVAL;
  EXPECT_EQ(printk("%o", 8), einval);     // no octal in BPF printf
  EXPECT_EQ(printk("%5.2d", 1), einval);  // no precision
  EXPECT_EQ(printk("%#x", 1), einval);    // no '#'
  EXPECT_EQ(printk("%hd", 1), einval);    // no h
  EXPECT_EQ(printk("%zu", 1), einval);    // no z
  EXPECT_EQ(printk("%ls", 1), einval);
  EXPECT_EQ(printk("%sx", u("a")), einval);  // %s followed by an alphanumeric
  EXPECT_EQ(printk("%pd", 1), einval);       // unsupported pointer kind
  EXPECT_EQ(printk("%pI5", 1), einval);
  EXPECT_EQ(printk("%f", 1), einval);
  EXPECT_EQ(printk("50%"), einval);                   // lone % at the end
  EXPECT_EQ(printk("%d %d %d %d", 1, 2, 3), einval);  // 4 conversions, 3 arguments
  EXPECT_EQ(printk("bell\a"), einval);                // control character
  EXPECT_EQ(printk("%\xc3\xa9"), einval);             // non-ASCII conversion
  // No NUL within fmt_size.
  const char unterminated[4] = {'a', 'b', 'c', 'd'};
  EXPECT_EQ(s(bpf_trace_printk(u(unterminated), 4, 0, 0, 0)), einval);
  EXPECT_TRUE(run.printed.lines.empty());
  // Three conversions are fine; fewer than the arguments too.
  EXPECT_EQ(printk("%d %d %d", 1, 2, 3), 5);
  EXPECT_EQ(printk("none", 1, 2, 3), 4);
  EXPECT_EQ(run.printed.lines.size(), 2u);
}

TEST(TracePrintk, LongLinesAreCutAtTheKernelBuffer) {
  TestRun run;
  EXPECT_EQ(printk("%-1500d|", 7), 1501);  // returns the full length
  ASSERT_EQ(run.printed.lines.size(), 1u);
  const std::string& line = run.printed.lines[0];
  ASSERT_EQ(line.size(), kMaxBprintfBuf);  // 1023 bytes and the newline
  EXPECT_EQ(line.substr(0, 2), "7 ");
  EXPECT_EQ(line.substr(line.size() - 2), " \n");
}

TEST(TracePrintk, NulCharacterEndsTheLine) {
  TestRun run;
  printk("ab%ccd", 0);
  ASSERT_EQ(run.printed.lines.size(), 1u);
  EXPECT_EQ(run.printed.lines[0], "ab\n");
}

TEST(TraceVprintk, MoreThanThreeArguments) {
  TestRun run;
  static const char fmt[] = "%d %d %d %d %s";
  uint64_t args[5] = {1, 2, 3, 4, u("five")};
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), u(args), sizeof(args), 0)), 12);
  ASSERT_EQ(run.printed.lines.size(), 1u);
  EXPECT_EQ(run.printed.lines[0], "1 2 3 4 five\n");
}

TEST(TraceVprintk, ArgumentBlockChecks) {
  TestRun run;
  static const char fmt[] = "%d";
  uint64_t args[13] = {};
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), u(args), 12, 0)), -EINVAL);      // not /8
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), u(args), 13 * 8, 0)), -EINVAL);  // > 12
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), 0, 8, 0)), -EINVAL);             // NULL data
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), 0, 0, 0)), -EINVAL);             // %d, no args
  static const char plain[] = "plain";
  EXPECT_EQ(s(bpf_trace_vprintk(u(plain), sizeof(plain), 0, 0, 0)), 5);
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), u(args), 12 * 8, 0)), 1);
}

TEST(TraceVprintk, StringsShareThe512ByteBuffer) {
  TestRun run;
  std::string big(600, 'x');
  static const char fmt[] = "%s|%s";
  uint64_t args[2] = {u(big.c_str()), u("b")};
  // The first string takes the whole buffer (cut to 511 bytes), the second
  // finds none left.
  EXPECT_EQ(s(bpf_trace_vprintk(u(fmt), sizeof(fmt), u(args), sizeof(args), 0)), -ENOSPC);
  static const char one[] = "%s";
  EXPECT_EQ(s(bpf_trace_vprintk(u(one), sizeof(one), u(args), 8, 0)), 511);
  ASSERT_EQ(run.printed.lines.size(), 1u);
  EXPECT_EQ(run.printed.lines[0], std::string(511, 'x') + "\n");
}

TEST(Snprintf, ReturnsLengthWithNulAndTruncates) {
  std::string out;
  EXPECT_EQ(snprintf_args(&out, 64, "v=%d", {12345}), 8);
  EXPECT_EQ(out, "v=12345");
  EXPECT_EQ(snprintf_args(&out, 4, "v=%d", {12345}), 8);  // would-be length + 1
  EXPECT_EQ(out, "v=1");
  EXPECT_EQ(snprintf_args(nullptr, 0, "v=%d", {12345}), 8);  // NULL, size 0
  EXPECT_EQ(snprintf_args(&out, 1, "v=%d", {1}), 4);
  EXPECT_EQ(out, "");
}

TEST(Snprintf, ErrorsLeaveTheBufferAlone) {
  std::string out;
  EXPECT_EQ(snprintf_args(&out, 8, "%o", {1}), -EINVAL);
  EXPECT_EQ(out, "########");
  uint64_t args[2] = {1, 2};
  char buf[8] = "keep";
  EXPECT_EQ(s(bpf_snprintf(u(buf), sizeof(buf), u("%d"), u(args), 12)), -EINVAL);
  EXPECT_EQ(s(bpf_snprintf(u(buf), sizeof(buf), u("%d"), 0, 8)), -EINVAL);
  EXPECT_EQ(s(bpf_snprintf(u(buf), sizeof(buf), u("%d %d %d"), u(args), 16)), -EINVAL);
  EXPECT_STREQ(buf, "keep");
}

TEST(Snprintf, TwelveArgumentsMaximum) {
  uint64_t args[12];
  for (int i = 0; i < 12; i++) args[i] = static_cast<uint64_t>(i);
  char buf[64];
  const char* fmt = "%d%d%d%d%d%d%d%d%d%d%d%d";
  EXPECT_EQ(s(bpf_snprintf(u(buf), sizeof(buf), u(fmt), u(args), sizeof(args))), 15);
  EXPECT_STREQ(buf, "01234567891011");
}

TEST(Snprintf, SpecsAfterPointerKindsKeepTheirArguments) {
  // Each conversion consumes exactly one argument, whatever its kind.
  const uint8_t ip4[4] = {10, 0, 0, 1};
  EXPECT_EQ(fmt1("%pI4 %c %s %p %d", {u(ip4), 'q', u("str"), 0xff, 99}),
            "10.0.0.1 q str 00000000000000ff 99");
  EXPECT_EQ(fmt1("%s|%d", {u(""), 5}), "|5");
}

TEST(Bprintf, FormatsWithoutARun) {
  ASSERT_EQ(vm::current_run(), nullptr);
  char out[8];
  EXPECT_EQ(bprintf_format(out, sizeof(out), "%d", 3, nullptr, 0), -EINVAL);
  uint64_t arg = 5;
  EXPECT_EQ(bprintf_format(out, sizeof(out), "%d", 3, &arg, 1), 1);
  EXPECT_STREQ(out, "5");
}

}  // namespace
}  // namespace userbpf::helpers
