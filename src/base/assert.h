// Graded assertions: USERBPF_ASSERT is always on (invariants whose failure
// would corrupt memory); USERBPF_DEBUG_ASSERT only in debug builds.
#pragma once

namespace userbpf {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);
}  // namespace userbpf

#define USERBPF_ASSERT(e) ((e) ? (void)0 : ::userbpf::assert_fail(#e, __FILE__, __LINE__))
#ifdef NDEBUG
#define USERBPF_DEBUG_ASSERT(e) ((void)0)
#else
#define USERBPF_DEBUG_ASSERT(e) USERBPF_ASSERT(e)
#endif
