// userbpf_native_bench: native C++ baselines for the bench/progs programs:
// the same operations per run (same table sizes, key order and data), timed
// the way `userbpf bench` times programs (calibrated repeat, rounds, median).
// Prints one JSON object per line, named after the BPF program it matches.
#include <time.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#ifdef USERBPF_HAVE_ABSL
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#define HASH_MAP absl::flat_hash_map
#define HASH_MAP_NAME "absl::flat_hash_map"
#else
#include <unordered_map>
#define HASH_MAP std::unordered_map
#define HASH_MAP_NAME "std::unordered_map"
#endif

namespace {

constexpr double kTargetRoundNs = 20e6;
constexpr uint32_t kRounds = 5;
constexpr uint32_t kEntries = 1024;
constexpr uint32_t kOps = 1024;
constexpr uint32_t kBytes = 4096;
constexpr uint32_t kSieveN = 8192;

// Keeps a value (and memory it points to) alive in the compiler's eyes.
template <typename T>
inline void keep(T const& v) {
  asm volatile("" : : "r,m"(v) : "memory");
}

double now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// The bench programs' scattered key order: an odd multiplier permutes 0..1023.
inline uint32_t scatter(uint32_t i) {
  return (i * 0x9e3779b1u) & (kEntries - 1);
}

// Times `run` (one run = `ops` operations, returning the operations it
// completed) and prints a JSON line.
template <typename Fn>
void measure(const char* program, const char* baseline, uint64_t ops, Fn run) {
  uint64_t done = run();  // warm-up
  double t0 = now_ns();
  for (int i = 0; i < 16; i++) keep(run());
  double ns = (now_ns() - t0) / 16;
  uint32_t repeat = static_cast<uint32_t>(std::clamp(kTargetRoundNs / std::max(ns, 1.0), 1.0, 1e7));
  std::vector<double> rounds;
  for (uint32_t r = 0; r < kRounds; r++) {
    t0 = now_ns();
    for (uint32_t i = 0; i < repeat; i++) done = run();
    rounds.push_back((now_ns() - t0) / repeat);
  }
  std::sort(rounds.begin(), rounds.end());
  double median = rounds[rounds.size() / 2];
  std::printf(
      "{\"program\":\"%s\",\"engine\":\"native\",\"status\":\"ok\",\"baseline\":\"%s\","
      "\"repeat\":%u,\"rounds\":%u,\"ns_per_run\":%.1f,\"min\":%.1f,\"max\":%.1f,\"ops\":%llu,"
      "\"ns_per_op\":%.3f,\"check\":\"%s\"}\n",
      program, baseline, repeat, kRounds, median, rounds.front(), rounds.back(),
      static_cast<unsigned long long>(ops), median / static_cast<double>(ops),
      done == ops ? "ok" : "mismatch");
  std::fflush(stdout);
}

struct Key64 {
  std::array<uint32_t, 16> w;
  bool operator==(const Key64& o) const { return w == o.w; }
#ifdef USERBPF_HAVE_ABSL
  template <typename H>
  friend H AbslHashValue(H h, const Key64& k) {
    return H::combine_contiguous(std::move(h), k.w.data(), k.w.size());
  }
#endif
};

struct Key64Hash {
  size_t operator()(const Key64& k) const {
#ifdef USERBPF_HAVE_ABSL
    return absl::Hash<Key64>()(k);
#else
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the key's bytes
    for (uint32_t x : k.w) h = (h ^ x) * 0x100000001b3ull;
    return h;
#endif
  }
};

Key64 base_key() {
  Key64 k;
  for (uint32_t j = 0; j < 16; j++) k.w[j] = 0x01010101u * j;
  return k;
}

void bench_maps() {
  static uint64_t array[kEntries];
  measure("array_lookup", "uint64_t[1024]", kOps, [] {
    uint32_t hits = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      array[scatter(i)] += 1;
      hits++;
    }
    keep(array);
    return hits;
  });
  static uint64_t percpu[64];
  measure("percpu_array_inc", "uint64_t[64] (one CPU's copy)", kOps, [] {
    uint32_t done = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      keep(i);
      percpu[i & 63] += 1;
      done++;
    }
    keep(percpu);
    return done;
  });

  HASH_MAP<uint32_t, uint64_t> h;
  for (uint32_t i = 0; i < kEntries; i++) h[i] = i;
  auto lookup = [&h] {
    uint32_t hits = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      uint32_t key = scatter(i);
      keep(key);
      auto it = h.find(key);
      if (it != h.end()) {
        keep(it->second);
        hits++;
      }
    }
    return hits;
  };
  measure("hash_lookup", HASH_MAP_NAME "<u32,u64>", kOps, lookup);
  measure("percpu_hash_lookup", HASH_MAP_NAME "<u32,u64> (one CPU's copy)", kOps, lookup);
  auto update = [&h] {
    uint32_t done = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      uint32_t key = scatter(i);
      keep(key);
      h.insert_or_assign(key, uint64_t{i});
      done++;
    }
    return done;
  };
  measure("hash_update", HASH_MAP_NAME "<u32,u64>", kOps, update);
  measure("percpu_hash_update", HASH_MAP_NAME "<u32,u64> (one CPU's copy)", kOps, update);
  measure("hash_delete_insert", HASH_MAP_NAME "<u32,u64>", kOps, [&h] {
    uint32_t done = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      uint32_t key = scatter(i);
      keep(key);
      if (h.erase(key) == 1 && h.emplace(key, uint64_t{i}).second) done++;
    }
    return done;
  });

  // lru_hash_update: a new key into a full map, evicting the oldest (a
  // FIFO ring of the keys in the map: no recency tracking).
  HASH_MAP<uint32_t, uint64_t> lru;
  static uint32_t ring[kEntries];
  for (uint32_t i = 0; i < kEntries; i++) {
    lru[i] = i;
    ring[i] = i;
  }
  uint32_t next_key = kEntries;
  measure("lru_hash_update", HASH_MAP_NAME "<u32,u64> + FIFO eviction", kOps, [&lru, &next_key] {
    uint32_t done = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      uint32_t key = next_key++;
      uint32_t& oldest = ring[key & (kEntries - 1)];
      lru.erase(oldest);
      if (lru.emplace(key, uint64_t{i}).second) done++;
      oldest = key;
    }
    return done;
  });

  HASH_MAP<Key64, uint64_t, Key64Hash> h64;
  for (uint32_t i = 0; i < kEntries; i++) {
    Key64 k = base_key();
    k.w[0] = i;
    h64[k] = i;
  }
  measure("hash_lookup64", HASH_MAP_NAME "<64-byte key,u64>", kOps, [&h64] {
    Key64 k = base_key();
    uint32_t hits = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      k.w[0] = scatter(i);
      keep(k);
      if (h64.find(k) != h64.end()) hits++;
    }
    return hits;
  });
}

struct Node {
  uint64_t a, b;
};

void bench_alloc() {
  measure("obj_new_drop", "new/delete of 16 bytes (glibc malloc)", kOps, [] {
    uint32_t done = 0;
    for (uint32_t i = 0; i < kOps; i++) {
      Node* n = new Node{i, 0};
      keep(n);
      delete n;
      done++;
    }
    return done;
  });
}

void bench_cpu() {
  static uint32_t words[kBytes / 4];
  for (uint32_t i = 0; i < kBytes / 4; i++) words[i] = i * 0x9e3779b1u + 7;
  measure("checksum", "C++ loop (csum_partial style)", kBytes, [] {
    keep(words);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < kBytes / 4; i++) sum += words[i];
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum ? kBytes : 0u;
  });
  static uint8_t bytes[kBytes];
  for (uint32_t i = 0; i < kBytes; i++) bytes[i] = static_cast<uint8_t>(i * 31 + 7);
  measure("fnv1a", "C++ loop", kBytes, [] {
    keep(bytes);
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < kBytes; i++) h = (h ^ bytes[i]) * 0x100000001b3ull;
    return h ? kBytes : 0u;
  });
  static uint64_t copy_src[kBytes / 8], copy_dst[kBytes / 8];
  measure("memcopy", "C++ loop (8-byte words, same barrier)", kBytes, [] {
    copy_src[kBytes / 8 - 1] = 0x5eed;
    for (uint32_t i = 0; i < kBytes / 8; i++) {
      uint64_t v = copy_src[i];
      asm volatile("" : "+r"(v));  // the BPF program's barrier_var
      copy_dst[i] = v;
    }
    keep(copy_dst);
    return copy_dst[kBytes / 8 - 1] == 0x5eed ? kBytes : 0u;
  });
  static uint8_t composite[kSieveN];
  measure("sieve", "C++ loop", kSieveN, [] {
    std::memset(composite, 0, sizeof(composite));
    keep(composite);
    for (uint32_t p = 2; p * p < kSieveN; p++) {
      if (composite[p]) continue;
      for (uint32_t j = p * p; j < kSieveN; j += p) composite[j] = 1;
    }
    uint32_t primes = 0;
    for (uint32_t i = 2; i < kSieveN; i++) primes += !composite[i];
    return primes == 1028 ? kSieveN : 0u;
  });
  measure("alu_loop", "C++ loop", 4096, [] {
    uint64_t x = 0x9e3779b97f4a7c15ull ^ 64, acc = 0;
    keep(x);
    for (uint32_t i = 0; i < 4096; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      acc += x & 0xff;
    }
    return acc ? 4096u : 0u;
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(argc == 2 && std::strcmp(argv[1], "--help") == 0 ? stdout : stderr,
                 "usage: userbpf_native_bench\n"
                 "  Native C++ baselines of the bench/progs operations, one JSON line each.\n");
    return argc == 2 && std::strcmp(argv[1], "--help") == 0 ? 0 : 2;
  }
  bench_maps();
  bench_alloc();
  bench_cpu();
  return 0;
}
