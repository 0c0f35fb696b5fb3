// The interpreter's mem tests (tests/vm/interp_mem_test.cc), run on the JIT.
#include "../vm/interp_mem_test.cc"
