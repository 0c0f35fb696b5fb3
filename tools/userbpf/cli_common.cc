// Shared CLI helpers: errors, hex, files, loading, map printing.
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "cli.h"

namespace userbpf::cli {

int fail(const Error& e) {
  std::fprintf(stderr, "userbpf: %s\n", e.message.c_str());
  return 1;
}

int fail_msg(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("userbpf: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  return 1;
}

bool parse_hex(const std::string& text, std::vector<uint8_t>& out) {
  out.clear();
  int hi = -1;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (c == '0' && i + 1 < text.size() && (text[i + 1] == 'x' || text[i + 1] == 'X') && hi < 0) {
      i++;
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c)) || c == ',' || c == ':') {
      if (hi >= 0) return false;  // odd digit count inside a byte
      continue;
    }
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else
      return false;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  return hi < 0;
}

std::string to_hex(const uint8_t* data, size_t len, bool spaced) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < len; i++) {
    if (spaced && i) s += ' ';
    s += kDigits[data[i] >> 4];
    s += kDigits[data[i] & 15];
  }
  return s;
}

bool read_file(const std::string& path, std::vector<uint8_t>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return !f.bad();
}

bool parse_u64(const std::string& text, uint64_t& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(text.c_str(), &end, 0);
  return errno == 0 && end && *end == '\0' && text[0] != '-';
}

std::unique_ptr<Object> open_and_load(Runtime& rt, const std::string& path) {
  auto obj = Object::open(rt, path);
  if (!obj.ok()) {
    fail(obj.error());
    return nullptr;
  }
  Status st = obj.value()->load();
  if (!st.ok()) {
    fail(st.error());
    return nullptr;
  }
  return std::move(obj.value());
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o;
}

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

// A number for 1/2/4/8-byte little-endian values, to make counters readable.
bool copy_number(const uint8_t* v, size_t size, uint64_t& n) {
  if (size != 1 && size != 2 && size != 4 && size != 8) return false;
  n = 0;
  std::memcpy(&n, v, size);
  return true;
}
bool as_number(const std::vector<uint8_t>& v, uint64_t& n) {
  return copy_number(v.data(), v.size(), n);
}

}  // namespace

void print_map(FILE* out, Map& map, bool json) {
  std::vector<uint8_t> key(map.key_size()), next(map.key_size()), value(map.value_buffer_size());
  bool first = true;
  const void* cur = nullptr;
  size_t count = 0;
  if (json) std::fprintf(out, "[");
  while (map.key_size() > 0 && map.get_next_key(cur, next.data()).ok()) {
    key = next;
    cur = key.data();
    if (!map.lookup(key.data(), value.data()).ok()) continue;  // deleted meanwhile
    count++;
    uint64_t kn = 0, vn = 0;
    bool knum = as_number(key, kn), vnum = as_number(value, vn);
    if (json) {
      std::fprintf(out, "%s{\"key\":\"%s\",\"value\":\"%s\"", first ? "" : ",",
                   to_hex(key.data(), key.size(), false).c_str(),
                   to_hex(value.data(), value.size(), false).c_str());
      if (knum) std::fprintf(out, ",\"key_u%zu\":%" PRIu64, key.size() * 8, kn);
      if (vnum) std::fprintf(out, ",\"value_u%zu\":%" PRIu64, value.size() * 8, vn);
      std::fprintf(out, "}");
    } else {
      std::fprintf(out, "  key: %s", to_hex(key.data(), key.size()).c_str());
      if (knum) std::fprintf(out, " (%" PRIu64 ")", kn);
      std::fprintf(out, "  value: %s", to_hex(value.data(), value.size()).c_str());
      if (vnum) std::fprintf(out, " (%" PRIu64 ")", vn);
      std::fprintf(out, "\n");
    }
    first = false;
  }
  if (json)
    std::fprintf(out, "]");
  else if (count == 0)
    std::fprintf(out, "  (empty)\n");
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

}  // namespace userbpf::cli
