// Internet checksum arithmetic exactly as the kernel computes it on x86-64
// (arch/x86/lib/csum-partial_64.c, include/net/checksum.h), so csum_diff and
// the csum_replace helpers return the kernel's bit patterns. Values are in
// the byte order of the data they cover (raw loads), as in the kernel:
// partial sums are 32-bit (__wsum), checksums 16-bit (__sum16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace userbpf::helpers::csum {

// csum_partial: the buffer as little-endian 64-bit words (a 1..7 byte tail
// zero-padded) added with end-around carry onto sum, folded to 32 bits like
// csum_finalize_sum: (t + ror64(t, 32)) >> 32.
inline uint32_t partial(const void* buf, size_t len, uint32_t sum) {
  const auto* p = static_cast<const uint8_t*>(buf);
  uint64_t acc = sum;
  auto add = [&acc](uint64_t w) {
    acc += w;
    acc += acc < w;  // cannot carry again: a + b - 2^64 <= 2^64 - 2
  };
  for (; len >= 8; len -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    add(w);
  }
  if (len) {
    uint64_t w = 0;
    std::memcpy(&w, p, len);
    add(w);
  }
  const uint64_t rotated = acc >> 32 | acc << 32;
  return static_cast<uint32_t>((acc + rotated) >> 32);
}

// csum_fold: 32-bit partial sum to the inverted 16-bit checksum.
inline uint16_t fold(uint32_t sum) {
  const uint32_t rotated = sum >> 16 | sum << 16;
  return static_cast<uint16_t>((~sum - rotated) >> 16);
}

inline uint32_t add(uint32_t a, uint32_t b) {
  uint32_t res = a + b;
  return res + (res < b);
}
inline uint32_t sub(uint32_t a, uint32_t b) {
  return add(a, ~b);
}

inline uint16_t add16(uint16_t a, uint16_t b) {
  auto res = static_cast<uint16_t>(a + b);
  return static_cast<uint16_t>(res + (res < b));
}
inline uint16_t sub16(uint16_t a, uint16_t b) {
  return add16(a, static_cast<uint16_t>(~b));
}

// csum_replace4 / csum_replace2 (RFC 1624) / csum_replace_by_diff on a
// checksum field *sum.
inline uint16_t replace4(uint16_t sum, uint32_t from, uint32_t to) {
  return fold(add(sub(~static_cast<uint32_t>(sum), from), to));
}
inline uint16_t replace2(uint16_t sum, uint16_t from, uint16_t to) {
  return static_cast<uint16_t>(~add16(sub16(static_cast<uint16_t>(~sum), from), to));
}
inline uint16_t replace_by_diff(uint16_t sum, uint32_t diff) {
  return fold(add(diff, ~static_cast<uint32_t>(sum)));
}

}  // namespace userbpf::helpers::csum
