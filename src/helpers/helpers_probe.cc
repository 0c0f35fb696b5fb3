// Memory probe helpers: bpf_probe_read{,_user,_kernel}{,_str}. They read any
// host address without crashing (nofault.h); on failure the destination is
// zeroed and -EFAULT returned, like the kernel.
//
// One address space: userbpf has no kernel addresses, so the _kernel and
// _user forms read the same memory. They keep the kernel's string-length
// conventions: _kernel_str counts an empty string as 1 byte, _user_str as 0.
// The legacy forms (bpf_probe_read, bpf_probe_read_str) behave, on x86, as the
// _user forms for user-space addresses, which every host address is.
#include <cerrno>
#include <cstring>

#include "helpers/helper_fns.h"
#include "helpers/nofault.h"

namespace userbpf::helpers {
namespace {

void* dst_ptr(u64 v) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(v));
}
const void* src_ptr(u64 v) {
  return reinterpret_cast<const void*>(static_cast<uintptr_t>(v));
}

u64 probe_read_common(u64 dst, u64 size, u64 unsafe_ptr) {
  const auto n = static_cast<uint32_t>(size);
  long ret = copy_from_nofault(dst_ptr(dst), src_ptr(unsafe_ptr), n);
  if (ret < 0) std::memset(dst_ptr(dst), 0, n);
  return static_cast<u64>(ret);
}

u64 probe_read_str_common(u64 dst, u64 size, u64 unsafe_ptr, bool user) {
  const auto n = static_cast<uint32_t>(size);
  long ret = strncpy_from_nofault(static_cast<char*>(dst_ptr(dst)), src_ptr(unsafe_ptr), n, user);
  if (ret < 0) std::memset(dst_ptr(dst), 0, n);
  return static_cast<u64>(ret);
}

}  // namespace

u64 bpf_probe_read(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_common(dst, size, unsafe_ptr);
}

u64 bpf_probe_read_user(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_common(dst, size, unsafe_ptr);
}

u64 bpf_probe_read_kernel(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_common(dst, size, unsafe_ptr);
}

u64 bpf_probe_read_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_str_common(dst, size, unsafe_ptr, true);
}

u64 bpf_probe_read_user_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_str_common(dst, size, unsafe_ptr, true);
}

u64 bpf_probe_read_kernel_str(u64 dst, u64 size, u64 unsafe_ptr, u64, u64) {
  return probe_read_str_common(dst, size, unsafe_ptr, false);
}

}  // namespace userbpf::helpers
