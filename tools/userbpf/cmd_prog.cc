// `userbpf prog list|dump FILE`: what an object holds, and its disassembly.
#include "cli.h"

namespace userbpf::cli {

int cmd_prog(const Args& args) {
  if (args.empty() || args[0] == "--help") {
    std::printf(
        "usage: userbpf prog list FILE\n       userbpf prog dump FILE [-p NAME] [--jited]\n");
    return args.empty() ? 2 : 0;
  }
  const std::string& verb = args[0];
  std::string file, only;
  bool jited = false;
  for (size_t i = 1; i < args.size(); i++) {
    if ((args[i] == "-p" || args[i] == "--prog") && i + 1 < args.size())
      only = args[++i];
    else if (args[i] == "--jited" && verb == "dump")
      jited = true;
    else if (file.empty() && args[i][0] != '-')
      file = args[i];
    else
      return fail_msg("prog %s: unexpected argument '%s'", verb.c_str(), args[i].c_str());
  }
  if (file.empty()) return fail_msg("prog %s: missing FILE", verb.c_str());
  if (verb != "list" && verb != "dump") return fail_msg("prog: unknown verb '%s'", verb.c_str());

  auto rt = Runtime::create();
  if (!rt.ok()) return fail(rt.error());
  auto obj = open_and_load(**rt, file);
  if (!obj) return 1;

  if (verb == "list") {
    std::printf("object %s (license %s)\n", obj->name().c_str(), obj->license().c_str());
    std::printf("programs:\n");
    for (auto& p : obj->programs())
      std::printf("  %-24s section %-28s type %-16s %zu insns%s\n", p.name().c_str(),
                  p.section().c_str(), p.type_name(), p.insn_count(),
                  p.sleepable() ? " sleepable" : "");
    std::printf("maps:\n");
    for (auto& m : obj->maps())
      std::printf("  %-24s type %-16s key %-4u value %-6u max_entries %-8u flags 0x%x\n",
                  m.name().c_str(), m.type_name(), m.key_size(), m.value_size(), m.max_entries(),
                  m.map_flags());
    return 0;
  }

  bool found = false;
  for (auto& p : obj->programs()) {
    if (!only.empty() && p.name() != only && p.section() != only) continue;
    found = true;
    if (jited) {
      auto code = p.disassemble_jited();
      if (!code.ok()) return fail(code.error());
      std::printf("%s (section %s, %s), JIT x86-64:\n%s\n", p.name().c_str(), p.section().c_str(),
                  p.type_name(), code.value().c_str());
      continue;
    }
    std::printf("%s (section %s, %s):\n%s\n", p.name().c_str(), p.section().c_str(), p.type_name(),
                p.disassemble().c_str());
  }
  if (!found) return fail_msg("%s: no program named %s", file.c_str(), only.c_str());
  return 0;
}

}  // namespace userbpf::cli
