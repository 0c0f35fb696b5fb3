// flowcount: runs an XDP program that counts packets and bytes per flow over
// a generated stream of packets (or a pcap capture), then prints the top flows.
// The example a user starts from: open, load, run per packet, read a map.
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef USERBPF_HAVE_PCAP
#include <pcap/pcap.h>
#endif

#include "userbpf/userbpf.h"

namespace {

struct FlowKey {
  uint32_t saddr, daddr;
  uint16_t sport, dport;
  uint8_t proto, pad[3];
};
struct FlowStats {
  uint64_t packets, bytes;
};

struct Options {
  std::string object = "flowcount.bpf.o";
  std::string pcap;
  uint64_t packets = 2'000'000;
  uint32_t flows = 5'000;
  uint32_t top = 10;
};

int usage() {
  std::fprintf(
      stderr,
      "usage: flowcount [--object FILE] [--packets N] [--flows N] [--top N] [--pcap FILE]\n");
  return 2;
}

// One Ethernet/IPv4/TCP-or-UDP frame per flow, with a size of its own.
std::vector<std::vector<uint8_t>> make_flows(uint32_t n, std::mt19937_64& rng) {
  std::vector<std::vector<uint8_t>> frames;
  std::uniform_int_distribution<uint32_t> addr(0x0a000001, 0x0affffff);
  std::uniform_int_distribution<uint32_t> port(1024, 65535);
  std::uniform_int_distribution<uint32_t> size(64, 1500);
  for (uint32_t i = 0; i < n; i++) {
    bool tcp = i % 3 != 0;
    size_t len = std::max<size_t>(size(rng), sizeof(ethhdr) + sizeof(iphdr) + sizeof(tcphdr));
    std::vector<uint8_t> f(len, 0);
    auto* eth = reinterpret_cast<ethhdr*>(f.data());
    eth->h_proto = htons(ETH_P_IP);
    auto* ip = reinterpret_cast<iphdr*>(eth + 1);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    ip->tot_len = htons(static_cast<uint16_t>(len - sizeof(ethhdr)));
    ip->saddr = htonl(addr(rng));
    ip->daddr = htonl(addr(rng));
    uint16_t sport = static_cast<uint16_t>(port(rng)), dport = i % 2 ? 443 : 53;
    if (tcp) {
      auto* th = reinterpret_cast<tcphdr*>(ip + 1);
      th->source = htons(sport);
      th->dest = htons(dport);
    } else {
      auto* uh = reinterpret_cast<udphdr*>(ip + 1);
      uh->source = htons(sport);
      uh->dest = htons(dport);
    }
    frames.push_back(std::move(f));
  }
  return frames;
}

std::string ip_str(uint32_t be) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &be, buf, sizeof(buf));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto num = [&](uint64_t& out) {
      if (i + 1 >= argc) return false;
      char* end;
      out = std::strtoull(argv[++i], &end, 10);
      return *end == '\0' && out > 0;
    };
    uint64_t v;
    if (a == "--object" && i + 1 < argc)
      opt.object = argv[++i];
    else if (a == "--pcap" && i + 1 < argc)
      opt.pcap = argv[++i];
    else if (a == "--packets" && num(v))
      opt.packets = v;
    else if (a == "--flows" && num(v) && v <= 1'000'000)
      opt.flows = static_cast<uint32_t>(v);
    else if (a == "--top" && num(v))
      opt.top = static_cast<uint32_t>(v);
    else
      return usage();
  }

  auto rt = userbpf::Runtime::create();
  if (!rt.ok()) return std::fprintf(stderr, "flowcount: %s\n", rt.error().message.c_str()), 1;
  auto obj = userbpf::Object::open(**rt, opt.object);
  if (!obj.ok()) return std::fprintf(stderr, "flowcount: %s\n", obj.error().message.c_str()), 1;
  if (auto st = (*obj)->load(); !st.ok())
    return std::fprintf(stderr, "flowcount: %s\n", st.error().message.c_str()), 1;
  auto prog = (*obj)->find_program("count_flows");
  auto flows = (*obj)->find_map("flows");
  if (!prog.ok() || !flows.ok())
    return std::fprintf(stderr, "flowcount: object lacks count_flows or flows\n"), 1;

  std::vector<std::vector<uint8_t>> stream;  // generated frames, or the capture's
  std::vector<uint32_t> order;               // which frame each packet is
#ifdef USERBPF_HAVE_PCAP
  if (!opt.pcap.empty()) {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* pc = pcap_open_offline(opt.pcap.c_str(), err);
    if (!pc) return std::fprintf(stderr, "flowcount: %s: %s\n", opt.pcap.c_str(), err), 1;
    pcap_pkthdr* h;
    const u_char* d;
    while (pcap_next_ex(pc, &h, &d) == 1) {
      order.push_back(static_cast<uint32_t>(stream.size()));
      stream.emplace_back(d, d + h->caplen);
    }
    pcap_close(pc);
    std::printf("flowcount: %zu packets from %s\n", order.size(), opt.pcap.c_str());
  }
#else
  if (!opt.pcap.empty()) return std::fprintf(stderr, "flowcount: built without libpcap\n"), 1;
#endif
  if (opt.pcap.empty()) {
    std::mt19937_64 rng(42);
    stream = make_flows(opt.flows, rng);
    // Skewed popularity: a few heavy flows, a long tail (u^3 concentrates near 0).
    std::uniform_real_distribution<double> u(0, 1);
    order.resize(opt.packets);
    for (auto& o : order) {
      double x = u(rng);
      o = static_cast<uint32_t>(x * x * x * opt.flows) % opt.flows;
    }
    std::printf("flowcount: %" PRIu64 " generated packets over %u flows\n", opt.packets, opt.flows);
  }

  uint64_t total_bytes = 0, next_report = order.size() / 10;
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < order.size(); i++) {
    const auto& frame = stream[order[i]];
    userbpf::RunOptions ro;
    ro.packet = frame.data();
    ro.packet_size = frame.size();
    auto r = prog->run(ro);
    if (!r.ok())
      return std::fprintf(stderr, "flowcount: packet %zu: %s\n", i, r.error().message.c_str()), 1;
    total_bytes += frame.size();
    if (i + 1 == next_report || i + 1 == order.size()) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("  %3zu%%  %zu packets  %.2f Mpps\n", (i + 1) * 100 / order.size(), i + 1,
                  (i + 1) / s / 1e6);
      std::fflush(stdout);
      next_report += order.size() / 10;
    }
  }

  // Read the whole map back and rank flows by bytes.
  std::vector<std::pair<FlowKey, FlowStats>> all;
  FlowKey key, next;
  const void* cur = nullptr;
  while (flows->get_next_key(cur, &next).ok()) {
    key = next;
    cur = &key;
    FlowStats st;
    if (flows->lookup(&key, &st).ok()) all.emplace_back(key, st);
  }
  std::sort(all.begin(), all.end(),
            [](auto& a, auto& b) { return a.second.bytes > b.second.bytes; });
  std::printf("\n%zu flows; top %u by bytes:\n", all.size(), opt.top);
  std::printf("  %-15s %6s   %-15s %6s  %5s %10s %12s\n", "source", "port", "destination", "port",
              "proto", "packets", "bytes");
  for (size_t i = 0; i < all.size() && i < opt.top; i++) {
    const auto& [k, s] = all[i];
    std::printf("  %-15s %6u   %-15s %6u  %5s %10" PRIu64 " %12" PRIu64 "\n",
                ip_str(k.saddr).c_str(), k.sport, ip_str(k.daddr).c_str(), k.dport,
                k.proto == IPPROTO_TCP   ? "tcp"
                : k.proto == IPPROTO_UDP ? "udp"
                                         : "other",
                s.packets, s.bytes);
  }

  // The counts must add up: every IPv4 packet is in exactly one flow.
  uint64_t counted_pkts = 0, counted_bytes = 0;
  for (auto& [k, s] : all) {
    counted_pkts += s.packets;
    counted_bytes += s.bytes;
  }
  uint64_t non_ip = 0;
  if (auto bss = (*obj)->find_map(".bss"); bss.ok()) {
    std::vector<uint8_t> v(bss->value_buffer_size());
    uint32_t zero = 0;
    if (bss->lookup(&zero, v.data()).ok()) std::memcpy(&non_ip, v.data(), sizeof(non_ip));
  }
  std::printf("\ncounted %" PRIu64 " packets (%" PRIu64 " bytes) in flows, %" PRIu64
              " non-IP; sent %zu packets (%" PRIu64 " bytes)\n",
              counted_pkts, counted_bytes, non_ip, order.size(), total_bytes);
  if (opt.pcap.empty() && (counted_pkts != order.size() || counted_bytes != total_bytes)) {
    std::fprintf(stderr, "flowcount: counts do not add up\n");
    return 1;
  }
  return 0;
}
