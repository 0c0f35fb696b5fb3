#!/usr/bin/env bash
# make bench: runs the BPF micro-benchmarks in the interpreter and prints ns
# per operation. Each benchmark program returns the number of operations one
# run performed (r0), so ns/op = mean ns per run / r0. For the ALU loop the
# instructions per iteration are read off the disassembly (the loop's
# back-edge), giving ns per instruction.
set -euo pipefail
build=${1:-build}
ub="$build/userbpf"
progs="$build/bench/progs"
repeat=${BENCH_REPEAT:-50}
rounds=${BENCH_ROUNDS:-5}

# best_ns FILE PROG: the lowest mean ns per run over $rounds rounds, and r0.
best_ns() {
  local best="" r0=""
  for _ in $(seq "$rounds"); do
    local out ns
    out=$("$ub" run "$1" -p "$2" --repeat "$repeat" --json)
    ns=$(sed -n 's/.*"ns_per_run":\([0-9]*\).*/\1/p' <<<"$out")
    r0=$(sed -n 's/.*"retval":\([0-9]*\).*/\1/p' <<<"$out")
    if [ -z "$best" ] || [ "$ns" -lt "$best" ]; then best=$ns; fi
  done
  echo "$best $r0"
}

# Instructions in the loop closed by the last backward jump of a program.
loop_insns() {
  "$ub" prog dump "$1" -p "$2" | awk '
    /goto -0x/ {
      pc = $1; sub(":", "", pc)
      match($0, /goto -0x[0-9a-f]+/); off = substr($0, RSTART + 8, RLENGTH - 8)
      n = 0; for (i = 1; i <= length(off); i++) n = n * 16 + index("0123456789abcdef", substr(off, i, 1)) - 1
      body = n
    }
    END { print body }'
}

printf "%-28s %12s %12s %s\n" "benchmark" "ns/run" "ops/run" "ns/op"
read -r ns ops < <(best_ns "$progs/alu_loop.bpf.o" alu_loop)
body=$(loop_insns "$progs/alu_loop.bpf.o" alu_loop)
awk -v ns="$ns" -v ops="$ops" -v body="$body" 'BEGIN {
  printf "%-28s %12d %12d %.3f ns/iteration, %d insns/iteration: %.3f ns/insn\n",
         "alu_loop (interpreter)", ns, ops, ns / ops, body, ns / ops / body }'
read -r ns ops < <(best_ns "$progs/hash_lookup.bpf.o" hash_lookup)
awk -v ns="$ns" -v ops="$ops" 'BEGIN {
  printf "%-28s %12d %12d %.2f ns/lookup (incl. loop overhead)\n",
         "hash_lookup u32, 1024 ent.", ns, ops, ns / ops }'

echo
echo "Interpreter on hand-assembled loops:"
"$build/bench/userbpf_interp_bench" | grep 'ns per instruction'
