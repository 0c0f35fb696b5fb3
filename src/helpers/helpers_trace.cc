// Trace output helpers: bpf_trace_printk (bpf_printk with up to 3
// arguments), bpf_trace_vprintk (bpf_printk with more) and bpf_snprintf.
// Lines go to the run's PrintSink, one write per call with a newline added
// when the format has none (the kernel's trace_pipe shows one event per line).
#include <cerrno>
#include <cstring>

#include "helpers/bprintf.h"
#include "helpers/helper_fns.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

const char* ptr(u64 v) {
  return reinterpret_cast<const char*>(static_cast<uintptr_t>(v));
}

// Formats one trace line and hands it to the current run's sink (stderr
// outside a run). Returns bstr_printf's length or a negative errno.
u64 trace_line(const char* fmt, uint32_t fmt_size, const uint64_t* args, uint32_t num_args) {
  // One byte more than the kernel's buffer for the newline.
  char line[kMaxBprintfBuf + 1];
  int ret = bprintf_format(line, kMaxBprintfBuf, fmt, fmt_size, args, num_args);
  if (ret < 0) return static_cast<u64>(static_cast<int64_t>(ret));
  // The trace event stores a C string: output stops at a NUL from %c.
  size_t len = strnlen(line, kMaxBprintfBuf - 1);
  if (len == 0 || line[len - 1] != '\n') line[len++] = '\n';
  vm::RunContext* rc = vm::current_run();
  vm::PrintSink sink = rc ? rc->print : vm::default_print_sink();
  if (sink.write) sink.write(sink.user, line, len);
  return static_cast<u64>(static_cast<int64_t>(ret));
}

// Copies up to kMaxBprintfVarargs u64 arguments out of program memory
// (which need not be 8-byte aligned).
bool load_varargs(u64 data, u64 data_len, uint64_t (&args)[kMaxBprintfVarargs],
                  uint32_t* num_args) {
  const auto len = static_cast<uint32_t>(data_len);
  if ((len & 7) || len > kMaxBprintfVarargs * 8 || (len && !data)) return false;
  if (len) std::memcpy(args, ptr(data), len);
  *num_args = len / 8;
  return true;
}

}  // namespace

u64 bpf_trace_printk(u64 fmt, u64 fmt_size, u64 arg1, u64 arg2, u64 arg3) {
  const uint64_t args[3] = {arg1, arg2, arg3};
  return trace_line(ptr(fmt), static_cast<uint32_t>(fmt_size), args, 3);
}

u64 bpf_trace_vprintk(u64 fmt, u64 fmt_size, u64 data, u64 data_len, u64) {
  uint64_t args[kMaxBprintfVarargs];
  uint32_t num_args = 0;
  if (!load_varargs(data, data_len, args, &num_args)) return static_cast<u64>(-EINVAL);
  return trace_line(ptr(fmt), static_cast<uint32_t>(fmt_size), args, num_args);
}

u64 bpf_snprintf(u64 str, u64 str_size, u64 fmt, u64 data, u64 data_len) {
  uint64_t args[kMaxBprintfVarargs];
  uint32_t num_args = 0;
  if (!load_varargs(data, data_len, args, &num_args)) return static_cast<u64>(-EINVAL);
  const uint32_t size = static_cast<uint32_t>(str_size);
  // fmt is a kConstStr: NUL-terminated, so its length bounds the search.
  const char* f = ptr(fmt);
  int ret = bprintf_format(size ? reinterpret_cast<char*>(static_cast<uintptr_t>(str)) : nullptr,
                           size, f, f ? std::strlen(f) + 1 : 0, args, num_args);
  if (ret < 0) return static_cast<u64>(static_cast<int64_t>(ret));
  return static_cast<u64>(ret) + 1;
}

}  // namespace userbpf::helpers
