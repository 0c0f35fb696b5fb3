// `userbpf map show|dump FILE`: an object's maps after load, their memory use
// and contents (global data initial values included). Per-CPU maps show each
// CPU's copy and the sum over CPUs.
#include <cinttypes>
#include <cstring>

#include "cli.h"

namespace userbpf::cli {

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
