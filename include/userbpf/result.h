// Errno-style results for the public API and the runtime: a value or an Error
// carrying a positive errno code and a human-readable message.
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>
#include <variant>

namespace userbpf {

// code is a positive errno value (EINVAL, ENOENT, ...); message says what
// failed and, where it helps, where (file, section, pc, address).
struct Error {
  int code = 0;
  std::string message;
};

// Builds an Error with a printf-style message.
[[gnu::format(printf, 2, 3)]] inline Error make_error(int code, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return Error{code, buf};
}

// Result<T>: either a T or an Error. No exceptions; check ok() before value().
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  T& operator*() { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }
  Error&& take_error() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Status: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), failed_(true) {}
  static Status Ok() { return Status(); }

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }
  Error&& take_error() { return std::move(error_); }

 private:
  Error error_;
  bool failed_ = false;
};

}  // namespace userbpf

// Propagates a failed Status/Result from the current function.
#define USERBPF_TRY(expr)                                     \
  do {                                                        \
    auto&& userbpf_try_ = (expr);                             \
    if (!userbpf_try_.ok()) return userbpf_try_.take_error(); \
  } while (0)
