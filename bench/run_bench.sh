#!/usr/bin/env bash
# make bench: every bench/progs program timed in the running kernel
# (bench/kernel, BPF_PROG_TEST_RUN with repeat), in userbpf's interpreter and
# JIT (`userbpf bench`), next to a native C++ baseline (bench/native); prints
# one markdown table of ns per operation with the ratios to the kernel, then
# the allocation pairs of bench/mem (bpf_obj_new + drop, glibc, jemalloc), and
# writes them with a chart to $BENCH_OUT (default BUILD/bench/results).
#
# Conventions: each program declares its operations per run with
# USERBPF_BENCH_OPS(n) (<userbpf/bpf/userbpf_bpf.h>) and returns n on success;
# both runners read n from the object's .rodata and flag r0 != n. A program
# userbpf cannot run yet carries "// bench: expect-unsupported REASON".
#
# Environment: BENCH_ROUNDS (default 5), BENCH_REPEAT (default: calibrated,
# ~20 ms a round), BENCH_OUT, BENCH_UPDATE_README=1 to rewrite README.md's
# generated performance block.
set -euo pipefail
build=${1:-build}
src=$(cd "$(dirname "$0")/.." && pwd)
out=${BENCH_OUT:-$build/bench/results}
rounds=${BENCH_ROUNDS:-5}
ub="$build/userbpf"
kb="$build/bench/kernel/userbpf_kernel_bench"
nb="$build/bench/native/userbpf_native_bench"
mkdir -p "$out"
run_args=(--rounds "$rounds")
[ -n "${BENCH_REPEAT:-}" ] && run_args+=(--repeat "$BENCH_REPEAT")

# Row order and labels; programs not listed here follow under their own names.
order=(empty array_lookup hash_lookup hash_lookup64 hash_update hash_delete_insert
       percpu_array_inc percpu_hash_lookup percpu_hash_update lru_hash_update obj_new_drop checksum fnv1a
       memcopy sieve sieve_bpf_loop alu_loop)
declare -A label=(
  [empty]="empty run (ns per run)" [array_lookup]="array lookup"
  [hash_lookup]="hash lookup, 4-byte key" [hash_lookup64]="hash lookup, 64-byte key"
  [hash_update]="hash update (existing key)" [hash_delete_insert]="hash delete + insert"
  [percpu_array_inc]="per-CPU array increment" [percpu_hash_lookup]="per-CPU hash lookup"
  [percpu_hash_update]="per-CPU hash update (existing key)"
  [lru_hash_update]="LRU hash insert (evicts)"
  [obj_new_drop]="obj new + drop" [checksum]="checksum (per byte)"
  [fnv1a]="FNV-1a (per byte)" [memcopy]="memcpy-like loop (per byte)"
  [sieve]="prime sieve (per number)"
  [sieve_bpf_loop]="prime sieve, bpf_loop callbacks (per number)"
  [alu_loop]="ALU loop (per iteration)")
names=()
for n in "${order[@]}"; do [ -f "$src/bench/progs/$n.bpf.c" ] && names+=("$n"); done
for f in "$src"/bench/progs/*.bpf.c; do
  n=$(basename "$f" .bpf.c)
  [[ " ${names[*]} " == *" $n "* ]] || names+=("$n")
done

raw="$out/raw.jsonl"
: >"$raw"
objs=()
for n in "${names[@]}"; do objs+=("$build/bench/progs/$n.bpf.o"); done

echo "bench: kernel..." >&2
if [ -x "$kb" ]; then
  "$kb" --json "${run_args[@]}" "${objs[@]}" >>"$raw"
else
  echo '{"engine":"kernel","status":"unavailable","error":"userbpf_kernel_bench not built (libbpf-dev missing)"}' >>"$raw"
fi
for engine in interp jit; do
  echo "bench: userbpf $engine..." >&2
  for n in "${names[@]}"; do
    # A load failure is one line on stderr; keep it as the row's error.
    if ! "$ub" bench "$build/bench/progs/$n.bpf.o" --engine "$engine" --json "${run_args[@]}" \
        >>"$raw" 2>"$out/err.txt"; then
      msg=$(head -c 300 "$out/err.txt" | tr '\n"\\' '   ')
      printf '{"program":"%s","engine":"%s","status":"error","error":"%s"}\n' "$n" "$engine" "$msg" >>"$raw"
    fi
  done
done
rm -f "$out/err.txt"
echo "bench: native baselines..." >&2
"$nb" >>"$raw"

expect_unsupported() {
  sed -n 's|^// bench: expect-unsupported \(.*\)|\1|p' "$src/bench/progs/$1.bpf.c" | head -1
}

# One TSV line per program: name label kernel interp jit native baseline notes.
table_tsv() {
  for n in "${names[@]}"; do
    printf '%s\t%s\t%s\n' "$n" "${label[$n]:-$n}" "$(expect_unsupported "$n")"
  done | awk -F'\t' -v raw="$raw" '
    function field(line, key,    m) {
      if (match(line, "\"" key "\":\"[^\"]*\"")) return substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 5)
      if (match(line, "\"" key "\":[-0-9.]+")) return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
      return ""
    }
    BEGIN {
      while ((getline line < raw) > 0) {
        e = field(line, "engine"); p = field(line, "program"); s = field(line, "status")
        if (e == "kernel" && p == "") { kernel_down = field(line, "error"); continue }
        key = p SUBSEP e
        status[key] = s; nsop[key] = field(line, "ns_per_op"); check[key] = field(line, "check")
        err[key] = field(line, "error"); base[key] = field(line, "baseline")
      }
    }
    function cell(key, expected,    v) {
      if (!(key in status)) return "n/a"
      if (status[key] == "ok") {
        v = nsop[key]; if (v == "") return "n/a"
        return (check[key] == "mismatch") ? v "!" : v
      }
      if (status[key] == "unavailable") return "n/a"
      if (expected != "") return "unsupported"
      return "error"
    }
    {
      n = $1; ex = $3
      k = kernel_down != "" ? "n/a" : cell(n SUBSEP "kernel", "")
      printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, $2, k, cell(n SUBSEP "interp", ex),
             cell(n SUBSEP "jit", ex), cell(n SUBSEP "native", ""), base[n SUBSEP "native"], ex
    }
    END { if (kernel_down != "") print "#kernel\t" kernel_down }'
}
tsv="$out/table.tsv"
table_tsv >"$tsv"

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
cores=$(nproc)
kernel_note=$(sed -n 's/^#kernel\t//p' "$tsv")

markdown() {
  echo "Machine: ${cpu:-unknown CPU}, $cores CPUs, Linux $(uname -r); $(date -u +%Y-%m-%d);" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg) when done (other work on the machine skews figures)."
  echo
  echo "ns per operation (median of $rounds rounds); ratios are to the kernel (lower is faster)."
  [ -n "$kernel_note" ] && echo && echo "Kernel not measured: $kernel_note."
  echo
  echo "| operation | kernel | userbpf interp | userbpf JIT | native C++ | interp/kernel | JIT/kernel | native/kernel |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  grep -v '^#' "$tsv" | awk -F'\t' '
    function num(s) { sub(/!$/, "", s); return s ~ /^[0-9.]+$/ && s + 0 > 0 }
    function fmt(s,   v) { if (!num(s)) return s; v = s; sub(/!$/, "", v); return sprintf(v + 0 < 10 ? "%.2f" : "%.1f", v) (s ~ /!$/ ? "!" : "") }
    function ratio(a, k) { if (!num(a) || !num(k)) return "-"; sub(/!$/, "", a); sub(/!$/, "", k); return sprintf("%.2fx", a / k) }
    { printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, fmt($3), fmt($4), fmt($5), fmt($6),
             ratio($4, $3), ratio($5, $3), ratio($6, $3) }'
  echo
  echo "Native baselines: $(grep -v '^#' "$tsv" | awk -F'\t' '$7 != "" { printf "%s%s: %s", sep, $1, $7; sep = "; " }')."
  echo
  unsup=$(grep -v '^#' "$tsv" | awk -F'\t' '$8 != "" { printf "%s%s (%s)", sep, $1, $8; sep = "; " }')
  [ -n "$unsup" ] && echo "Unsupported in userbpf so far: $unsup." && echo
  echo "n/a: engine not available in this build, or no baseline; a trailing ! marks r0 different from the declared op count."
}
md="$out/results.md"
markdown | tee "$md"

# Allocators next to the obj_new_drop row, on the same sizes (bench/mem,
# Google Benchmark, median CPU time of $rounds repetitions): the bodies of
# bpf_obj_new + bpf_obj_drop without an engine, the object cache's pair alone,
# glibc malloc + free and jemalloc mallocx + dallocx.
mb="$build/bench/mem/userbpf_mem_bench"
alloc_table() {
  echo
  echo "Allocation pairs, ns per alloc + free (CPU time; bpf_obj_new also zeroes the object):"
  echo
  "$mb" --benchmark_filter='^BM_(ObjNewDrop|ObjAllocFree|GlibcMallocFree|JemallocFree)/[0-9]+$' \
    --benchmark_format=csv --benchmark_repetitions="$rounds" --benchmark_min_time=0.05 \
    --benchmark_report_aggregates_only=true 2>/dev/null | awk -F, '
    $1 ~ /_median"$/ {
      name = $1; gsub(/"/, "", name); sub(/_median$/, "", name)
      split(name, part, "/"); ns[part[1], part[2]] = $4; sizes[part[2]] = 1
    }
    END {
      print "| bytes | bpf_obj_new + drop (no engine) | object cache alloc + free | glibc malloc + free | jemalloc |"
      print "|---:|---:|---:|---:|---:|"
      n = 0; for (s in sizes) list[++n] = s + 0
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (list[j] < list[i]) { t = list[i]; list[i] = list[j]; list[j] = t }
      for (i = 1; i <= n; i++) {
        s = list[i]; row = "| " s
        split("BM_ObjNewDrop BM_ObjAllocFree BM_GlibcMallocFree BM_JemallocFree", col, " ")
        for (c = 1; c <= 4; c++) row = row " | " ((col[c], s) in ns ? sprintf("%.1f", ns[col[c], s]) : "n/a")
        print row " |"
      }
    }'
}
if [ -x "$mb" ]; then
  echo "bench: allocators (bench/mem)..." >&2
  alloc_table | tee -a "$md"
else
  echo "bench: $mb not built: no allocator comparison" >&2
fi

# Chart: ns per op per engine, log scale (SVG and PNG, headless).
if command -v gnuplot >/dev/null; then
  grep -v '^#' "$tsv" | awk -F'\t' '
    function v(s) { sub(/!$/, "", s); return s ~ /^[0-9.]+$/ && s + 0 > 0 ? s : "?" }
    { printf "%s\t%s\t%s\t%s\t%s\n", $2, v($3), v($4), v($5), v($6) }' \
    >"$out/chart.dat"
  for term in svg png; do
    # A column with no figures (the JIT before it lands) is left out of the
    # plot; gnuplot warns about it, the warning is noise here.
    gnuplot 2> >(grep -v 'no valid points' >&2) <<EOF
set terminal $term size 1200,650 $( [ "$term" = png ] && echo "font ',9'")
set output "$out/results.$term"
set title "ns per operation, ${cpu:-unknown CPU} ($cores CPUs), log scale"
set datafile separator "\t"
set datafile missing "?"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [0.01:*]
set ylabel "ns/op"
set xtics rotate by -35 scale 0 noenhanced
set rmargin 12
set bmargin 9
set key top left
set grid ytics
plot "$out/chart.dat" using 2:xtic(1) title "kernel", \
     "" using 3 title "userbpf interp", "" using 4 title "userbpf JIT", "" using 5 title "native C++"
EOF
  done
  echo >&2
  echo "bench: written $md, $out/results.svg, $out/results.png, raw figures in $raw" >&2
else
  echo "bench: gnuplot not installed: no chart (scripts/install-deps.sh installs gnuplot-nox)" >&2
fi

if [ "${BENCH_UPDATE_README:-0}" = 1 ]; then
  awk -v md="$md" '
    /<!-- bench:begin -->/ { print; while ((getline l < md) > 0) print l; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0 }
    !skip' "$src/README.md" >"$out/README.new" && mv "$out/README.new" "$src/README.md"
  echo "bench: README.md performance block updated" >&2
fi

# Programs that failed without being marked expect-unsupported fail the run.
if grep -v '^#' "$tsv" | awk -F'\t' '$3 == "error" || $4 == "error" || $5 == "error" { bad = 1 } END { exit !bad }'; then
  echo "bench: some programs failed; details in $raw" >&2
  exit 1
fi
