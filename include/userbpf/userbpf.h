// The userbpf public C++ API: a Runtime, Objects opened from BPF ELF files
// (open -> load), their Programs (run like BPF_PROG_TEST_RUN) and Maps
// (lookup, update, delete, get_next_key, batch). Errors are errno codes with
// a message (userbpf/result.h); nothing here throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "userbpf/result.h"

namespace userbpf {

namespace internal {
struct RuntimeImpl;
struct ObjectImpl;
}  // namespace internal

// bpf_printk / trace_printk output: one formatted line per call.
using PrintFn = void (*)(void* user, const char* line, size_t len);

struct RuntimeOptions {
  size_t struct_size = sizeof(RuntimeOptions);
  uint32_t num_cpus = 0;    // CPU slots; 0: the number of possible CPUs
  PrintFn print = nullptr;  // nullptr: stderr
  void* print_user = nullptr;
};

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> create(const RuntimeOptions& opts = {});
  ~Runtime();
  uint32_t num_cpus() const;
  internal::RuntimeImpl* impl() const { return impl_.get(); }

 private:
  Runtime();
  std::unique_ptr<internal::RuntimeImpl> impl_;
};

enum class Engine { kDefault, kInterpreter, kJit };

struct RunOptions {
  size_t struct_size = sizeof(RunOptions);
  // Context blob (r1 for syscall, tracing, ... programs). For xdp/tc
  // programs leave it empty: the runtime builds xdp_md / __sk_buff.
  const void* ctx = nullptr;
  size_t ctx_size = 0;
  // Packet for xdp, tc and socket programs.
  const void* packet = nullptr;
  size_t packet_size = 0;
  uint32_t repeat = 1;  // runs; the result is the last run's
  Engine engine = Engine::kDefault;
  uint64_t insn_budget = 0;  // per run; 0: default (2^32)
};

struct RunResult {
  uint64_t retval = 0;
  uint64_t duration_ns = 0;         // mean per run
  std::vector<uint8_t> packet_out;  // packet after the last run
  std::vector<uint8_t> ctx_out;     // context after the last run
};

struct ProgramStats {
  uint64_t run_cnt = 0;
  uint64_t run_time_ns = 0;
  uint64_t faults = 0;
  uint64_t misses = 0;
};

class Program {
 public:
  const std::string& name() const;
  const std::string& section() const;
  const char* type_name() const;
  bool sleepable() const;
  size_t insn_count() const;
  // llvm-objdump style disassembly of the linked program.
  std::string disassemble() const;
  // The JIT's machine code for the program (compiles it if needed), each BPF
  // pc's instructions under a "; pc N" line. ENOTSUP without a JIT.
  Result<std::string> disassemble_jited() const;
  Result<RunResult> run(const RunOptions& opts) const;
  ProgramStats stats() const;

  struct Handle;
  explicit Program(Handle* h) : h_(h) {}

 private:
  Handle* h_;
};

// Per-CPU map flags of Map::lookup / update and their batch forms (kernel
// 7.0's BPF_F_CPU and BPF_F_ALL_CPUS): with kMapFCpu the value buffer is one
// value of the CPU in flags >> 32 (map_cpu_flags); kMapFAllCpus (update)
// writes one value to every CPU. ERANGE for a CPU >= num_cpus(), EINVAL on
// maps that are not per-CPU. They combine with the update flags BPF_ANY (0),
// BPF_NOEXIST (1) and BPF_EXIST (2).
inline constexpr uint64_t kMapFCpu = 8;
inline constexpr uint64_t kMapFAllCpus = 16;
inline constexpr uint64_t map_cpu_flags(uint32_t cpu) {
  return kMapFCpu | (uint64_t{cpu} << 32);
}

struct BatchResult {
  uint32_t count = 0;  // elements processed
  bool done = false;   // reached the end (the kernel's ENOENT)
};

class Map {
 public:
  const std::string& name() const;
  uint32_t type() const;
  const char* type_name() const;
  uint32_t key_size() const;
  uint32_t value_size() const;
  uint32_t max_entries() const;
  uint32_t map_flags() const;
  // Bytes of the value buffer the host passes: value_size, or for per-CPU
  // maps round_up(value_size, 8) * num_cpus(), CPU i's copy at offset
  // i * round_up(value_size, 8) (the kernel's layout). With kMapFCpu /
  // kMapFAllCpus the buffer of lookup/update is one value (value_size
  // bytes); batch strides follow the kernel (per-CPU hash: value_size;
  // per-CPU array: round_up(value_size, 8)).
  uint32_t value_buffer_size() const;
  // Per-CPU map (PERCPU_ARRAY, PERCPU_HASH, LRU_PERCPU_HASH): a program sees the copy of the
  // CPU slot its run holds; the host sees every copy.
  bool is_percpu() const;
  // Copies of a value: the runtime's CPU slots (Runtime::num_cpus()) for
  // per-CPU maps, else 1.
  uint32_t num_cpus() const;
  uint64_t memory_used() const;
  // The map's memory limit in bytes (0: none).
  uint64_t memory_limit() const;

  Status lookup(const void* key, void* value, uint64_t flags = 0) const;
  Status update(const void* key, const void* value, uint64_t flags = 0);
  Status erase(const void* key);
  Status lookup_and_delete(const void* key, void* value, uint64_t flags = 0);
  // key nullptr: the first key. ENOENT after the last.
  Status get_next_key(const void* key, void* next_key) const;

  // Batch operations (SPEC.md section 2). in_batch nullptr starts at the
  // beginning; out_batch receives the cursor for the next call. count is
  // the room in keys/values.
  Result<BatchResult> lookup_batch(const void* in_batch, void* out_batch, void* keys, void* values,
                                   uint32_t count, uint64_t elem_flags = 0,
                                   uint64_t flags = 0) const;
  Result<BatchResult> lookup_and_delete_batch(const void* in_batch, void* out_batch, void* keys,
                                              void* values, uint32_t count, uint64_t elem_flags = 0,
                                              uint64_t flags = 0);
  Result<BatchResult> update_batch(const void* keys, const void* values, uint32_t count,
                                   uint64_t elem_flags = 0, uint64_t flags = 0);
  Result<BatchResult> delete_batch(const void* keys, uint32_t count, uint64_t elem_flags = 0,
                                   uint64_t flags = 0);

  struct Handle;
  explicit Map(Handle* h) : h_(h) {}
  Handle* handle() const { return h_; }

 private:
  Handle* h_;
};

class Object {
 public:
  // Parses the ELF file; maps and programs are listed but not created yet.
  static Result<std::unique_ptr<Object>> open(Runtime& rt, const std::string& path);
  static Result<std::unique_ptr<Object>> open_memory(Runtime& rt, const void* data, size_t size,
                                                     const std::string& name);
  ~Object();

  // Creates maps, relocates and prepares programs. Once.
  Status load();
  bool loaded() const;

  const std::string& name() const;
  const std::string& license() const;
  std::vector<Program> programs() const;
  std::vector<Map> maps() const;
  // Program by function name or section name; nullopt-like: ok() false with ENOENT.
  Result<Program> find_program(const std::string& name) const;
  Result<Map> find_map(const std::string& name) const;

  // A global variable of the data sections (.data, .rodata, .bss, .data.*,
  // .rodata.*) by symbol name: its bytes, the initial value before load and
  // the map's current value after. ENOENT when no data section defines it.
  Result<std::vector<uint8_t>> read_global(const std::string& name) const;

  // Before load: change a map's max_entries (like bpf_map__set_max_entries).
  Status set_map_max_entries(const std::string& map_name, uint32_t max_entries);
  // Before load: the most memory in bytes the map may own (0: no limit).
  // Past it, updates fail with ENOMEM (programs: -ENOMEM; host: an Error
  // naming the map and the limit) and nothing already stored is lost; a
  // limit below what creation needs makes load fail with ENOMEM.
  // EBUSY after load, ENOENT for an unknown map.
  Status set_map_memory_limit(const std::string& map_name, uint64_t bytes);

  internal::ObjectImpl* impl() const { return impl_.get(); }

 private:
  Object();
  std::unique_ptr<internal::ObjectImpl> impl_;
};

}  // namespace userbpf
