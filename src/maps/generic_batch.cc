// Batch operations on top of single-element ops (see generic_batch.h).
#include "maps/generic_batch.h"

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "maps/map_internal.h"

namespace userbpf::maps {
namespace {

// The kernel's bpf_map_value_size: one value (8-byte aligned) with
// BPF_F_CPU / BPF_F_ALL_CPUS, else what the host passes per element.
uint32_t host_value_bytes(const Map* map, uint64_t elem_flags) {
  if (elem_flags & (kBpfFCpu | kBpfFAllCpus)) return (map->attr.value_size + 7) & ~7u;
  return map->ops->host_value_size ? map->ops->host_value_size(map) : map->attr.value_size;
}

}  // namespace

int generic_map_lookup_batch(Map* map, BatchArgs& args) {
  if (int err = map_check_op_flags(map, args.elem_flags, kBpfFLock | kBpfFCpu)) return err;
  uint32_t key_size = map->attr.key_size;
  uint32_t value_size = host_value_bytes(map, args.elem_flags);
  uint32_t max_count = args.count;
  if (max_count == 0) return 0;
  args.count = 0;

  std::vector<unsigned char> prev_buf(key_size), buf(key_size + static_cast<size_t>(value_size));
  void* prev_key = nullptr;
  if (args.in_batch) {
    std::memcpy(prev_buf.data(), args.in_batch, key_size);
    prev_key = prev_buf.data();
  }
  void* key = buf.data();
  void* value = buf.data() + key_size;
  auto* keys = static_cast<unsigned char*>(args.keys);
  auto* values = static_cast<unsigned char*>(args.values);

  int err = 0;
  uint32_t cp = 0;
  while (cp < max_count) {
    err = map->ops->get_next_key(map, prev_key, key);
    if (err) break;
    err = map->ops->lookup_elem_copy(map, key, value, args.elem_flags);
    if (err && err != -ENOENT) return err;  // kernel: count stays 0
    if (err == 0) {
      std::memcpy(keys + static_cast<size_t>(cp) * key_size, key, key_size);
      std::memcpy(values + static_cast<size_t>(cp) * value_size, value, value_size);
      cp++;
    }
    if (!prev_key) prev_key = prev_buf.data();
    std::swap(prev_key, key);
  }
  args.count = cp;
  if (cp && args.out_batch) std::memcpy(args.out_batch, prev_key, key_size);
  return err;
}

int generic_map_update_batch(Map* map, BatchArgs& args) {
  constexpr uint64_t kAllowed = kBpfFLock | kBpfFCpu | kBpfFAllCpus;
  if (int err = map_check_op_flags(map, args.elem_flags, kAllowed)) return err;
  uint32_t key_size = map->attr.key_size;
  uint32_t value_size = host_value_bytes(map, args.elem_flags);
  auto update = map->ops->update_elem_copy ? map->ops->update_elem_copy : map->ops->update_elem;
  uint32_t max_count = args.count;
  if (max_count == 0) return 0;
  args.count = 0;
  const auto* keys = static_cast<const unsigned char*>(args.keys);
  const auto* values = static_cast<const unsigned char*>(args.values);
  int err = 0;
  uint32_t cp = 0;
  for (; cp < max_count; cp++) {
    err = static_cast<int>(update(map, keys + static_cast<size_t>(cp) * key_size,
                                  values + static_cast<size_t>(cp) * value_size, args.elem_flags));
    if (err) break;
  }
  args.count = cp;
  return err;
}

int generic_map_delete_batch(Map* map, BatchArgs& args) {
  if (int err = map_check_op_flags(map, args.elem_flags, kBpfFLock)) return err;
  uint32_t key_size = map->attr.key_size;
  uint32_t max_count = args.count;
  if (max_count == 0) return 0;
  args.count = 0;
  const auto* keys = static_cast<const unsigned char*>(args.keys);
  int err = 0;
  uint32_t cp = 0;
  for (; cp < max_count; cp++) {
    err = static_cast<int>(map->ops->delete_elem(map, keys + static_cast<size_t>(cp) * key_size));
    if (err) break;
  }
  args.count = cp;
  return err;
}

int unsupported_batch(Map* map, BatchArgs& args) {
  return -kEnotsupp;
}

}  // namespace userbpf::maps
