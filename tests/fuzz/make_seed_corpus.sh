#!/usr/bin/env bash
# Builds the loader fuzzer's seed corpus from compiled BPF objects:
#   make_seed_corpus.sh PROGS_DIR OUT_DIR
# Each *.bpf.o is copied with its DWARF stripped (BTF and .BTF.ext kept), so
# seeds stay small and the fuzzer spends its mutations on the sections the
# loader reads; the smallest objects are also kept whole.
set -euo pipefail
progs=${1:?usage: make_seed_corpus.sh PROGS_DIR OUT_DIR}
out=${2:?usage: make_seed_corpus.sh PROGS_DIR OUT_DIR}
mkdir -p "$out"
objcopy=$(command -v llvm-objcopy-19 || command -v llvm-objcopy || true)
shopt -s nullglob
n=0
for obj in "$progs"/*.bpf.o; do
  base=$(basename "$obj" .bpf.o)
  if [ -n "$objcopy" ] && "$objcopy" --strip-debug "$obj" "$out/$base.stripped.o" 2>/dev/null; then
    n=$((n + 1))
  fi
  if [ "$(stat -c %s "$obj")" -le 16384 ] || [ -z "$objcopy" ]; then
    cp "$obj" "$out/$base.o"
    n=$((n + 1))
  fi
done
if [ "$n" -eq 0 ]; then
  echo "make_seed_corpus.sh: no BPF objects in $progs (build userbpf_test_progs first)" >&2
  exit 1
fi
echo "seed corpus: $n files in $out"
