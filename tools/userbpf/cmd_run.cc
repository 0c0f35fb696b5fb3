// `userbpf run FILE -p NAME`: runs a program once or N times on a context
// blob, a packet, or every packet of a pcap capture, and prints r0, time per
// run, verdict counts and (with --maps) the maps afterwards.
#include <cinttypes>
#include <cstring>
#include <map>

#include <unistd.h>

#ifdef USERBPF_HAVE_PCAP
#include <pcap/pcap.h>
#endif

#include "cli.h"

namespace userbpf::cli {
namespace {

const char* verdict_name(const std::string& type, uint64_t r0) {
  static const char* kXdp[] = {"XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"};
  static const char* kTc[] = {"TC_ACT_OK",     "TC_ACT_RECLASSIFY", "TC_ACT_SHOT",
                              "TC_ACT_PIPE",   "TC_ACT_STOLEN",     "TC_ACT_QUEUED",
                              "TC_ACT_REPEAT", "TC_ACT_REDIRECT"};
  if (type == "xdp" && r0 < 5) return kXdp[r0];
  if ((type == "sched_cls" || type == "sched_act") && r0 < 8) return kTc[r0];
  if ((type == "sched_cls" || type == "sched_act") && static_cast<int64_t>(r0) == -1)
    return "TC_ACT_UNSPEC";
  return nullptr;
}

void usage() {
  std::printf(
      "usage: userbpf run FILE -p NAME [options]\n"
      "  -p, --prog NAME       program (function or section name); default: the only one\n"
      "  --data HEX            context blob (syscall, tracing... programs)\n"
      "  --data-file FILE      context blob from a file\n"
      "  --packet HEX          packet for xdp/tc/socket programs\n"
      "  --packet-file FILE    packet from a file\n"
      "  --pcap FILE           run over every packet of a capture; prints verdict counts\n"
      "  --repeat N            runs per input (default 1); time is the mean\n"
      "  --engine interp|jit   execution engine (default: the JIT where supported)\n"
      "  --maps                print every map after the run\n"
      "  --map-memory-limit NAME=BYTES\n"
      "                        memory limit of map NAME (repeatable); ENOMEM past it\n"
      "  --json                machine-readable output\n");
}

}  // namespace

int cmd_run(const Args& args) {
  std::string file, prog_name, pcap_file;
  std::vector<uint8_t> data, packet;
  bool have_packet = false, show_maps = false, json = false;
  RunOptions opts;
  std::vector<std::pair<std::string, uint64_t>> mem_limits;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    auto next = [&](std::string& out) {
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "-p" || a == "--prog") {
      if (!next(prog_name)) return fail_msg("run: %s needs a value", a.c_str());
    } else if (a == "--data") {
      if (!next(v) || !parse_hex(v, data)) return fail_msg("run: --data needs hex bytes");
    } else if (a == "--data-file") {
      if (!next(v) || !read_file(v, data)) return fail_msg("run: cannot read --data-file");
    } else if (a == "--packet") {
      if (!next(v) || !parse_hex(v, packet)) return fail_msg("run: --packet needs hex bytes");
      have_packet = true;
    } else if (a == "--packet-file") {
      if (!next(v) || !read_file(v, packet)) return fail_msg("run: cannot read --packet-file");
      have_packet = true;
    } else if (a == "--pcap") {
      if (!next(pcap_file)) return fail_msg("run: --pcap needs a file");
    } else if (a == "--repeat") {
      uint64_t n;
      if (!next(v) || !parse_u64(v, n) || n == 0 || n > UINT32_MAX)
        return fail_msg("run: --repeat needs a number between 1 and %u", UINT32_MAX);
      opts.repeat = static_cast<uint32_t>(n);
    } else if (a == "--engine") {
      if (!next(v)) return fail_msg("run: --engine needs interp or jit");
      if (v == "interp")
        opts.engine = Engine::kInterpreter;
      else if (v == "jit")
        opts.engine = Engine::kJit;
      else
        return fail_msg("run: unknown engine '%s' (interp or jit)", v.c_str());
    } else if (a == "--maps") {
      show_maps = true;
    } else if (a == "--map-memory-limit") {
      uint64_t n;
      size_t eq = 0;
      if (!next(v) || (eq = v.find('=')) == std::string::npos || eq == 0 ||
          !parse_u64(v.substr(eq + 1), n))
        return fail_msg("run: --map-memory-limit needs NAME=BYTES");
      mem_limits.emplace_back(v.substr(0, eq), n);
    } else if (a == "--json") {
      json = true;
    } else if (file.empty() && a[0] != '-') {
      file = a;
    } else {
      return fail_msg("run: unexpected argument '%s' (see userbpf run --help)", a.c_str());
    }
  }
  if (file.empty()) {
    usage();
    return 2;
  }

  auto rt = Runtime::create();
  if (!rt.ok()) return fail(rt.error());
  std::unique_ptr<Object> obj;
  if (mem_limits.empty()) {
    obj = open_and_load(**rt, file);
    if (!obj) return 1;
  } else {
    auto opened = Object::open(**rt, file);
    if (!opened.ok()) return fail(opened.error());
    obj = std::move(opened.value());
    for (auto& [name, bytes] : mem_limits)
      if (Status st = obj->set_map_memory_limit(name, bytes); !st.ok()) return fail(st.error());
    if (Status st = obj->load(); !st.ok()) return fail(st.error());
  }
  auto progs = obj->programs();
  if (prog_name.empty()) {
    if (progs.size() != 1)
      return fail_msg("%s has %zu programs: choose one with -p NAME", file.c_str(), progs.size());
    prog_name = progs[0].name();
  }
  auto prog = obj->find_program(prog_name);
  if (!prog.ok()) return fail(prog.error());
  std::string type = prog->type_name();

  if (!pcap_file.empty()) {
#ifdef USERBPF_HAVE_PCAP
    char errbuf[PCAP_ERRBUF_SIZE];
    pcap_t* pc = pcap_open_offline(pcap_file.c_str(), errbuf);
    if (!pc) return fail_msg("cannot open capture %s: %s", pcap_file.c_str(), errbuf);
    std::map<uint64_t, uint64_t> verdicts;
    uint64_t packets = 0, total_ns = 0;
    pcap_pkthdr* hdr;
    const u_char* bytes;
    int rc;
    const bool progress = isatty(STDERR_FILENO);  // long captures: show we are alive
    while ((rc = pcap_next_ex(pc, &hdr, &bytes)) == 1) {
      RunOptions o = opts;
      o.packet = bytes;
      o.packet_size = hdr->caplen;
      auto r = prog->run(o);
      if (!r.ok()) {
        pcap_close(pc);
        return fail_msg("packet %" PRIu64 ": %s", packets + 1, r.error().message.c_str());
      }
      verdicts[r->retval]++;
      total_ns += r->duration_ns;
      packets++;
      if (progress && packets % 1'000'000 == 0)
        std::fprintf(stderr, "\r  %" PRIu64 " packets...", packets);
    }
    if (progress && packets >= 1'000'000) std::fprintf(stderr, "\r");
    if (rc == PCAP_ERROR)
      std::fprintf(stderr, "userbpf: %s: %s\n", pcap_file.c_str(), pcap_geterr(pc));
    pcap_close(pc);
    if (json) {
      std::printf("{\"program\":\"%s\",\"packets\":%" PRIu64 ",\"ns_per_run\":%" PRIu64
                  ",\"verdicts\":{",
                  json_escape(prog_name).c_str(), packets, packets ? total_ns / packets : 0);
      bool first = true;
      for (auto& [r0, n] : verdicts) {
        const char* name = verdict_name(type, r0);
        std::printf("%s\"%s\":%" PRIu64, first ? "" : ",", name ? name : std::to_string(r0).c_str(),
                    n);
        first = false;
      }
      std::printf("}");
    } else {
      std::printf("%s: %" PRIu64 " packets, %" PRIu64 " ns per run\n", prog_name.c_str(), packets,
                  packets ? total_ns / packets : 0);
      for (auto& [r0, n] : verdicts) {
        const char* name = verdict_name(type, r0);
        std::printf("  %-16s %" PRIu64 "\n", name ? name : std::to_string(r0).c_str(), n);
      }
    }
#else
    return fail_msg("this userbpf was built without libpcap: --pcap is unavailable");
#endif
  } else {
    if (have_packet) {
      opts.packet = packet.data();
      opts.packet_size = packet.size();
    }
    if (!data.empty()) {
      opts.ctx = data.data();
      opts.ctx_size = data.size();
    }
    auto r = prog->run(opts);
    if (!r.ok()) return fail(r.error());
    const char* vname = verdict_name(type, r->retval);
    if (json) {
      std::printf("{\"program\":\"%s\",\"retval\":%" PRIu64 ",\"ns_per_run\":%" PRIu64
                  ",\"repeat\":%u",
                  json_escape(prog_name).c_str(), r->retval, r->duration_ns, opts.repeat);
      if (vname) std::printf(",\"verdict\":\"%s\"", vname);
      if (have_packet)
        std::printf(",\"packet_out\":\"%s\"",
                    to_hex(r->packet_out.data(), r->packet_out.size(), false).c_str());
      if (!r->ctx_out.empty())
        std::printf(",\"ctx_out\":\"%s\"",
                    to_hex(r->ctx_out.data(), r->ctx_out.size(), false).c_str());
    } else {
      std::printf("%s: retval %" PRIu64 " (0x%" PRIx64 ")%s%s, %" PRIu64 " ns per run (%u runs)\n",
                  prog_name.c_str(), r->retval, r->retval, vname ? " " : "", vname ? vname : "",
                  r->duration_ns, opts.repeat);
    }
  }

  if (show_maps) {
    if (json) std::printf(",\"maps\":{");
    bool first = true;
    for (auto& m : obj->maps()) {
      if (json) {
        std::printf("%s\"%s\":", first ? "" : ",", json_escape(m.name()).c_str());
        print_any_map(stdout, m, true);
      } else {
        std::printf("map %s (%s):\n", m.name().c_str(), m.type_name());
        print_any_map(stdout, m, false);
      }
      first = false;
    }
    if (json) std::printf("}");
  }
  if (json) std::printf("}\n");
  return 0;
}

}  // namespace userbpf::cli
