#!/usr/bin/env bash
# make demo: the flowcount example over a generated stream of packets, then
# the same object through the CLI.
set -euo pipefail
build=${1:-build}
echo "== flowcount: per-flow packet and byte counts from an XDP program =="
"$build/examples/flowcount" --object "$build/examples/flowcount.bpf.o" --packets "${DEMO_PACKETS:-2000000}"
echo
echo "== userbpf prog list =="
"$build/userbpf" prog list "$build/examples/flowcount.bpf.o"
