// Small bit and alignment utilities shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace userbpf {

constexpr uint64_t round_up(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}
constexpr bool is_power_of_two(uint64_t v) {
  return v && !(v & (v - 1));
}
constexpr uint64_t roundup_pow_of_two(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace userbpf
