#!/usr/bin/env bash
# Smoke test of the benchmark tools: `userbpf bench` and the kernel runner on
# tiny repeat counts; checks the output format, the op-count convention and
# the error paths, never the timings.
# usage: bench_smoke_test.sh BUILD_DIR
set -u
build=$1
ub="$build/userbpf"
progs="$build/bench/progs"
kb="$build/bench/kernel/userbpf_kernel_bench"
passed=0 failed=0

check() {  # check NAME CONDITION-COMMAND...
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $name"
  fi
}
matches() { grep -qE -- "$2" <<<"$1"; }
num='[0-9]+(\.[0-9]+)?'

out=$("$ub" --help)
check "help lists bench" matches "$out" "bench FILE"

out=$("$ub" bench "$progs/empty.bpf.o" --repeat 5 --rounds 2); rc=$?
check "text: exit 0" test $rc -eq 0
check "text: header" matches "$out" "^program +repeat +ns/run +spread +ops/run +ns/op +check$"
check "text: row" matches "$out" "^empty +5 +$num +$num% +1 +$num ok$"

out=$("$ub" bench "$progs/empty.bpf.o" --repeat 5 --rounds 2 --json); rc=$?
check "json: exit 0" test $rc -eq 0
check "json: one line per program" test "$(wc -l <<<"$out")" -eq 1
check "json: fields" matches "$out" \
  "^\{\"file\":\"empty.bpf.o\",\"program\":\"empty\",\"engine\":\"jit\",\"status\":\"ok\",\"repeat\":5,\"rounds\":2,\"ns_per_run\":$num,\"min\":$num,\"max\":$num,\"retval\":1,\"ops\":1,\"ns_per_op\":$num,\"check\":\"ok\"\}$"

# USERBPF_BENCH_OPS read from .rodata; the program fills its map on the
# warm-up run and returns the op count.
out=$("$ub" bench "$progs/hash_lookup.bpf.o" -p hash_lookup --repeat 2 --rounds 1 --json)
check "ops from .rodata and r0 check" matches "$out" "\"retval\":1024,\"ops\":1024,\"ns_per_op\":$num,\"check\":\"ok\""

# Without the declaration: ns per run only.
api="$build/tests/progs/api_basic.bpf.o"
if [ -f "$api" ]; then
  out=$("$ub" bench "$api" -p xdp_len --repeat 2 --rounds 1 --json)
  check "no declared ops: no ns_per_op" matches "$out" "\"status\":\"ok\".*\"retval\":[0-9]+\}$"
  out=$("$ub" bench "$api" -p xdp_len --repeat 2 --rounds 1)
  check "no declared ops: text n/a" matches "$out" "^xdp_len +2 +$num +$num% +0 +n/a -$"
fi

# The JIT: numbers once it lands, n/a until then; never an error.
out=$("$ub" bench "$progs/empty.bpf.o" --engine jit --repeat 2 --rounds 1 --json); rc=$?
check "jit: exit 0" test $rc -eq 0
check "jit: ok or unavailable" matches "$out" "\"engine\":\"jit\",\"status\":\"(ok|unavailable)\""

# Errors.
"$ub" bench "$progs/empty.bpf.o" -p no_such_prog >/dev/null 2>&1
check "unknown program: exit 1" test $? -eq 1
err=$("$ub" bench "$progs/percpu_array_inc.bpf.o" 2>&1 >/dev/null); rc=$?
if [ $rc -ne 0 ]; then  # until PERCPU_ARRAY lands
  check "unloadable object: message" matches "$err" "percpu"
fi
"$ub" bench "$progs/empty.bpf.o" --repeat 0 >/dev/null 2>&1
check "repeat 0 refused" test $? -ne 0
"$ub" bench "$progs/empty.bpf.o" --engine fast >/dev/null 2>&1
check "unknown engine refused" test $? -ne 0

# The kernel runner: same line format, or one "unavailable" line; exit 0.
if [ -x "$kb" ]; then
  out=$("$kb" --json --repeat 2 --rounds 1 "$progs/empty.bpf.o"); rc=$?
  check "kernel: exit 0" test $rc -eq 0
  if matches "$out" '"status":"unavailable"'; then
    echo "kernel runner: $out"
  else
    check "kernel: fields" matches "$out" \
      "^\{\"file\":\"empty.bpf.o\",\"program\":\"empty\",\"engine\":\"kernel\",\"status\":\"ok\",\"repeat\":2,\"rounds\":1,\"ns_per_run\":$num,\"min\":$num,\"max\":$num,\"retval\":1,\"ops\":1,\"ns_per_op\":$num,\"check\":\"ok\"\}$"
    out=$("$kb" --json --repeat 2 --rounds 1 "$progs/hash_lookup.bpf.o")
    check "kernel: ops and r0 check" matches "$out" "\"retval\":1024,\"ops\":1024,\"ns_per_op\":$num,\"check\":\"ok\""
  fi
fi

echo "bench smoke: $passed passed, $failed failed"
[ $failed -eq 0 ]
