// Loader test object: BTF map definitions using every supported attribute
// (numeric sizes, typed key/value, typedefs, map_flags, map_extra, pinning,
// numa_node), a static map, a named .bss.* section and a "version" section.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

typedef __u32 key_t;
struct big_val {
  __u64 words[5];
  char tail[3];
};  // 48 bytes with padding

struct {
  __uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
  __uint(value_size, 8);
  __uint(max_entries, 100);
  __uint(map_extra, 3);
} bloom SEC(".maps");

typedef struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __type(key, key_t);
  __type(value, struct big_val);
  __uint(max_entries, 16);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
  __uint(numa_node, 0);
} lru_def_t;
lru_def_t lru SEC(".maps");

static struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, char[3][5]);
  __uint(max_entries, 4);
} static_pcpu SEC(".maps");

__u64 extra_bss[3] SEC(".bss.extra");

SEC("socket")
int use_maps(void *ctx) {
  __u64 v = 1;
  __u32 k = 0;
  bpf_map_push_elem(&bloom, &v, 0);
  extra_bss[1]++;
  return bpf_map_lookup_elem(&lru, &k) != 0 || bpf_map_lookup_elem(&static_pcpu, &k) != 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
__u32 kern_version SEC("version") = 0x060c00;
