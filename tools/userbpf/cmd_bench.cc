// `userbpf bench FILE`: times programs like BPF_PROG_TEST_RUN with a repeat
// count (warm-up, rounds, median and spread) and reports ns per run and, when
// the object declares USERBPF_BENCH_OPS(n), ns per operation. The kernel's
// side of the comparison is bench/kernel/userbpf_kernel_bench, which measures
// and prints the same way.
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "cli.h"

namespace userbpf::cli {
namespace {

constexpr const char* kOpsSymbol = "userbpf_bench_ops";
constexpr double kTargetRoundNs = 20e6;  // calibrated repeat: ~20 ms per round
constexpr uint32_t kCalibrationRepeat = 16;
constexpr double kCalibrationNs = 2e6;  // a calibration round long enough to scale from
constexpr uint32_t kMaxRepeat = 10'000'000;
constexpr size_t kPacketSize =
    64;  // zeroed packet for xdp/tc/socket programs (as the kernel runner)

void usage() {
  std::printf(
      "usage: userbpf bench FILE [options]\n"
      "  Runs each program like BPF_PROG_TEST_RUN with a repeat count: one warm-up\n"
      "  round, calibration rounds (unless --repeat), then R timed rounds. Prints\n"
      "  the median ns per run, the spread (max - min over the rounds, in %% of the\n"
      "  median) and, when the object declares USERBPF_BENCH_OPS(n)\n"
      "  (<userbpf/bpf/userbpf_bpf.h>), ns per op = ns per run / n; the check column\n"
      "  says whether r0 equals n, which benchmark programs return on success.\n"
      "  xdp/tc/socket programs run on a zeroed 64-byte packet.\n"
      "  -p, --prog NAME       program to run (repeatable); default: all\n"
      "  --engine interp|jit   execution engine (default jit, like run); an engine this\n"
      "                        build lacks is reported as n/a, not as an error\n"
      "  --repeat N            runs per round (default: calibrated to ~20 ms)\n"
      "  --rounds R            timed rounds (default 5)\n"
      "  --json                one JSON object per program and line\n");
}

double now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

bool takes_packet(const std::string& type) {
  return type == "xdp" || type == "sched_cls" || type == "sched_act" || type == "socket_filter";
}

// What one program's measurement gave. status: ok, unavailable (the engine
// is missing from this build) or error.
struct Row {
  std::string program, status = "ok", error;
  uint32_t repeat = 0, rounds = 0;
  double median = 0, min = 0, max = 0;
  uint64_t ops = 0, retval = 0;
};

// One round: `repeat` runs, mean ns per run measured around the whole call.
Status timed_run(const Program& prog, RunOptions opts, uint32_t repeat, double& ns_per_run,
                 uint64_t& retval) {
  opts.repeat = repeat;
  double t0 = now_ns();
  auto r = prog.run(opts);
  double t1 = now_ns();
  if (!r.ok()) return r.take_error();
  ns_per_run = (t1 - t0) / repeat;
  retval = r->retval;
  return Status::Ok();
}

void measure(const Program& prog, RunOptions opts, uint32_t repeat, uint32_t rounds, Row& row) {
  static const uint8_t packet[kPacketSize] = {};
  if (takes_packet(prog.type_name())) {
    opts.packet = packet;
    opts.packet_size = sizeof(packet);
  }
  double ns = 0;
  uint64_t retval = 0;
  // Warm-up: fills what programs fill on their first run (and compiles them
  // for the JIT), warms caches.
  Status st = timed_run(prog, opts, repeat ? repeat : kCalibrationRepeat, ns, retval);
  if (st.ok() && !repeat) {
    // Calibration on warm code: rounds grow until one takes kCalibrationNs
    // (the call's own set-up, a few hundred ns, then weighs little), and the
    // repeat count is scaled from there to kTargetRoundNs. Calibrating on the
    // warm-up would count the compile and give short rounds that the set-up
    // and timer noise dominate.
    for (uint32_t r = kCalibrationRepeat;; r = std::min(r * 8, kMaxRepeat)) {
      st = timed_run(prog, opts, r, ns, retval);
      if (!st.ok() || ns * r >= kCalibrationNs || r == kMaxRepeat) break;
    }
    repeat = static_cast<uint32_t>(
        std::clamp<double>(kTargetRoundNs / std::max(ns, 1.0), 1, kMaxRepeat));
  }
  std::vector<double> per_round;
  for (uint32_t i = 0; st.ok() && i < rounds; i++) {
    st = timed_run(prog, opts, repeat, ns, retval);
    per_round.push_back(ns);
  }
  if (!st.ok()) {
    const int code = st.error().code;
    row.status = opts.engine == Engine::kJit && (code == ENOTSUP || code == EOPNOTSUPP)
                     ? "unavailable"
                     : "error";
    row.error = st.error().message;
    return;
  }
  std::sort(per_round.begin(), per_round.end());
  size_t n = per_round.size();
  row.median = n % 2 ? per_round[n / 2] : (per_round[n / 2 - 1] + per_round[n / 2]) / 2;
  row.min = per_round.front();
  row.max = per_round.back();
  row.repeat = repeat;
  row.rounds = rounds;
  row.retval = retval;
}

const char* engine_name(Engine e) {
  return e == Engine::kJit ? "jit" : "interp";
}

void print_row(const std::string& file, Engine engine, const Row& r, bool json) {
  const bool checked = r.ops && r.status == "ok";
  const char* check = !checked ? "n/a" : r.retval == r.ops ? "ok" : "mismatch";
  if (json) {
    std::printf("{\"file\":\"%s\",\"program\":\"%s\",\"engine\":\"%s\",\"status\":\"%s\"",
                json_escape(file).c_str(), json_escape(r.program).c_str(), engine_name(engine),
                r.status.c_str());
    if (r.status == "ok") {
      std::printf(",\"repeat\":%u,\"rounds\":%u,\"ns_per_run\":%.1f,\"min\":%.1f,\"max\":%.1f",
                  r.repeat, r.rounds, r.median, r.min, r.max);
      std::printf(",\"retval\":%" PRIu64, r.retval);
      if (r.ops)
        std::printf(",\"ops\":%" PRIu64 ",\"ns_per_op\":%.3f,\"check\":\"%s\"", r.ops,
                    r.median / static_cast<double>(r.ops), check);
    } else {
      std::printf(",\"error\":\"%s\"", json_escape(r.error).c_str());
    }
    std::printf("}\n");
    return;
  }
  if (r.status != "ok") {
    std::printf(
        "%-22s %s\n", r.program.c_str(),
        (r.status == "unavailable" ? "n/a (" + r.error + ")" : "error: " + r.error).c_str());
    return;
  }
  double spread = r.median > 0 ? 100.0 * (r.max - r.min) / r.median : 0;
  std::printf("%-22s %10u %12.1f %7.1f%% %8" PRIu64, r.program.c_str(), r.repeat, r.median, spread,
              r.ops);
  if (r.ops)
    std::printf(" %10.3f %s\n", r.median / static_cast<double>(r.ops),
                checked && r.retval != r.ops ? "r0 != ops" : check);
  else
    std::printf(" %10s -\n", "n/a");
}

// USERBPF_BENCH_OPS(n): the u64 `userbpf_bench_ops` in .rodata; 0 if absent.
Result<uint64_t> declared_ops(const Object& obj) {
  auto v = obj.read_global(kOpsSymbol);
  if (!v.ok()) {
    if (v.error().code == ENOENT) return uint64_t{0};
    return v.take_error();
  }
  if (v->size() != sizeof(uint64_t))
    return make_error(EINVAL, "%s is %zu bytes; USERBPF_BENCH_OPS declares a u64", kOpsSymbol,
                      v->size());
  uint64_t ops;
  std::memcpy(&ops, v->data(), sizeof(ops));
  return ops;
}

}  // namespace

int cmd_bench(const Args& args) {
  std::string file;
  std::vector<std::string> names;
  RunOptions opts;
  opts.engine = Engine::kJit;  // like `run`: the JIT where supported
  uint32_t repeat = 0, rounds = 5;
  bool json = false;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    auto next_u32 = [&](uint32_t& out) {
      uint64_t n;
      if (i + 1 >= args.size() || !parse_u64(args[i + 1], n) || n == 0 || n > kMaxRepeat)
        return false;
      out = static_cast<uint32_t>(n);
      i++;
      return true;
    };
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "-p" || a == "--prog") {
      if (i + 1 >= args.size()) return fail_msg("bench: %s needs a program name", a.c_str());
      names.push_back(args[++i]);
    } else if (a == "--engine") {
      std::string v = i + 1 < args.size() ? args[++i] : "";
      if (v == "interp")
        opts.engine = Engine::kInterpreter;
      else if (v == "jit")
        opts.engine = Engine::kJit;
      else
        return fail_msg("bench: --engine needs interp or jit");
    } else if (a == "--repeat") {
      if (!next_u32(repeat))
        return fail_msg("bench: --repeat needs a number between 1 and %u", kMaxRepeat);
    } else if (a == "--rounds") {
      if (!next_u32(rounds) || rounds > 1000)
        return fail_msg("bench: --rounds needs a number between 1 and 1000");
    } else if (a == "--json") {
      json = true;
    } else if (file.empty() && !a.empty() && a[0] != '-') {
      file = a;
    } else {
      return fail_msg("bench: unexpected argument '%s' (see userbpf bench --help)", a.c_str());
    }
  }
  if (file.empty()) {
    usage();
    return 2;
  }

  auto rt = Runtime::create();
  if (!rt.ok()) return fail(rt.error());
  auto obj = open_and_load(**rt, file);
  if (!obj) return 1;
  auto ops = declared_ops(*obj);
  if (!ops.ok()) return fail(ops.error());

  std::vector<Program> progs;
  if (names.empty()) {
    progs = obj->programs();
  } else {
    for (const auto& n : names) {
      auto p = obj->find_program(n);
      if (!p.ok()) return fail(p.error());
      progs.push_back(*p);
    }
  }

  const std::string base = file.substr(file.find_last_of('/') + 1);
  if (!json) {
    std::printf("%s, engine %s\n", base.c_str(), engine_name(opts.engine));
    std::printf("%-22s %10s %12s %8s %8s %10s %s\n", "program", "repeat", "ns/run", "spread",
                "ops/run", "ns/op", "check");
  }
  int rc = 0;
  for (const Program& p : progs) {
    Row row;
    row.program = p.name();
    row.ops = *ops;
    measure(p, opts, repeat, rounds, row);
    if (row.status == "error") rc = 1;
    print_row(base, opts.engine, row, json);
  }
  return rc;
}

}  // namespace userbpf::cli
