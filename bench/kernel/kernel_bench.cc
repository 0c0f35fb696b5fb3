// userbpf_kernel_bench: runs benchmark objects (bench/progs) in the running
// Linux kernel with BPF_PROG_TEST_RUN's repeat, measured the way `userbpf
// bench` measures them (warm-up, rounds, median and spread, ns per op from
// the object's USERBPF_BENCH_OPS), so the two print comparable figures.
// Without root or a usable bpf() it says so and exits 0.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char* kOpsSymbol = "userbpf_bench_ops";
constexpr uint64_t kTargetRoundNs = 20'000'000;  // auto repeat: ~20 ms per round
constexpr uint32_t kMaxRepeat = 10'000'000;
constexpr size_t kPacketSize = 64;  // what `userbpf bench` passes to xdp/tc programs

struct Options {
  uint32_t repeat = 0;  // 0: calibrated per program
  uint32_t rounds = 5;
  bool json = false;
  std::vector<std::string> files;
};

// libbpf's messages for the current object: the verifier log ends up here.
std::string g_log;

int capture_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level == LIBBPF_DEBUG) return 0;
  // The verifier log comes as one message: sized first, never cut.
  va_list again;
  va_copy(again, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  if (n > 0) {
    std::string buf(static_cast<size_t>(n) + 1, '\0');
    std::vsnprintf(buf.data(), buf.size(), fmt, again);
    g_log.append(buf.data(), static_cast<size_t>(n));
  }
  va_end(again);
  return 0;
}

// The verifier's last complaint in the log (the line before the log's end),
// or the last line libbpf printed.
std::string log_summary() {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < g_log.size()) {
    size_t end = g_log.find('\n', start);
    if (end == std::string::npos) end = g_log.size();
    std::string line = g_log.substr(start, end - start);
    if (!line.empty() && line.find("-- END PROG LOAD LOG --") == std::string::npos &&
        line.find("processed ") != 0 && line.find("verification time") != 0)
      lines.push_back(line);
    start = end + 1;
  }
  for (auto it = lines.rbegin(); it != lines.rend(); ++it)
    if (it->find("libbpf:") == std::string::npos) return *it;
  return lines.empty() ? "" : lines.back();
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string base_name(const std::string& path) {
  return path.substr(path.find_last_of('/') + 1);
}

// USERBPF_BENCH_OPS: the u64 `userbpf_bench_ops` in .rodata, located through
// the object's BTF (DATASEC .rodata lists each variable's offset). 0: none.
uint64_t read_bench_ops(bpf_object* obj) {
  const btf* b = bpf_object__btf(obj);
  bpf_map* rodata = bpf_object__find_map_by_name(obj, ".rodata");
  if (!b || !rodata) return 0;
  int sec_id = btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC);
  if (sec_id < 0) return 0;
  const btf_type* sec = btf__type_by_id(b, static_cast<uint32_t>(sec_id));
  const btf_var_secinfo* vars = btf_var_secinfos(sec);
  size_t size = 0;
  const auto* data = static_cast<const uint8_t*>(bpf_map__initial_value(rodata, &size));
  for (uint16_t i = 0; i < btf_vlen(sec); i++) {
    const btf_type* var = btf__type_by_id(b, vars[i].type);
    const char* name = var ? btf__name_by_offset(b, var->name_off) : nullptr;
    if (!name || std::strcmp(name, kOpsSymbol) != 0) continue;
    if (vars[i].size != sizeof(uint64_t) || !data || vars[i].offset + sizeof(uint64_t) > size)
      return 0;
    uint64_t ops;
    std::memcpy(&ops, data + vars[i].offset, sizeof(ops));
    return ops;
  }
  return 0;
}

// One BPF_PROG_TEST_RUN of `repeat` runs: mean ns per run and r0.
int test_run(int fd, bool packet, uint32_t repeat, uint32_t& ns_per_run, uint32_t& retval) {
  static uint8_t pkt[kPacketSize];
  bpf_test_run_opts o;  // LIBBPF_OPTS is C only: fill the sized struct by hand
  std::memset(&o, 0, sizeof(o));
  o.sz = sizeof(o);
  if (packet) {
    o.data_in = pkt;
    o.data_size_in = sizeof(pkt);
  }
  o.repeat = repeat;
  int err = bpf_prog_test_run_opts(fd, &o);
  if (err) return err;
  ns_per_run = o.duration;
  retval = o.retval;
  return 0;
}

bool takes_packet(bpf_prog_type t) {
  switch (t) {
    case BPF_PROG_TYPE_XDP:
    case BPF_PROG_TYPE_SCHED_CLS:
    case BPF_PROG_TYPE_SCHED_ACT:
    case BPF_PROG_TYPE_SOCKET_FILTER:
      return true;
    default:
      return false;
  }
}

struct Row {
  std::string file, program, status = "ok", error;
  uint32_t repeat = 0, rounds = 0;
  double median = 0, min = 0, max = 0;
  uint64_t ops = 0, retval = 0;
};

void print_row(const Options& opts, const Row& r) {
  if (opts.json) {
    std::printf("{\"file\":\"%s\",\"program\":\"%s\",\"engine\":\"kernel\",\"status\":\"%s\"",
                json_escape(r.file).c_str(), json_escape(r.program).c_str(), r.status.c_str());
    if (r.status == "ok") {
      std::printf(",\"repeat\":%u,\"rounds\":%u,\"ns_per_run\":%.1f,\"min\":%.1f,\"max\":%.1f",
                  r.repeat, r.rounds, r.median, r.min, r.max);
      std::printf(",\"retval\":%" PRIu64, r.retval);
      if (r.ops)
        std::printf(",\"ops\":%" PRIu64 ",\"ns_per_op\":%.3f,\"check\":\"%s\"", r.ops,
                    r.median / static_cast<double>(r.ops), r.retval == r.ops ? "ok" : "mismatch");
    } else {
      std::printf(",\"error\":\"%s\"", json_escape(r.error).c_str());
    }
    std::printf("}\n");
    return;
  }
  if (r.status != "ok") {
    std::printf("%-22s %s: %s\n", r.program.c_str(), r.status.c_str(), r.error.c_str());
    return;
  }
  double spread = r.median > 0 ? 100.0 * (r.max - r.min) / r.median : 0;
  std::printf("%-22s %10u %12.1f %7.1f%% %8" PRIu64, r.program.c_str(), r.repeat, r.median, spread,
              r.ops);
  if (r.ops)
    std::printf(" %10.3f %s\n", r.median / static_cast<double>(r.ops),
                r.retval == r.ops ? "ok" : "r0 != ops");
  else
    std::printf(" %10s -\n", "n/a");
}

void bench_program(const Options& opts, bpf_program* prog, uint64_t ops, Row& row) {
  const int fd = bpf_program__fd(prog);
  const bool packet = takes_packet(bpf_program__type(prog));
  uint32_t ns = 0, retval = 0;
  // Warm-up (fills the maps the programs fill on their first run) and, when
  // no repeat was given, the calibration of one.
  uint32_t repeat = opts.repeat;
  int err = test_run(fd, packet, repeat ? repeat : 16, ns, retval);
  if (!err && !repeat) {
    repeat = static_cast<uint32_t>(
        std::clamp<uint64_t>(kTargetRoundNs / std::max<uint32_t>(ns, 1), 1, kMaxRepeat));
    err = test_run(fd, packet, repeat, ns, retval);
  }
  std::vector<double> rounds;
  for (uint32_t i = 0; !err && i < opts.rounds; i++) {
    err = test_run(fd, packet, repeat, ns, retval);
    rounds.push_back(ns);
  }
  if (err) {
    row.status = "error";
    row.error = std::string("BPF_PROG_TEST_RUN: ") + std::strerror(-err);
    return;
  }
  std::sort(rounds.begin(), rounds.end());
  size_t n = rounds.size();
  row.median = n % 2 ? rounds[n / 2] : (rounds[n / 2 - 1] + rounds[n / 2]) / 2;
  row.min = rounds.front();
  row.max = rounds.back();
  row.repeat = repeat;
  row.rounds = opts.rounds;
  row.ops = ops;
  row.retval = retval;
}

void bench_file(const Options& opts, const std::string& path) {
  g_log.clear();
  Row base;
  base.file = base_name(path);
  bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
  if (!obj) {
    base.program = base.file;
    base.status = "error";
    base.error = std::string("libbpf cannot open it: ") + std::strerror(errno);
    print_row(opts, base);
    return;
  }
  uint64_t ops = read_bench_ops(obj);
  int err = bpf_object__load(obj);
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    Row row = base;
    row.program = bpf_program__name(prog);
    if (err) {
      row.status = "rejected";
      row.error = std::string("the kernel refused the object (") + std::strerror(-err) + ")";
      std::string why = log_summary();
      if (!why.empty()) row.error += ": " + why;
    } else {
      bench_program(opts, prog, ops, row);
    }
    print_row(opts, row);
  }
  bpf_object__close(obj);
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: userbpf_kernel_bench [--repeat N] [--rounds R] [--json] FILE...\n"
               "  Runs every program of each BPF object in the running kernel with\n"
               "  BPF_PROG_TEST_RUN: one warm-up, R rounds (default 5) of N runs (default:\n"
               "  calibrated to ~20 ms a round); prints the median ns per run, the spread\n"
               "  (max - min over the rounds, in %% of the median) and ns per op when the\n"
               "  object declares USERBPF_BENCH_OPS. Needs root; otherwise says so, exit 0.\n");
}

bool parse_u32(const char* s, uint32_t& out) {
  char* end;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || *end || end == s || v == 0 || v > UINT32_MAX) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--repeat" && i + 1 < argc && parse_u32(argv[i + 1], opts.repeat)) {
      i++;
    } else if (a == "--rounds" && i + 1 < argc && parse_u32(argv[i + 1], opts.rounds)) {
      i++;
    } else if (a == "--json") {
      opts.json = true;
    } else if (!a.empty() && a[0] != '-') {
      opts.files.push_back(a);
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (opts.files.empty()) {
    usage(stderr);
    return 2;
  }

  std::string unavailable;
  libbpf_set_print(capture_print);
  if (geteuid() != 0) {
    unavailable = "not root";
  } else {
    int ok = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_XDP, nullptr);
    if (ok <= 0)
      unavailable = std::string("bpf() cannot load programs here") +
                    (ok < 0 ? std::string(": ") + std::strerror(-ok) : "");
  }
  if (!unavailable.empty()) {
    if (opts.json)
      std::printf("{\"engine\":\"kernel\",\"status\":\"unavailable\",\"error\":\"%s\"}\n",
                  json_escape(unavailable).c_str());
    else
      std::printf("kernel: not measured (%s)\n", unavailable.c_str());
    return 0;
  }
  if (!opts.json)
    std::printf("%-22s %10s %12s %8s %8s %10s %s\n", "program", "repeat", "ns/run", "spread",
                "ops/run", "ns/op", "check");
  for (const auto& f : opts.files) bench_file(opts, f);
  return 0;
}
