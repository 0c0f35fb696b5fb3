// Fault-safe reads of arbitrary host addresses: the user-space form of the
// kernel's copy_from_kernel_nofault / strncpy_from_*_nofault, for the
// probe_read helpers and printf's %s. A bad address gives -EFAULT, never a
// crash.
//
// How: the kernel copies for us. process_vm_readv() on our own pid reads the
// source through the page tables and fails with EFAULT on an unmapped or
// PROT_NONE page. Where a sandbox forbids it (seccomp: EPERM/ENOSYS), the
// fallback write()s the source into a pipe, which fails the same way. Both are
// plain system calls: async-signal-safe, no locks, no allocation, errno kept.
#pragma once

#include <cstddef>
#include <cstdint>

namespace userbpf::helpers {

// Copies size bytes. 0, or -EFAULT if any source byte is unreadable (dst then
// holds an unspecified prefix; callers zero it like the kernel helpers do).
long copy_from_nofault(void* dst, const void* src, size_t size);

// Copies a NUL-terminated string into dst (count bytes of room, NUL
// included), never writing past the NUL it copies. Returns the bytes copied
// including the NUL; count when the string was cut (dst[count - 1] set to
// NUL); 0 when count is 0; -EFAULT on an unreadable byte before the NUL.
//   kernel semantics (strncpy_from_kernel_nofault): an empty string gives 1.
//   user semantics (strncpy_from_user_nofault): an empty string gives 0.
long strncpy_from_nofault(char* dst, const void* src, size_t count, bool user_semantics);

// Forces (or stops forcing) the pipe fallback, so tests can cover it on
// machines where process_vm_readv works.
void set_nofault_pipe_fallback(bool on);

}  // namespace userbpf::helpers
