// The kernel's BPF printf, shared by bpf_trace_printk, bpf_trace_vprintk and
// bpf_snprintf: the format rules of bpf_bprintf_prepare (kernel/bpf/helpers.c)
// and the output of bstr_printf (lib/vsprintf.c).
//
// Accepted conversions, each with optional flags "0 +-" and a width (no
// precision, no '#', no h/z/j modifiers):
//   %d %i %u %x %X   int, or 64-bit with l / ll
//   %c               one byte
//   %s %pks %pus     NUL-terminated string read fault-safely ("" if unreadable);
//                    the next format byte must be NUL, space or punctuation
//   %p %pK %px       pointer as 16 hex digits (userbpf prints the real address:
//                    there is no kernel address to hide)
//   %ps %pS %pB      symbol: userbpf has no symbol table, prints 0x<hex>
//   %pI4 %pi4 %pI6 %pi6   IP address read fault-safely (zeros if unreadable)
//   %%               a percent sign
// Anything else, a control byte in the format, more conversions than
// arguments, or no NUL within the format's size: -EINVAL. Strings share the
// kernel's 512-byte argument buffer; overflowing it: -ENOSPC.
// Not %o: the kernel rejects it too.
//
// Contexts: any (signal handlers included): stack buffers only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace userbpf::helpers {

inline constexpr uint32_t kMaxBprintfVarargs = 12;  // MAX_BPRINTF_VARARGS
inline constexpr size_t kMaxBprintfBuf = 1024;      // MAX_BPRINTF_BUF: trace_printk line
inline constexpr size_t kMaxBprintfBinArgs = 512;   // MAX_BPRINTF_BIN_ARGS

// Formats fmt (which must hold a NUL within its first fmt_size bytes) with
// num_args (<= kMaxBprintfVarargs) raw 64-bit arguments into out: at most
// out_size - 1 bytes and a NUL when out_size > 0; out may be nullptr when
// out_size is 0. Returns the length of the complete output (like vsnprintf,
// may exceed out_size - 1) or a negative errno; on error out is untouched.
int bprintf_format(char* out, size_t out_size, const char* fmt, size_t fmt_size,
                   const uint64_t* args, uint32_t num_args);

}  // namespace userbpf::helpers
