// The interpreter's call tests (tests/vm/interp_call_test.cc), run on the JIT.
#include "../vm/interp_call_test.cc"
