// The seeded hash of hash-map keys.
//
// Design: keys are read as zero-padded 8-byte words, two at a time, and each
// pair is folded into the state with one 64x64->128-bit multiply whose halves
// are xored together (a "multiply-fold", the mixing step of the wyhash
// family; written here from that idea, no code taken). Both inputs of every
// multiply carry secret bits derived from the map's seed, so an attacker who
// does not know the seed cannot force the state to zero and build colliding
// keys (the kernel uses jhash with a random seed for the same reason).
// BPF_F_ZERO_SEED gives seed 0: deterministic, for tests and debugging.
//
// Cost: a 4-byte key is two multiplies and a handful of ALU operations
// (jhash is ~20 dependent ALU operations). The multiply-fold also spreads
// sequential integer keys evenly over the low bits that select a bucket.
// Contexts: any; pure function.
#pragma once

#include <cstddef>
#include <cstdint>

#include "maps/map_internal.h"

namespace userbpf::maps {

struct HashSecret {
  uint64_t a = 0;
  uint64_t b = 0;
};

inline uint64_t fold_mul(uint64_t x, uint64_t y) {
  unsigned __int128 r = static_cast<unsigned __int128>(x) * y;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

// splitmix64 finalizer: turns any seed (including 0) into well-mixed secrets.
inline uint64_t mix_seed(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline HashSecret make_hash_secret(uint64_t seed) {
  HashSecret s;
  s.a = mix_seed(seed);
  s.b = mix_seed(s.a ^ 0x2545f4914f6cdd1dull);
  return s;
}

// Always inlined so that callers passing a constant size (the hash map's
// 4- and 8-byte key paths) get the word loads folded: one load, two
// multiplies. The result depends only on (key bytes, size, secret).
[[gnu::always_inline]] inline uint32_t hash_key(const void* key, uint32_t size,
                                                const HashSecret& s) {
  constexpr uint64_t kC1 = 0xa0761d6478bd642full;
  constexpr uint64_t kC2 = 0xe7037ed1a0b428dbull;
  uint64_t h = s.b ^ size;
  size_t words = (size + 7) / 8;
  size_t i = 0;
  for (; i + 2 <= words; i += 2)
    h = fold_mul(load_padded_word(key, size, i) ^ s.a, load_padded_word(key, size, i + 1) ^ h);
  if (i < words) h = fold_mul(load_padded_word(key, size, i) ^ s.a, h ^ kC1);
  h = fold_mul(h ^ kC2, s.a ^ kC1);
  return static_cast<uint32_t>(h ^ (h >> 32));
}

}  // namespace userbpf::maps
