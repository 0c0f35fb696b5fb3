// Programs for the host repeat loop tests (tests/api/repeat_loop_test.cc):
// the CPU slot a run holds, and a run that spins until its budget is gone
// once the host sets stop[0], so a loop of many runs ends when told to.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} stop SEC(".maps");

SEC("raw_tp")
int cpu_id(void *ctx) {
  return bpf_get_smp_processor_id();
}

// The flag is read with an atomic (fetch-or 0): the host writes it while
// runs go on, and a plain load would be a data race for ThreadSanitizer.
SEC("raw_tp")
int until_stopped(void *ctx) {
  __u32 key = 0;
  __u64 *v = bpf_map_lookup_elem(&stop, &key);
  if (v && __sync_fetch_and_or(v, 0)) {
    for (;;) asm volatile("");
  }
  return 1;
}

char LICENSE[] SEC("license") = "GPL";
