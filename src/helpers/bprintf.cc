// The kernel's BPF printf in two passes, like the kernel: prepare (validate
// the format, read strings and IP addresses fault-safely into a 512-byte
// argument buffer) and print (bstr_printf's rendering). See bprintf.h.
#include "helpers/bprintf.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "helpers/nofault.h"

namespace userbpf::helpers {
namespace {

// --- the kernel's ctype (lib/ctype.c: ASCII plus Latin-1) ---------------------
bool k_isascii(unsigned char c) {
  return c < 0x80;
}
bool k_isdigit(unsigned char c) {
  return c >= '0' && c <= '9';
}
bool k_isspace(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xa0;
}
bool k_isprint(unsigned char c) {
  return (c >= 0x20 && c <= 0x7e) || c >= 0xa0;
}
bool k_isalnum(unsigned char c) {
  if (c < 0x80) return k_isdigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return c >= 0xc0 && c != 0xd7 && c != 0xf7;
}
bool k_ispunct(unsigned char c) {
  if (c < 0x80) return c > 0x20 && c < 0x7f && !k_isalnum(c);
  return (c >= 0xa1 && c <= 0xbf) || c == 0xd7 || c == 0xf7;
}
// After %s the kernel wants the end of the format, a space or punctuation.
bool ends_string_spec(unsigned char c) {
  return c == 0 || k_isspace(c) || k_ispunct(c);
}

// printf_spec flags (lib/vsprintf.c).
constexpr uint8_t kLeft = 1;
constexpr uint8_t kZeroPad = 2;
constexpr uint8_t kPlus = 4;
constexpr uint8_t kSpace = 8;
constexpr int kFieldWidthMax = (1 << 23) - 1;

// One conversion as the prepare pass resolved it.
struct Spec {
  uint32_t start = 0;   // index of its '%'
  uint32_t resume = 0;  // where literal text continues (bstr_printf eats the
                        // alphanumerics after %p<x>)
  uint8_t flags = 0;
  int width = -1;    // -1: none
  char conv = 0;     // d i u x X: integer; P: hex pointer; S: symbol;
                     // s: string in bin; c: byte
  uint8_t size = 4;  // integers: 4 or 8 bytes
  uint64_t value = 0;
  uint16_t str_off = 0;  // conv 's': offset of its NUL-terminated text in bin
};

struct Prepared {
  Spec specs[kMaxBprintfVarargs];
  uint32_t num_specs = 0;
  char bin[kMaxBprintfBinArgs];
  size_t used = 0;  // bytes of bin taken, with the kernel's alignment rules
};

// Takes bytes of the argument buffer the way the kernel lays out binary
// arguments: numbers 4-byte aligned, chars packed.
int take_scalar(Prepared& p, size_t size) {
  p.used = (p.used + 3) & ~size_t{3};
  if (p.used > kMaxBprintfBinArgs || kMaxBprintfBinArgs - p.used < size) return -ENOSPC;
  p.used += size;
  return 0;
}

size_t put_hex(char* dst, uint64_t v, int min_digits, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = digits[v & 15];
    v >>= 4;
  } while (v);
  while (n < min_digits) tmp[n++] = '0';
  for (int i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
  return static_cast<size_t>(n);
}

size_t put_dec(char* dst, unsigned v, int min_digits) {
  char tmp[10];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n < min_digits) tmp[n++] = '0';
  for (int i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
  return static_cast<size_t>(n);
}

// Stores a pre-rendered string argument (%pB, %pI4, ...) in bin, cut to the
// room left like the kernel's snprintf into the same buffer.
void store_text(Prepared& p, Spec& s, const char* text, size_t len) {
  size_t room = kMaxBprintfBinArgs - std::min(p.used, kMaxBprintfBinArgs);
  s.conv = 's';
  s.str_off = static_cast<uint16_t>(std::min(p.used, kMaxBprintfBinArgs - 1));
  if (room == 0) return;  // unreachable with 12 arguments; keeps the offset valid
  size_t n = std::min(len, room - 1);
  std::memcpy(p.bin + p.used, text, n);
  p.bin[p.used + n] = '\0';
  p.used += std::min(len + 1, room);
}

// The IP forms the kernel pre-renders: I4 "1.2.3.4", i4 "001.002.003.004",
// I6 "2001:0db8:...:0001", i6 32 hex digits.
size_t render_ip(char* out, const uint8_t* ip, char kind, char family) {
  size_t n = 0;
  if (family == '4') {
    for (int i = 0; i < 4; i++) {
      if (i) out[n++] = '.';
      n += put_dec(out + n, ip[i], kind == 'i' ? 3 : 1);
    }
    return n;
  }
  for (int i = 0; i < 8; i++) {
    if (i && kind == 'I') out[n++] = ':';
    n += put_hex(out + n, static_cast<uint64_t>(ip[2 * i]) << 8 | ip[2 * i + 1], 4, false);
  }
  return n;
}

// bpf_bprintf_prepare: validates fmt[0, len) (fmt[len] is its NUL) and
// resolves every argument.
int prepare(const char* fmt, size_t len, const uint64_t* raw, uint32_t num_args, Prepared& p) {
  auto at = [&](size_t i) -> unsigned char { return static_cast<unsigned char>(fmt[i]); };
  for (size_t i = 0; i < len; i++) {
    unsigned char c = at(i);
    // Bytes >= 0x80 pass in plain text (UTF-8 literals); ASCII controls do not.
    if (k_isascii(c) && !k_isprint(c) && !k_isspace(c)) return -EINVAL;
    if (c != '%') continue;
    if (at(i + 1) == '%') {
      i++;
      continue;
    }
    if (p.num_specs >= num_args) return -EINVAL;
    Spec& s = p.specs[p.num_specs];
    s.start = static_cast<uint32_t>(i);
    const uint64_t arg = raw[p.num_specs];
    i++;
    if (!k_isascii(at(i))) return -EINVAL;
    for (;; i++) {
      if (at(i) == '0')
        s.flags |= kZeroPad;
      else if (at(i) == '+')
        s.flags |= kPlus;
      else if (at(i) == '-')
        s.flags |= kLeft;
      else if (at(i) == ' ')
        s.flags |= kSpace;
      else
        break;
    }
    if (at(i) >= '1' && at(i) <= '9') {
      long w = 0;
      while (k_isdigit(at(i))) w = std::min<long>(w * 10 + (at(i++) - '0'), kFieldWidthMax);
      s.width = static_cast<int>(w);
    }

    char str_kind = 0;  // 's', 'k' or 'u': a string argument to read
    if (at(i) == 'p') {
      size_t p_at = i;
      size_t resume = p_at + 1;
      while (k_isalnum(at(resume))) resume++;
      s.resume = static_cast<uint32_t>(resume);
      unsigned char c1 = at(i + 1);
      if (c1 == 0 || k_isspace(c1) || k_ispunct(c1)) {
        s.conv = 'P';
      } else if ((c1 == 'k' || c1 == 'u') && at(i + 2) == 's') {
        str_kind = static_cast<char>(c1);
        i += 2;
      } else if (c1 == 'K' || c1 == 'x') {
        s.conv = 'P';
        i++;
      } else if (c1 == 's' || c1 == 'S') {
        s.conv = 'S';
        i++;
      } else if (c1 == 'B') {
        char text[24] = {'0', 'x'};
        size_t n = 2 + put_hex(text + 2, arg, 1, false);
        store_text(p, s, text, n);
        i++;
        p.num_specs++;
        continue;
      } else {
        // only %pI4, %pi4, %pI6 and %pi6
        if ((c1 != 'i' && c1 != 'I') || (at(i + 2) != '4' && at(i + 2) != '6')) return -EINVAL;
        i += 2;
        const size_t ip_size = at(i) == '4' ? 4 : 16;
        if (p.used > kMaxBprintfBinArgs || kMaxBprintfBinArgs - p.used < ip_size) return -ENOSPC;
        uint8_t ip[16];
        if (copy_from_nofault(ip, reinterpret_cast<const void*>(arg), ip_size) < 0)
          std::memset(ip, 0, sizeof(ip));
        char text[48];
        size_t n = render_ip(text, ip, static_cast<char>(c1), static_cast<char>(at(i)));
        store_text(p, s, text, n);
        p.num_specs++;
        continue;
      }
      if (!str_kind) {
        s.value = arg;
        int err = take_scalar(p, sizeof(long));
        if (err) return err;
        p.num_specs++;
        continue;
      }
    } else if (at(i) == 's') {
      str_kind = 's';
      s.resume = static_cast<uint32_t>(i + 1);
    } else if (at(i) == 'c') {
      if (p.used >= kMaxBprintfBinArgs) return -ENOSPC;
      s.conv = 'c';
      s.value = static_cast<uint8_t>(arg);
      s.resume = static_cast<uint32_t>(i + 1);
      p.used++;
      p.num_specs++;
      continue;
    }

    if (str_kind) {
      if (!ends_string_spec(at(i + 1))) return -EINVAL;
      if (p.used >= kMaxBprintfBinArgs) return -ENOSPC;
      s.conv = 's';
      s.str_off = static_cast<uint16_t>(p.used);
      char* dst = p.bin + p.used;
      // 's' on a user-space address behaves as 'u' (non-overlapping address
      // spaces); every host address is a user address here.
      long n = strncpy_from_nofault(dst, reinterpret_cast<const void*>(arg),
                                    kMaxBprintfBinArgs - p.used, str_kind != 'k');
      // The kernel takes 0 bytes for an empty user string while bstr_printf
      // skips 1, shifting later arguments; one byte keeps them aligned.
      if (n <= 0) {
        dst[0] = '\0';
        n = 1;
      }
      p.used += static_cast<size_t>(n);
      p.num_specs++;
      continue;
    }

    s.size = 4;
    if (at(i) == 'l') {
      s.size = 8;
      i++;
    }
    if (at(i) == 'l') i++;
    unsigned char conv = at(i);
    if (conv != 'i' && conv != 'd' && conv != 'u' && conv != 'x' && conv != 'X') return -EINVAL;
    s.conv = static_cast<char>(conv);
    s.value = arg;
    s.resume = static_cast<uint32_t>(i + 1);
    int err = take_scalar(p, s.size);
    if (err) return err;
    p.num_specs++;
  }
  return 0;
}

// Output with vsnprintf semantics: counts everything, stores what fits.
struct Writer {
  char* buf;
  size_t cap;  // bytes that may be stored (out_size - 1)
  size_t len = 0;

  void put(char c) {
    if (len < cap) buf[len] = c;
    len++;
  }
  void repeat(char c, long n) {
    if (n <= 0) return;
    size_t count = static_cast<size_t>(n);
    if (len < cap) std::memset(buf + len, c, std::min(count, cap - len));
    len += count;
  }
  void write(const char* s, size_t n) {
    if (len < cap) std::memcpy(buf + len, s, std::min(n, cap - len));
    len += n;
  }
};

// lib/vsprintf.c number(): sign, zero or space padding, left justification.
void print_number(Writer& w, const Spec& s, uint64_t num, bool is_signed, int base, bool upper) {
  uint8_t flags = s.flags;
  if (flags & kLeft) flags &= static_cast<uint8_t>(~kZeroPad);
  long width = s.width;
  char sign = 0;
  if (is_signed) {
    if (static_cast<int64_t>(num) < 0) {
      sign = '-';
      num = 0 - num;
    } else if (flags & kPlus) {
      sign = '+';
    } else if (flags & kSpace) {
      sign = ' ';
    }
    if (sign) width--;
  }
  char digits[24];
  size_t n = 0;
  if (base == 16) {
    n = put_hex(digits, num, 1, upper);
  } else {
    char tmp[24];
    do {
      tmp[n++] = static_cast<char>('0' + num % 10);
      num /= 10;
    } while (num);
    for (size_t i = 0; i < n; i++) digits[i] = tmp[n - 1 - i];
  }
  width -= static_cast<long>(n);
  if (!(flags & (kZeroPad | kLeft))) w.repeat(' ', width);
  if (sign) w.put(sign);
  if (!(flags & kLeft) && (flags & kZeroPad)) w.repeat('0', width);
  w.write(digits, n);
  if (flags & kLeft) w.repeat(' ', width);
}

// lib/vsprintf.c string()/widen_string(): space padding only.
void print_string(Writer& w, const Spec& s, const char* str, size_t n) {
  long pad = s.width - static_cast<long>(n);
  if (!(s.flags & kLeft)) w.repeat(' ', pad);
  w.write(str, n);
  if (s.flags & kLeft) w.repeat(' ', pad);
}

void print_spec(Writer& w, const Spec& s, const Prepared& p) {
  switch (s.conv) {
    case 'd':
    case 'i':
      print_number(w, s,
                   s.size == 8 ? s.value
                               : static_cast<uint64_t>(static_cast<int64_t>(
                                     static_cast<int32_t>(static_cast<uint32_t>(s.value)))),
                   true, 10, false);
      break;
    case 'u':
    case 'x':
    case 'X':
      print_number(w, s, s.size == 8 ? s.value : static_cast<uint32_t>(s.value), false,
                   s.conv == 'u' ? 10 : 16, s.conv == 'X');
      break;
    case 'P': {
      // pointer_string(): 16 zero-padded hex digits unless a width is given.
      Spec ps = s;
      if (ps.width < 0) {
        ps.width = 16;
        ps.flags |= kZeroPad;
      }
      print_number(w, ps, s.value, false, 16, false);
      break;
    }
    case 'S': {
      char text[24] = {'0', 'x'};
      size_t n = 2 + put_hex(text + 2, s.value, 1, false);
      print_string(w, s, text, n);
      break;
    }
    case 's': {
      const char* str = p.bin + s.str_off;
      print_string(w, s, str, strnlen(str, kMaxBprintfBinArgs - s.str_off));
      break;
    }
    case 'c': {
      char c = static_cast<char>(s.value);
      print_string(w, s, &c, 1);
      break;
    }
  }
}

}  // namespace

int bprintf_format(char* out, size_t out_size, const char* fmt, size_t fmt_size,
                   const uint64_t* args, uint32_t num_args) {
  if (!fmt || num_args > kMaxBprintfVarargs) return -EINVAL;
  const void* nul = std::memchr(fmt, 0, fmt_size);
  if (!nul) return -EINVAL;
  const size_t len = static_cast<size_t>(static_cast<const char*>(nul) - fmt);

  Prepared p;
  int err = prepare(fmt, len, args, num_args, p);
  if (err) return err;

  Writer w{out, out_size ? out_size - 1 : 0};
  uint32_t next = 0;
  for (size_t i = 0; i < len;) {
    if (next < p.num_specs && i == p.specs[next].start) {
      print_spec(w, p.specs[next], p);
      i = p.specs[next].resume;
      next++;
    } else if (fmt[i] == '%') {  // validated: the only other '%' is "%%"
      w.put('%');
      i += 2;
    } else {
      w.put(fmt[i]);
      i++;
    }
  }
  if (out_size) out[std::min(w.len, out_size - 1)] = '\0';
  return static_cast<int>(std::min<size_t>(w.len, INT_MAX));
}

}  // namespace userbpf::helpers
