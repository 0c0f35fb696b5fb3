// userbpf command line: dispatches to one subcommand per file.
#include <cstring>

#include "cli.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: userbpf <command> [options]\n"
               "\n"
               "commands:\n"
               "  prog list FILE              programs, sections and maps of a BPF object\n"
               "  prog dump FILE [-p NAME]    disassembly (llvm-objdump syntax)\n"
               "  run FILE -p NAME [options]  run a program (like BPF_PROG_TEST_RUN)\n"
               "  bench FILE [-p NAME...]     time programs: ns per run and per op\n"
               "  map show FILE               maps of an object with their memory use\n"
               "  map dump FILE [-m NAME]     contents of maps after load\n"
               "  exec MEMORY_HEX             run raw bytecode read as hex from stdin\n"
               "                              (ISA conformance plugin protocol)\n"
               "\n"
               "run `userbpf <command> --help` for the options of a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  userbpf::cli::Args args(argv + 2, argv + argc);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  if (cmd == "prog") return userbpf::cli::cmd_prog(args);
  if (cmd == "run") return userbpf::cli::cmd_run(args);
  if (cmd == "map") return userbpf::cli::cmd_map(args);
  if (cmd == "exec") return userbpf::cli::cmd_exec(args);
  if (cmd == "bench") return userbpf::cli::cmd_bench(args);
  std::fprintf(stderr, "userbpf: unknown command '%s'\n\n", cmd.c_str());
  usage(stderr);
  return 2;
}
