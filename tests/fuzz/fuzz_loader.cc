// libFuzzer target: open_object() and load_object() on arbitrary bytes. Any
// input must give either a spec/loaded object or an Error with a positive
// errno and a message; crashes, sanitizer reports and silent failures are bugs.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include "loader/object.h"

namespace {

// Map types whose memory does not scale with max_entries * (key + value).
constexpr uint32_t kRingbuf = 27, kUserRingbuf = 31, kArena = 33;
constexpr uint32_t kPercpuHash = 5, kPercpuArray = 6, kLruPercpuHash = 10;
constexpr uint64_t kMaxMapBytes = 8u << 20;

void check_error(const userbpf::Error& e) {
  if (e.code <= 0 || e.message.empty()) std::abort();
}

// Loading creates the maps; inputs may ask for gigabytes, which is not a bug
// to report here, so such objects are only opened.
bool small_enough(const userbpf::loader::ObjectSpec& spec) {
  static const uint64_t cpus = std::max(1u, std::thread::hardware_concurrency());
  for (const auto& m : spec.maps) {
    const auto& a = m.attr;
    uint64_t per = uint64_t{a.key_size} + a.value_size + 64;
    if (a.type == kPercpuHash || a.type == kPercpuArray || a.type == kLruPercpuHash) per *= cpus;
    uint64_t bytes = per * a.max_entries;
    if (a.type == kRingbuf || a.type == kUserRingbuf) bytes = a.max_entries;
    if (a.type == kArena) bytes = uint64_t{a.max_entries} * 4096;
    if (bytes > kMaxMapBytes) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto spec = userbpf::loader::open_object(data, size, "fuzz.bpf.o");
  if (!spec.ok()) {
    check_error(spec.error());
    return 0;
  }
  if (!small_enough(*spec)) return 0;
  for (auto& m : spec->maps) m.attr.memory_limit = kMaxMapBytes;
  auto obj = userbpf::loader::load_object(*spec);
  if (!obj.ok()) check_error(obj.error());
  return 0;
}
