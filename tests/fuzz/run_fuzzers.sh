#!/usr/bin/env bash
# Runs the libFuzzer targets of a fuzz build for SECONDS each:
#   run_fuzzers.sh BUILD SECONDS
# BUILD was configured with -DUSERBPF_FUZZ=ON (make fuzz does this). The
# corpus grows in BUILD/fuzz/<target>/corpus across runs; crashes are saved
# in BUILD/fuzz/<target>/artifacts and make this script exit non-zero.
set -uo pipefail
build=${1:?usage: run_fuzzers.sh BUILD SECONDS}
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
status=0

run_one() {
  local target=$1 dict=$2
  local exe=$build/tests/fuzz/$target
  if [ ! -x "$exe" ]; then
    echo "run_fuzzers.sh: $exe missing (configure with -DUSERBPF_FUZZ=ON and build $target)" >&2
    return 2
  fi
  local work=$build/fuzz/$target
  mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
  bash "$here/make_seed_corpus.sh" "$build/tests/progs" "$work/seeds" || return 2
  echo "== $target for ${seconds}s"
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=32768 \
      -dict="$dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
      "$work/corpus" "$work/seeds" 2>&1 | tee "$work/last_run.log" | grep -v '^#[0-9]'
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "run_fuzzers.sh: $target failed (exit $rc); reproducer(s) in $work/artifacts:" >&2
    ls -1 "$work/artifacts" >&2
  fi
  return "$rc"
}

run_one userbpf_fuzz_loader "$here/loader.dict" || status=$?
exit "$status"
