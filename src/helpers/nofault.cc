// Fault-safe reads through process_vm_readv (or a pipe where that is
// forbidden); see nofault.h.
#include "helpers/nofault.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace userbpf::helpers {
namespace {

constexpr uintptr_t kPageSize = 4096;  // chunking granularity only; any page size works

// Helpers can interrupt code between a failing call and its errno check (signal
// handlers): leave errno as we found it.
class ErrnoGuard {
 public:
  ErrnoGuard() : saved_(errno) {}
  ~ErrnoGuard() { errno = saved_; }

 private:
  int saved_;
};

// Set once process_vm_readv is known not to work here (seccomp, old kernel).
std::atomic<bool> g_use_pipe{false};

// The copies go through raw system calls: reading memory the caller has not
// vouched for is the point here, so sanitizer interceptors of write() must
// not judge the source range (string reads run on to the end of a page).
ssize_t sys_write(int fd, uintptr_t src, size_t n) {
  return ::syscall(SYS_write, static_cast<long>(fd), src, n);
}
ssize_t sys_read(int fd, void* dst, size_t n) {
  return ::syscall(SYS_read, static_cast<long>(fd), dst, n);
}

// Reads up to n bytes through a pipe: write() faults cleanly on a bad source.
// Returns the bytes read (a prefix, possibly short) or -1.
ssize_t read_via_pipe(void* dst, uintptr_t src, size_t n) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
  size_t done = 0;
  while (done < n) {
    size_t chunk = std::min<size_t>(n - done, kPageSize);
    ssize_t w = sys_write(fds[1], src + done, chunk);
    if (w <= 0) break;
    ssize_t r = sys_read(fds[0], static_cast<char*>(dst) + done, static_cast<size_t>(w));
    if (r != w) break;
    done += static_cast<size_t>(w);
    if (static_cast<size_t>(w) < chunk) break;  // the next byte is unreadable
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return done == 0 && n != 0 ? -1 : static_cast<ssize_t>(done);
}

// Reads up to n bytes of our own address space at src. Returns the number of
// bytes read (a prefix, short when a fault cuts it) or -1.
ssize_t read_some(void* dst, uintptr_t src, size_t n) {
  if (!g_use_pipe.load(std::memory_order_relaxed)) {
    iovec local{dst, n};
    iovec remote{reinterpret_cast<void*>(src), n};
    // syscall() is variadic: pass every argument at its full register width.
    ssize_t got = ::syscall(SYS_process_vm_readv, static_cast<long>(::getpid()), &local, 1ul,
                            &remote, 1ul, 0ul);
    if (got >= 0) return got;
    if (errno != EPERM && errno != ENOSYS) return -1;
    g_use_pipe.store(true, std::memory_order_relaxed);
  }
  return read_via_pipe(dst, src, n);
}

}  // namespace

void set_nofault_pipe_fallback(bool on) {
  g_use_pipe.store(on, std::memory_order_relaxed);
}

long copy_from_nofault(void* dst, const void* src, size_t size) {
  if (size == 0) return 0;
  ErrnoGuard guard;
  auto addr = reinterpret_cast<uintptr_t>(src);
  if (addr + size < addr) return -EFAULT;
  ssize_t got = read_some(dst, addr, size);
  return got == static_cast<ssize_t>(size) ? 0 : -EFAULT;
}

long strncpy_from_nofault(char* dst, const void* src, size_t count, bool user_semantics) {
  if (count == 0) return 0;
  ErrnoGuard guard;
  auto addr = reinterpret_cast<uintptr_t>(src);
  // Bounce through the stack so nothing past the NUL reaches dst; chunks stop
  // at page ends so a string ending just before an unmapped page is fine.
  char bounce[256];
  size_t done = 0;
  while (done < count) {
    uintptr_t at = addr + done;
    if (at < addr) return -EFAULT;
    size_t chunk = std::min({count - done, sizeof(bounce), kPageSize - (at & (kPageSize - 1))});
    ssize_t got = read_some(bounce, at, chunk);
    if (got <= 0) return -EFAULT;
    const void* nul = std::memchr(bounce, 0, static_cast<size_t>(got));
    if (nul) {
      size_t n = static_cast<size_t>(static_cast<const char*>(nul) - bounce) + 1;
      std::memcpy(dst + done, bounce, n);
      done += n;
      // strncpy_from_user counts characters before the NUL and the nofault
      // wrapper adds one only when that count is positive.
      if (user_semantics && done == 1) return 0;
      return static_cast<long>(done);
    }
    std::memcpy(dst + done, bounce, static_cast<size_t>(got));
    done += static_cast<size_t>(got);
  }
  dst[count - 1] = '\0';
  return static_cast<long>(count);
}

}  // namespace userbpf::helpers
