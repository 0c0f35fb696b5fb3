// The interpreter's alu tests (tests/vm/interp_alu_test.cc), run on the JIT.
#include "../vm/interp_alu_test.cc"
