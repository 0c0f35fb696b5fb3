// Makes every TestProg in this binary run on the JIT (the tests/vm suites
// included by vm_*_on_jit_test.cc and the JIT's own tests), and brings in the
// fake helpers those suites call.
#include "../vm/fake_helpers.cc"
#include "jit_test_util.h"

namespace userbpf::test {
namespace {

[[maybe_unused]] const bool kJitEngine = (g_test_engine = &run_on_jit, true);

}  // namespace
}  // namespace userbpf::test
