// The interpreter's robust tests (tests/vm/interp_robust_test.cc), run on the JIT.
#include "../vm/interp_robust_test.cc"
