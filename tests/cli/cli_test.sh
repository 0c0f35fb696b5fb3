#!/usr/bin/env bash
# End-to-end tests of the userbpf command line: prog list/dump, run with a
# context blob, a packet and a pcap capture (verdict counts, --json, --maps),
# map show/dump, exec (the conformance plugin protocol), and the errors a
# user sees for bad input.
# usage: cli_test.sh USERBPF PROGS_DIR FLOWCOUNT_OBJ
set -u
ub=$1 progs=$2 flow=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
contains() { grep -qF -- "$2" <<<"$1"; }

# A pcap (little-endian, Ethernet) with two IPv4/TCP packets of one flow and
# one ARP packet, written byte by byte.
le32() {
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) \
    $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}
tcp_pkt='\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00'\
'\x45\x00\x00\x28\x00\x01\x00\x00\x40\x06\x00\x00\x0a\x00\x00\x01\x0a\x00\x00\x02'\
'\x30\x39\x01\xbb\x00\x00\x00\x00\x00\x00\x00\x00\x50\x02\x20\x00\x00\x00\x00\x00'
arp_pkt='\xff\xff\xff\xff\xff\xff\x66\x77\x88\x99\xaa\xbb\x08\x06'\
'\x00\x01\x08\x00\x06\x04\x00\x01\x66\x77\x88\x99\xaa\xbb\x0a\x00\x00\x01'\
'\x00\x00\x00\x00\x00\x00\x0a\x00\x00\x02'
{
  printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00'; le32 0; le32 0; le32 65535; le32 1
  for p in "$tcp_pkt" "$tcp_pkt" "$arp_pkt"; do
    len=$(printf "$p" | wc -c)
    le32 1; le32 0; le32 "$len"; le32 "$len"; printf "$p"
  done
} >"$tmp/cap.pcap"

out=$("$ub" --help); rc=$?
check "help exits 0" test $rc -eq 0
check "help lists run" contains "$out" "run FILE -p NAME"

out=$("$ub" prog list "$flow"); rc=$?
check "prog list exits 0" test $rc -eq 0
check "prog list names the program" contains "$out" "count_flows"
check "prog list names the map" contains "$out" "flows"

out=$("$ub" prog dump "$flow" -p count_flows)
check "prog dump disassembles" contains "$out" "exit"
check "prog dump names helpers" contains "$out" "bpf_map_lookup_elem"

out=$("$ub" run "$flow" --pcap "$tmp/cap.pcap" --maps); rc=$?
check "run --pcap exits 0" test $rc -eq 0
check "run --pcap counts packets" contains "$out" "3 packets"
check "run --pcap counts verdicts" grep -Eq "XDP_PASS +3" <<<"$out"
check "run --maps shows the flow's 2 packets" contains "$out" "value: 02 00 00 00 00 00 00 00 6c"

out=$("$ub" run "$flow" --pcap "$tmp/cap.pcap" --json --maps)
check "run --pcap --json" contains "$out" '"verdicts":{"XDP_PASS":3}'
check "run --json maps" contains "$out" '"maps":{"flows":[{'

pkt=$(printf "$tcp_pkt" | od -An -tx1 | tr -d ' \n')
out=$("$ub" run "$flow" -p count_flows --packet "$pkt" --repeat 5 --json)
check "run --packet --repeat" contains "$out" '"retval":2,'
check "run --packet verdict" contains "$out" '"verdict":"XDP_PASS"'

out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --data 050 2>&1); rc=$?
check "odd-length --data rejected" test $rc -ne 0
out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --data 05000000030000000000000000000000 --json)
check "run --data returns r0" contains "$out" '"retval":6,'
check "run --data returns the context" contains "$out" '"ctx_out":"0500000003000000'

out=$("$ub" run "$progs/api_basic.bpf.o" -p null_deref 2>&1); rc=$?
check "faulting program exits 1" test $rc -eq 1
check "fault names pc and address" contains "$out" "pc 1: null pointer load of 8 bytes at 0x10"

out=$("$ub" run "$progs/api_basic.bpf.o" 2>&1); rc=$?
check "ambiguous program asks for -p" contains "$out" "choose one with -p"
out=$("$ub" run /nonexistent.bpf.o -p x 2>&1); rc=$?
check "missing file exits 1" test $rc -eq 1
check "missing file is named" contains "$out" "/nonexistent.bpf.o"
head -c 100 "$flow" >"$tmp/trunc.o"
out=$("$ub" prog list "$tmp/trunc.o" 2>&1); rc=$?
check "truncated ELF rejected" test $rc -eq 1
check "truncated ELF message" contains "$out" "trunc.o"
out=$("$ub" run "$flow" --engine warp 2>&1); rc=$?
check "unknown engine rejected" contains "$out" "unknown engine"

out=$("$ub" map show "$progs/api_basic.bpf.o")
check "map show lists memory" grep -Eq "squares .*memory [0-9]+ bytes" <<<"$out"
check "map show lists the limit" grep -Eq "squares .*memory [0-9]+ bytes limit none" <<<"$out"
out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --data 05000000030000000000000000000000 \
  --map-memory-limit squares=1000000 --maps 2>&1); rc=$?
check "--map-memory-limit with room runs" test $rc -eq 0
check "--map-memory-limit keeps updates" contains "$out" "value: 04 00 00 00 00 00 00 00 (4)"
out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --data 05000000030000000000000000000000 \
  --map-memory-limit squares=4096 2>&1); rc=$?
check "--map-memory-limit too small fails load" test $rc -eq 1
check "--map-memory-limit failure names map and limit" grep -Eq "squares.*memory_limit 4096" <<<"$out"
out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --map-memory-limit nosuch=5 2>&1); rc=$?
check "--map-memory-limit unknown map" contains "$out" "no map named nosuch"
out=$("$ub" run "$progs/api_basic.bpf.o" -p compute --map-memory-limit squares 2>&1); rc=$?
check "--map-memory-limit needs NAME=BYTES" contains "$out" "NAME=BYTES"
out=$("$ub" map dump "$progs/api_basic.bpf.o" -m .data --json)
check "map dump --json" contains "$out" '"name":".data"'

out=$(echo 'b7 00 00 00 2a 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec); rc=$?
check "exec prints r0 in hex" test "$out" = "2a"
out=$(echo '71 10 01 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec "05 07")
check "exec passes memory in r1" test "$out" = "7"
out=$(echo 'bf 20 00 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec "01 02 03")
check "exec passes the size in r2" test "$out" = "3"
out=$(echo 'ff 00 00 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec 2>&1); rc=$?
check "exec rejects an invalid opcode" test $rc -ne 0
out=$(echo '71 10 40 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec "05" 2>&1); rc=$?
check "exec reports a fault" test $rc -ne 0
for engine in interp jit; do
  out=$(echo '71 10 01 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec --engine $engine "05 07")
  check "exec --engine $engine runs the program" test "$out" = "7"
  out=$(echo '71 10 40 00 00 00 00 00 95 00 00 00 00 00 00 00' | "$ub" exec --engine $engine "05" 2>&1); rc=$?
  check "exec --engine $engine reports a fault" test $rc -ne 0
done
out=$("$ub" exec --engine nope </dev/null 2>&1); rc=$?
check "exec rejects an unknown engine" test $rc -ne 0

# Per-CPU maps: map dump shows each CPU's copy and the sum over CPUs.
out=$("$ub" map dump "$progs/percpu_maps.bpf.o" -m pcpu_array); rc=$?
check "map dump per-CPU exits 0" test $rc -eq 0
check "map dump per-CPU names the CPUs" grep -Eq "map pcpu_array \(percpu_array, [0-9]+ CPUs\)" <<<"$out"
check "map dump per-CPU prints each copy" contains "$out" "    cpu 0: 00 00 00 00 00 00 00 00 (0)"
check "map dump per-CPU prints the sum" contains "$out" "    sum: 0"
out=$("$ub" map dump "$progs/percpu_maps.bpf.o" -m pcpu_array --json)
check "map dump per-CPU --json copies" contains "$out" '"values":[{"cpu":0,"value":"0000000000000000","value_u64":0}'
check "map dump per-CPU --json sum" contains "$out" '"sum":0}'
check "map dump per-CPU --json num_cpus" grep -Eq '"num_cpus":[0-9]+' <<<"$out"
# run --maps prints per-CPU maps the same way: 5 increments of key 3.
out=$("$ub" run "$progs/percpu_maps.bpf.o" -p count --data 03000000000000000500000000000000 \
  --maps); rc=$?
check "run --maps per-CPU exits 0" test $rc -eq 0
check "run --maps per-CPU prints each copy" contains "$out" "    cpu 0: "
check "run --maps per-CPU sums the copies" contains "$out" "    sum: 5"
out=$("$ub" map show "$progs/percpu_maps.bpf.o")
check "map show per-CPU hash" grep -Eq "pcpu_hash .*type percpu_hash .*memory [0-9]+ bytes" <<<"$out"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
