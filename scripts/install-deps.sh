#!/usr/bin/env bash
# Installs the Debian 12 packages userbpf needs to build and test, or explains
# what is missing when not root.
set -euo pipefail

packages=(
  clang-19 llvm-19 lld-19 libclang-rt-19-dev   # compiler, BPF target, sanitizers, libFuzzer
  cmake ninja-build pkg-config make clang-format-19
  libelf-dev zlib1g-dev                        # ELF loader
  libbpf-dev                                   # bpf_helpers.h for test programs; kernel differential tests
  libpcap-dev                                  # userbpf run --pcap
  libgtest-dev libgmock-dev libbenchmark-dev
  libxbyak-dev                                 # JIT assembler (header-only)
  libcapstone-dev                              # prog dump --jited disassembly
  libabsl-dev gnuplot-nox                      # make bench: native hash map baseline, chart
  libjemalloc-dev                              # bench/mem: jemalloc next to the object caches
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "userbpf: these Debian packages are missing: ${missing[*]}" >&2
  echo "userbpf: run as root, or install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "userbpf: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
