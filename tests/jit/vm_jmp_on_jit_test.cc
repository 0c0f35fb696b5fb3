// The interpreter's jmp tests (tests/vm/interp_jmp_test.cc), run on the JIT.
#include "../vm/interp_jmp_test.cc"
