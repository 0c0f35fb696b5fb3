// Shared pieces of the userbpf CLI: the subcommand table, argument parsing
// helpers, hex conversion and map printing.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "userbpf/userbpf.h"

namespace userbpf::cli {

using Args = std::vector<std::string>;

// Subcommands, one file each.
int cmd_prog(const Args& args);
int cmd_run(const Args& args);
int cmd_map(const Args& args);
int cmd_exec(const Args& args);
int cmd_bench(const Args& args);

// Prints "userbpf: <message>" to stderr and returns 1.
int fail(const Error& e);
[[gnu::format(printf, 1, 2)]] int fail_msg(const char* fmt, ...);

// Parses hex bytes ("0a0b", "0a 0b", "0x0a,0x0b"); false on a bad digit.
bool parse_hex(const std::string& text, std::vector<uint8_t>& out);
std::string to_hex(const uint8_t* data, size_t len, bool spaced = true);
bool read_file(const std::string& path, std::vector<uint8_t>& out);
bool parse_u64(const std::string& text, uint64_t& out);

// Opens and loads an object, printing the error on failure.
std::unique_ptr<Object> open_and_load(Runtime& rt, const std::string& path);

// Prints every element of a map (hex key and value; u32/u64 values also as
// numbers), or as a JSON array when json.
void print_map(FILE* out, Map& map, bool json);
// The same for per-CPU maps: each CPU's copy and the sum over CPUs.
void print_percpu_map(FILE* out, Map& map, bool json);
// print_percpu_map for per-CPU maps, print_map for the others.
void print_any_map(FILE* out, Map& map, bool json);
std::string json_escape(const std::string& s);

}  // namespace userbpf::cli
