// Packet helpers: xdp_adjust_head/meta/tail bounds and ctx updates,
// skb_load_bytes/store_bytes, and the checksum helpers against independent
// RFC 1071 computations.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sys/mman.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "helper_test_util.h"
#include "helpers/helper_fns.h"

namespace userbpf::helpers {
namespace {

using testing::s;
using testing::TestRun;
using testing::u;

uint32_t addr32(const void* p) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
}

// A packet laid out like the runtime's: a buffer below 4 GiB, `headroom`
// bytes before the data, `tailroom` after, with an xdp_md or __sk_buff ctx.
class Packet {
 public:
  Packet(size_t len, size_t headroom = kXdpPacketHeadroom, size_t tailroom = 256)
      : headroom_(headroom), len_(len), size_(headroom + len + tailroom) {
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
                   -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    buf_ = static_cast<uint8_t*>(p);
    std::memset(buf_, 0xee, size_);
    for (size_t i = 0; i < len; i++) data()[i] = static_cast<uint8_t>(i);
  }
  ~Packet() { munmap(buf_, size_); }

  uint8_t* data() const { return buf_ + headroom_; }
  uint8_t* start() const { return buf_; }
  uint8_t* end() const { return buf_ + size_; }

  void attach_xdp(vm::RunContext& rc) {
    attach(rc);
    md.data = addr32(data());
    md.data_meta = addr32(data());
    md.data_end = addr32(data() + len_);
    rc.ctx = &md;
    rc.ctx_size = sizeof(md);
  }
  void attach_skb(vm::RunContext& rc) {
    attach(rc);
    skb.len = static_cast<uint32_t>(len_);
    skb.hash = 0x1234;
    skb.data = addr32(data());
    skb.data_end = addr32(data() + len_);
    rc.ctx = &skb;
    rc.ctx_size = sizeof(skb);
  }

  xdp_md md{};
  __sk_buff skb{};

 private:
  void attach(vm::RunContext& rc) {
    rc.pkt_buf_start = start();
    rc.pkt_buf_end = end();
    rc.data_meta = rc.data = data();
    rc.data_end = data() + len_;
  }
  size_t headroom_, len_, size_;
  uint8_t* buf_;
};

// The xdp_md fields mirror the run's packet bounds.
void expect_md_synced(const Packet& p, const vm::RunContext& rc) {
  EXPECT_EQ(p.md.data, addr32(rc.data));
  EXPECT_EQ(p.md.data_meta, addr32(rc.data_meta));
  EXPECT_EQ(p.md.data_end, addr32(rc.data_end));
}

TEST(XdpAdjustHead, MovesDataWithinTheHeadroom) {
  TestRun run;
  Packet p(64);
  p.attach_xdp(run.rc);
  EXPECT_EQ(bpf_xdp_adjust_head(u(&p.md), static_cast<uint64_t>(-16), 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data, p.data() - 16);
  EXPECT_EQ(run.rc.data_meta, run.rc.data);
  expect_md_synced(p, run.rc);
  EXPECT_EQ(bpf_xdp_adjust_head(u(&p.md), 16, 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data, p.data());
  EXPECT_EQ(run.rc.data[0], 0);  // the packet's first byte again
}

TEST(XdpAdjustHead, Bounds) {
  TestRun run;
  Packet p(64);
  p.attach_xdp(run.rc);
  const int64_t room = static_cast<int64_t>(kXdpPacketHeadroom - kXdpFrameSize);  // 216
  EXPECT_EQ(s(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-(room + 1)), 0, 0, 0)), -EINVAL);
  EXPECT_EQ(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-room), 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data, p.start() + kXdpFrameSize);
  EXPECT_EQ(bpf_xdp_adjust_head(0, static_cast<uint64_t>(room), 0, 0, 0), 0u);
  // Forward: at least an Ethernet header must remain.
  EXPECT_EQ(s(bpf_xdp_adjust_head(0, 64 - kEthHlen + 1, 0, 0, 0)), -EINVAL);
  EXPECT_EQ(bpf_xdp_adjust_head(0, 64 - kEthHlen, 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data_end - run.rc.data, static_cast<ptrdiff_t>(kEthHlen));
  expect_md_synced(p, run.rc);
  // The offset is an int: the upper half of r2 is ignored.
  EXPECT_EQ(bpf_xdp_adjust_head(0, 0xffffffff'00000000ull | static_cast<uint32_t>(-2), 0, 0, 0),
            0u);
  EXPECT_EQ(run.rc.data_end - run.rc.data, static_cast<ptrdiff_t>(kEthHlen + 2));
}

TEST(XdpAdjustHead, CarriesMetadataAlong) {
  TestRun run;
  Packet p(64);
  p.attach_xdp(run.rc);
  ASSERT_EQ(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-8), 0, 0, 0), 0u);
  std::memcpy(run.rc.data_meta, "METADATA", 8);
  ASSERT_EQ(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-20), 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data - run.rc.data_meta, 8);
  EXPECT_EQ(std::memcmp(run.rc.data_meta, "METADATA", 8), 0);
  expect_md_synced(p, run.rc);
  // The metadata counts against the headroom.
  const int64_t left = run.rc.data - (p.start() + kXdpFrameSize) - 8;
  EXPECT_EQ(s(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-(left + 1)), 0, 0, 0)), -EINVAL);
  EXPECT_EQ(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-left), 0, 0, 0), 0u);
}

TEST(XdpAdjustMeta, AlignmentAndBounds) {
  TestRun run;
  Packet p(64, 512);  // room for more than the 255-byte metadata limit
  p.attach_xdp(run.rc);
  EXPECT_EQ(s(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-3), 0, 0, 0)), -EACCES);
  EXPECT_EQ(s(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-256), 0, 0, 0)), -EACCES);
  EXPECT_EQ(s(bpf_xdp_adjust_meta(0, 4, 0, 0, 0)), -EINVAL);  // past data
  EXPECT_EQ(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-252), 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data - run.rc.data_meta, 252);
  expect_md_synced(p, run.rc);
  EXPECT_EQ(bpf_xdp_adjust_meta(0, 252, 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data_meta, run.rc.data);

  TestRun run2;
  Packet q(64);
  q.attach_xdp(run2.rc);
  // Below the xdp_frame the kernel keeps at the buffer start.
  const int64_t room = static_cast<int64_t>(kXdpPacketHeadroom - kXdpFrameSize);
  EXPECT_EQ(s(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-(room + 4)), 0, 0, 0)), -EINVAL);
  EXPECT_EQ(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-room), 0, 0, 0), 0u);
}

TEST(XdpAdjustTail, GrowsWithZeroesAndShrinks) {
  TestRun run;
  Packet p(64);
  p.attach_xdp(run.rc);
  EXPECT_EQ(bpf_xdp_adjust_tail(0, 100, 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data_end - run.rc.data, 164);
  for (int i = 64; i < 164; i++) EXPECT_EQ(run.rc.data[i], 0) << i;  // was 0xee
  expect_md_synced(p, run.rc);
  EXPECT_EQ(s(bpf_xdp_adjust_tail(0, 257 - 100, 0, 0, 0)), -EINVAL);  // past the buffer
  EXPECT_EQ(bpf_xdp_adjust_tail(0, 256 - 100, 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data_end, p.end());
  EXPECT_EQ(s(bpf_xdp_adjust_tail(0, static_cast<uint64_t>(-(320 - 13)), 0, 0, 0)), -EINVAL);
  EXPECT_EQ(bpf_xdp_adjust_tail(0, static_cast<uint64_t>(-(320 - 14)), 0, 0, 0), 0u);
  EXPECT_EQ(run.rc.data_end - run.rc.data, 14);
  EXPECT_EQ(run.rc.data[13], 13);  // packet bytes untouched by shrinking
  expect_md_synced(p, run.rc);
}

TEST(XdpAdjust, OnlyForXdpRuns) {
  EXPECT_EQ(s(bpf_xdp_adjust_head(0, 0, 0, 0, 0)), -EOPNOTSUPP);  // no run
  TestRun run;
  EXPECT_EQ(s(bpf_xdp_adjust_tail(0, 0, 0, 0, 0)), -EOPNOTSUPP);  // no packet
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t* data = run.rc.data;
  EXPECT_EQ(s(bpf_xdp_adjust_head(0, static_cast<uint64_t>(-4), 0, 0, 0)), -EOPNOTSUPP);
  EXPECT_EQ(s(bpf_xdp_adjust_meta(0, static_cast<uint64_t>(-4), 0, 0, 0)), -EOPNOTSUPP);
  EXPECT_EQ(run.rc.data, data);
  EXPECT_EQ(p.skb.len, 64u);
}

// --- skb bytes -----------------------------------------------------------------

TEST(SkbBytes, LoadWithinThePacket) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t out[8];
  EXPECT_EQ(bpf_skb_load_bytes(u(&p.skb), 56, u(out), 8, 0), 0u);
  for (int i = 0; i < 8; i++) EXPECT_EQ(out[i], 56 + i);
  std::memset(out, 0x5a, sizeof(out));
  EXPECT_EQ(s(bpf_skb_load_bytes(u(&p.skb), 57, u(out), 8, 0)), -EFAULT);
  for (uint8_t b : out) EXPECT_EQ(b, 0);
  std::memset(out, 0x5a, sizeof(out));
  EXPECT_EQ(s(bpf_skb_load_bytes(u(&p.skb), 0x80000000u, u(out), 1, 0)), -EFAULT);
  EXPECT_EQ(out[0], 0);
  // The offset is a u32: 2^32 + 4 is offset 4.
  EXPECT_EQ(bpf_skb_load_bytes(u(&p.skb), (1ull << 32) + 4, u(out), 1, 0), 0u);
  EXPECT_EQ(out[0], 4);
}

TEST(SkbBytes, StoreFlagsAndBounds) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  const uint8_t in[4] = {0xa, 0xb, 0xc, 0xd};
  EXPECT_EQ(bpf_skb_store_bytes(u(&p.skb), 60, u(in), 4, BPF_F_RECOMPUTE_CSUM), 0u);
  EXPECT_EQ(std::memcmp(p.data() + 60, in, 4), 0);
  EXPECT_EQ(p.skb.hash, 0x1234u);
  EXPECT_EQ(bpf_skb_store_bytes(u(&p.skb), 0, u(in), 4, BPF_F_INVALIDATE_HASH), 0u);
  EXPECT_EQ(p.skb.hash, 0u);
  EXPECT_EQ(s(bpf_skb_store_bytes(u(&p.skb), 0, u(in), 4, 4)), -EINVAL);
  EXPECT_EQ(s(bpf_skb_store_bytes(u(&p.skb), 61, u(in), 4, 0)), -EFAULT);
  EXPECT_EQ(s(bpf_skb_store_bytes(u(&p.skb), 0x80000000u, u(in), 1, 0)), -EFAULT);
  EXPECT_EQ(p.data()[61], 0xb);  // nothing written by the failures
  // Overlapping source inside the packet.
  EXPECT_EQ(bpf_skb_store_bytes(u(&p.skb), 10, u(p.data() + 8), 8, 0), 0u);
  for (int i = 0; i < 8; i++) EXPECT_EQ(p.data()[10 + i], 8 + i);
}

// --- checksums -------------------------------------------------------------------

// RFC 1071 over 16-bit big-endian words, written independently of csum.h.
uint16_t rfc1071_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
uint64_t rfc1071_add(const uint8_t* p, size_t len, uint64_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint64_t>(p[i]) << 8 | p[i + 1];
  if (len & 1) sum += static_cast<uint64_t>(p[len - 1]) << 8;
  return sum;
}
// A 32-bit __wsum (in memory byte order) as the 16-bit sum it stands for.
uint16_t wsum_to_be16_sum(uint32_t wsum) {
  uint8_t bytes[4];
  std::memcpy(bytes, &wsum, 4);
  return rfc1071_fold(rfc1071_add(bytes, 4));
}

TEST(CsumDiff, ExactKernelValues) {
  const uint32_t word = 0x12345678;
  EXPECT_EQ(bpf_csum_diff(0, 0, u(&word), 4, 0), 0x12345678u);
  EXPECT_EQ(bpf_csum_diff(0, 0, 0, 0, 0xabcd), 0xabcdu);
  // One word removed again: ~w + w is all ones.
  EXPECT_EQ(bpf_csum_diff(u(&word), 4, u(&word), 4, 0), 0xffffffffu);
  const uint32_t words[2] = {0xffffffff, 0x00000001};  // end-around carry
  EXPECT_EQ(bpf_csum_diff(0, 0, u(words), 8, 0), 0x00000001u);
}

TEST(CsumDiff, MatchesRfc1071) {
  uint8_t from[40], to[24];
  for (size_t i = 0; i < sizeof(from); i++) from[i] = static_cast<uint8_t>(i * 37 + 11);
  for (size_t i = 0; i < sizeof(to); i++) to[i] = static_cast<uint8_t>(i * 91 + 5);
  const uint32_t seed = 0x0001f00d;
  uint32_t got = static_cast<uint32_t>(bpf_csum_diff(u(from), 40, u(to), 24, seed));
  uint8_t inverted[40];
  for (size_t i = 0; i < 40; i++) inverted[i] = static_cast<uint8_t>(~from[i]);
  uint64_t ref = rfc1071_add(inverted, 40) + rfc1071_add(to, 24) + wsum_to_be16_sum(seed);
  EXPECT_EQ(wsum_to_be16_sum(got), rfc1071_fold(ref));
}

TEST(CsumDiff, SizeRules) {
  uint8_t buf[516] = {};
  EXPECT_EQ(s(bpf_csum_diff(u(buf), 3, 0, 0, 0)), -EINVAL);
  EXPECT_EQ(s(bpf_csum_diff(0, 0, u(buf), 6, 0)), -EINVAL);
  EXPECT_EQ(s(bpf_csum_diff(u(buf), 256, u(buf), 260, 0)), -EINVAL);  // > 512 bytes
  EXPECT_EQ(bpf_csum_diff(u(buf), 256, u(buf), 256, 0), 0xffffffffu);
  // Sizes are u32: the upper half of r2 is ignored.
  EXPECT_EQ(bpf_csum_diff(u(buf), (1ull << 32) | 4, 0, 0, 0), 0xffffffffu);
}

// A 20-byte IPv4 header with a correct checksum at offset 10 (bytes 24..43
// of the packet, after a 14-byte Ethernet header and 10 bytes of padding).
constexpr size_t kIpOff = 24;
void write_ipv4(uint8_t* ip) {
  const uint8_t hdr[20] = {0x45, 0, 0,   60,  0x1c, 0x46, 0x40, 0, 64, 6,
                           0,    0, 192, 168, 0,    1,    10,   0, 0,  99};
  std::memcpy(ip, hdr, 20);
  uint16_t c = static_cast<uint16_t>(~rfc1071_fold(rfc1071_add(ip, 20)));
  ip[10] = static_cast<uint8_t>(c >> 8);
  ip[11] = static_cast<uint8_t>(c);
}
bool ipv4_checksum_ok(const uint8_t* ip) {
  return rfc1071_fold(rfc1071_add(ip, 20)) == 0xffff;
}

TEST(CsumReplace, L3FourBytesAfterRewritingTheAddress) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t* ip = p.data() + kIpOff;
  write_ipv4(ip);
  ASSERT_TRUE(ipv4_checksum_ok(ip));
  uint32_t old_addr, new_addr = htonl(0xc0a80a0a);
  std::memcpy(&old_addr, ip + 16, 4);
  ASSERT_EQ(bpf_skb_store_bytes(u(&p.skb), kIpOff + 16, u(&new_addr), 4, 0), 0u);
  EXPECT_FALSE(ipv4_checksum_ok(ip));
  EXPECT_EQ(bpf_l3_csum_replace(u(&p.skb), kIpOff + 10, old_addr, new_addr, 4), 0u);
  EXPECT_TRUE(ipv4_checksum_ok(ip));
}

TEST(CsumReplace, L3TwoBytesAndByDiff) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t* ip = p.data() + kIpOff;
  write_ipv4(ip);
  uint16_t old_ttl_proto, new_ttl_proto = htons(0x3f06);  // TTL 64 -> 63
  std::memcpy(&old_ttl_proto, ip + 8, 2);
  std::memcpy(ip + 8, &new_ttl_proto, 2);
  EXPECT_EQ(bpf_l3_csum_replace(u(&p.skb), kIpOff + 10, old_ttl_proto, new_ttl_proto, 2), 0u);
  EXPECT_TRUE(ipv4_checksum_ok(ip));

  // The csum_diff + replace-by-diff pattern for a 4-byte rewrite.
  uint32_t old_addr, new_addr = htonl(0x08080808);
  std::memcpy(&old_addr, ip + 12, 4);
  std::memcpy(ip + 12, &new_addr, 4);
  uint64_t diff = bpf_csum_diff(u(&old_addr), 4, u(&new_addr), 4, 0);
  EXPECT_EQ(bpf_l3_csum_replace(u(&p.skb), kIpOff + 10, 0, diff, 0), 0u);
  EXPECT_TRUE(ipv4_checksum_ok(ip));
}

TEST(CsumReplace, L3Errors) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 10, 0, 0, 0x10)), -EINVAL);  // flag outside the mask
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 10, 0, 0, 3)), -EINVAL);     // size 3
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 10, 1, 0, 0)), -EINVAL);     // by-diff needs from == 0
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 11, 0, 0, 2)), -EFAULT);     // odd offset
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 0x10000, 0, 0, 2)), -EFAULT);
  EXPECT_EQ(s(bpf_l3_csum_replace(0, 64, 0, 0, 2)), -EFAULT);  // past the packet
  EXPECT_EQ(bpf_l3_csum_replace(0, 62, 0, 0, 2), 0u);
}

TEST(CsumReplace, L4MangledZero) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t* field = p.data() + 40;
  // A zero UDP checksum ("none") stays zero under MARK_MANGLED_0 ...
  std::memset(field, 0, 2);
  EXPECT_EQ(bpf_l4_csum_replace(0, 40, 1, 2, 4 | BPF_F_MARK_MANGLED_0), 0u);
  EXPECT_EQ(field[0] | field[1], 0);
  // ... unless enforced.
  EXPECT_EQ(bpf_l4_csum_replace(0, 40, 1, 2, 4 | BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE), 0u);
  EXPECT_NE(field[0] | field[1], 0);
  // A result of zero becomes CSUM_MANGLED_0 (0xffff) with the flag ...
  std::memset(field, 0xff, 2);
  EXPECT_EQ(bpf_l4_csum_replace(0, 40, 0, 0, 4 | BPF_F_MARK_MANGLED_0), 0u);
  EXPECT_EQ(field[0] & field[1], 0xff);
  // ... and stays zero without it.
  EXPECT_EQ(bpf_l4_csum_replace(0, 40, 0, 0, 4), 0u);
  EXPECT_EQ(field[0] | field[1], 0);
}

TEST(CsumReplace, L4UpdatesLikeL3AndChecksFlags) {
  TestRun run;
  Packet p(64);
  p.attach_skb(run.rc);
  uint8_t* ip = p.data() + kIpOff;
  write_ipv4(ip);
  uint32_t old_addr, new_addr = htonl(0x01020304);
  std::memcpy(&old_addr, ip + 16, 4);
  std::memcpy(ip + 16, &new_addr, 4);
  EXPECT_EQ(bpf_l4_csum_replace(0, kIpOff + 10, old_addr, new_addr, 4 | BPF_F_PSEUDO_HDR), 0u);
  EXPECT_TRUE(ipv4_checksum_ok(ip));
  EXPECT_EQ(s(bpf_l4_csum_replace(0, 40, 0, 0, 1ull << 8)), -EINVAL);
  EXPECT_EQ(s(bpf_l4_csum_replace(0, 41, 0, 0, 2)), -EFAULT);
  EXPECT_EQ(s(bpf_l4_csum_replace(0, 40, 5, 0, 0)), -EINVAL);
  EXPECT_EQ(s(bpf_l4_csum_replace(0, 40, 0, 0, 8)), -EINVAL);
}

}  // namespace
}  // namespace userbpf::helpers
