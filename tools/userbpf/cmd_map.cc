// `userbpf map show|dump FILE`: an object's maps after load, their memory use
// and contents (global data initial values included). Per-CPU maps show each
// CPU's copy and the sum over CPUs.
#include <cinttypes>
#include <cstring>

#include "cli.h"

namespace userbpf::cli {
namespace {

// The sum over CPUs of per-CPU values: one number for 1/2/4/8-byte values
// (the full sum, not wrapped at the value's width), one per 8-byte word for
// other multiples of 8 (structs of u64 counters); nothing for other sizes.
struct PercpuSum {
  std::vector<uint64_t> words;
  bool scalar = false;
};

PercpuSum sum_copies(const std::vector<uint8_t>& buf, uint32_t value_size, uint32_t stride,
                     uint32_t ncpus) {
  PercpuSum s;
  const bool scalar = value_size == 1 || value_size == 2 || value_size == 4 || value_size == 8;
  if (!scalar && value_size % 8) return s;
  s.scalar = scalar;
  s.words.assign(scalar ? 1 : value_size / 8, 0);
  for (uint32_t c = 0; c < ncpus; c++) {
    const uint8_t* v = buf.data() + size_t{stride} * c;
    for (size_t w = 0; w < s.words.size(); w++) {
      uint64_t x = 0;
      std::memcpy(&x, v + w * 8, scalar ? value_size : 8);
      s.words[w] += x;
    }
  }
  return s;
}

// A number for 1/2/4/8-byte little-endian values.
bool copy_number(const uint8_t* v, uint32_t size, uint64_t& n) {
  if (size != 1 && size != 2 && size != 4 && size != 8) return false;
  n = 0;
  std::memcpy(&n, v, size);
  return true;
}

// Every element of a per-CPU map: the key, each CPU's copy and the sum, as
// text or a JSON array.
void print_percpu_map(FILE* out, Map& map, bool json) {
  const uint32_t ncpus = map.num_cpus(), size = map.value_size(), stride = (size + 7) & ~7u;
  std::vector<uint8_t> key(map.key_size()), next(map.key_size()), value(map.value_buffer_size());
  const void* cur = nullptr;
  size_t count = 0;
  if (json) std::fprintf(out, "[");
  while (map.get_next_key(cur, next.data()).ok()) {
    key = next;
    cur = key.data();
    if (!map.lookup(key.data(), value.data()).ok()) continue;  // deleted meanwhile
    uint64_t kn = 0;
    const bool knum = copy_number(key.data(), map.key_size(), kn);
    const PercpuSum sum = sum_copies(value, size, stride, ncpus);
    if (json) {
      std::fprintf(out, "%s{\"key\":\"%s\"", count ? "," : "",
                   to_hex(key.data(), key.size(), false).c_str());
      if (knum) std::fprintf(out, ",\"key_u%zu\":%" PRIu64, key.size() * 8, kn);
      std::fprintf(out, ",\"values\":[");
      for (uint32_t c = 0; c < ncpus; c++) {
        const uint8_t* v = value.data() + size_t{stride} * c;
        uint64_t vn = 0;
        std::fprintf(out, "%s{\"cpu\":%u,\"value\":\"%s\"", c ? "," : "", c,
                     to_hex(v, size, false).c_str());
        if (copy_number(v, size, vn)) std::fprintf(out, ",\"value_u%u\":%" PRIu64, size * 8, vn);
        std::fprintf(out, "}");
      }
      std::fprintf(out, "]");
      if (sum.scalar) {
        std::fprintf(out, ",\"sum\":%" PRIu64, sum.words[0]);
      } else if (!sum.words.empty()) {
        std::fprintf(out, ",\"sum_u64\":[");
        for (size_t w = 0; w < sum.words.size(); w++)
          std::fprintf(out, "%s%" PRIu64, w ? "," : "", sum.words[w]);
        std::fprintf(out, "]");
      }
      std::fprintf(out, "}");
    } else {
      std::fprintf(out, "  key: %s", to_hex(key.data(), key.size()).c_str());
      if (knum) std::fprintf(out, " (%" PRIu64 ")", kn);
      std::fprintf(out, "\n");
      for (uint32_t c = 0; c < ncpus; c++) {
        const uint8_t* v = value.data() + size_t{stride} * c;
        uint64_t vn = 0;
        std::fprintf(out, "    cpu %u: %s", c, to_hex(v, size).c_str());
        if (copy_number(v, size, vn)) std::fprintf(out, " (%" PRIu64 ")", vn);
        std::fprintf(out, "\n");
      }
      if (sum.scalar) {
        std::fprintf(out, "    sum: %" PRIu64 "\n", sum.words[0]);
      } else if (!sum.words.empty()) {
        std::fprintf(out, "    sum (u64 words):");
        for (uint64_t w : sum.words) std::fprintf(out, " %" PRIu64, w);
        std::fprintf(out, "\n");
      }
    }
    count++;
  }
  if (json)
    std::fprintf(out, "]");
  else if (count == 0)
    std::fprintf(out, "  (empty)\n");
}

void print_any_map(FILE* out, Map& map, bool json) {
  if (map.is_percpu())
    print_percpu_map(out, map, json);
  else
    print_map(out, map, json);
}

}  // namespace

int cmd_map(const Args& args) {
  if (args.empty() || args[0] == "--help") {
    std::printf("usage: userbpf map show FILE\n       userbpf map dump FILE [-m NAME] [--json]\n");
    return args.empty() ? 2 : 0;
  }
  const std::string& verb = args[0];
  std::string file, only;
  bool json = false;
  for (size_t i = 1; i < args.size(); i++) {
    if ((args[i] == "-m" || args[i] == "--map") && i + 1 < args.size())
      only = args[++i];
    else if (args[i] == "--json")
      json = true;
    else if (file.empty() && args[i][0] != '-')
      file = args[i];
    else
      return fail_msg("map %s: unexpected argument '%s'", verb.c_str(), args[i].c_str());
  }
  if (file.empty()) return fail_msg("map %s: missing FILE", verb.c_str());
  if (verb != "show" && verb != "dump") return fail_msg("map: unknown verb '%s'", verb.c_str());

  auto rt = Runtime::create();
  if (!rt.ok()) return fail(rt.error());
  auto obj = open_and_load(**rt, file);
  if (!obj) return 1;

  bool found = false;
  if (json) std::printf("[");
  for (auto& m : obj->maps()) {
    if (!only.empty() && m.name() != only) continue;
    if (json) {
      std::printf(
          "%s{\"name\":\"%s\",\"type\":\"%s\",\"key_size\":%u,\"value_size\":%u,"
          "\"max_entries\":%u,\"memory_bytes\":%" PRIu64 ",\"memory_limit\":%" PRIu64,
          found ? "," : "", json_escape(m.name()).c_str(), m.type_name(), m.key_size(),
          m.value_size(), m.max_entries(), m.memory_used(), m.memory_limit());
      if (m.is_percpu()) std::printf(",\"num_cpus\":%u", m.num_cpus());
      if (verb == "dump") {
        std::printf(",\"elements\":");
        print_any_map(stdout, m, true);
      }
      std::printf("}");
    } else if (verb == "show") {
      std::printf("%-24s type %-16s key %-4u value %-6u max_entries %-8u memory %" PRIu64 " bytes",
                  m.name().c_str(), m.type_name(), m.key_size(), m.value_size(), m.max_entries(),
                  m.memory_used());
      if (m.memory_limit())
        std::printf(" limit %" PRIu64 " bytes\n", m.memory_limit());
      else
        std::printf(" limit none\n");
    } else {
      if (m.is_percpu())
        std::printf("map %s (%s, %u CPUs):\n", m.name().c_str(), m.type_name(), m.num_cpus());
      else
        std::printf("map %s (%s):\n", m.name().c_str(), m.type_name());
      print_any_map(stdout, m, false);
    }
    found = true;
  }
  if (json) std::printf("]\n");
  if (!found && !only.empty()) return fail_msg("%s: no map named %s", file.c_str(), only.c_str());
  return 0;
}

}  // namespace userbpf::cli
