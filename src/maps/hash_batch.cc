// Hash map lookup_batch and lookup_and_delete_batch, bucket by bucket, with
// the kernel's semantics (hashtab.c __htab_map_lookup_and_delete_batch):
//   - elem_flags only BPF_F_LOCK, plus BPF_F_CPU for a per-CPU lookup_batch
//     (map_check_op_flags: EINVAL otherwise, ERANGE past the last CPU),
//     flags must be 0 (EINVAL), count 0 returns 0 at once;
//   - values: value_size bytes each; per-CPU maps round_up(value_size, 8) *
//     N in the host layout (percpu_maps.h), or with BPF_F_CPU one CPU's
//     value_size bytes (the kernel's strides, unlike the array's generic
//     batch, whose BPF_F_CPU stride is round_up(value_size, 8));
//   - the cursor (in_batch/out_batch) is a u32 bucket index; a cursor past
//     the last bucket returns -ENOENT with count 0 and out_batch untouched;
//   - whole buckets only: a bucket that does not fit in the remaining room
//     stops the call (-ENOSPC if nothing was copied yet, else 0), and
//     out_batch names that bucket so the next call starts with it;
//   - reaching the end returns -ENOENT with count and out_batch filled in;
//   - -EBUSY from a bucket lock (re-entry) also reports count and out_batch.
// Values are copied out without their special fields; deleted elements are
// freed for reuse after a grace period. The whole call is one read-side
// section of the map's domain. Host only.
#include <cerrno>
#include <cstring>

#include "maps/hash_map_internal.h"
#include "maps/map_internal.h"
#include "maps/percpu_maps.h"
#include "maps/special_fields.h"

namespace userbpf::maps {
namespace {

int htab_batch(Map* map, BatchArgs& args, bool do_delete) {
  HashMap* h = to_htab(map);
  const uint64_t allowed = kBpfFLock | (!do_delete && h->percpu ? kBpfFCpu : 0);
  if (int err = map_check_op_flags(map, args.elem_flags, allowed)) return err;
  if (args.flags) return -EINVAL;
  const uint64_t value_stride = h->percpu && !(args.elem_flags & kBpfFCpu)
                                    ? uint64_t{h->pcpu_size} * h->ncpus
                                    : h->value_size;
  uint32_t max_count = args.count;
  if (max_count == 0) return 0;
  args.count = 0;
  uint32_t batch = 0;
  if (args.in_batch) std::memcpy(&batch, args.in_batch, sizeof(batch));
  if (batch >= h->n_buckets) return -ENOENT;
  HtabSection sec(h);
  if (!sec.ok()) return -EBUSY;

  auto* keys = static_cast<unsigned char*>(args.keys);
  auto* values = static_cast<unsigned char*>(args.values);
  uint32_t total = 0;
  int ret = 0;
  for (;;) {
    uint32_t bucket_cnt = 0;
    if (!is_nulls(htab_first(h, batch))) {
      ret = htab_lock_bucket(h, batch);
      if (ret) break;
      uintptr_t first = htab_first(h, batch);
      for (uintptr_t p = first; !is_nulls(p);
           p = reinterpret_cast<HashElem*>(p)->next.load(std::memory_order_relaxed))
        bucket_cnt++;
      if (bucket_cnt > max_count - total) {
        if (total == 0) ret = -ENOSPC;
        htab_unlock_bucket(h, batch);
        break;
      }
      uint32_t j = total;
      for (uintptr_t p = first; !is_nulls(p); j++) {
        auto* e = reinterpret_cast<HashElem*>(p);
        copy_from_map(keys + static_cast<size_t>(j) * h->key_size, elem_key(e), h->key_size);
        unsigned char* dst = values + value_stride * j;
        if (h->percpu)
          percpu_copy_out(
              h, dst,
              PercpuCopies{static_cast<unsigned char*>(elem_value(h, e)), h->pcpu_size, h->ncpus},
              args.elem_flags);
        else if (args.elem_flags & kBpfFLock)  // under the bucket lock, as the kernel
          copy_map_value_locked(h, dst, elem_value(h, e), true);
        else
          copy_map_value_out(h, dst, elem_value(h, e), h->value_size);
        p = e->next.load(std::memory_order_relaxed);
      }
      if (do_delete && bucket_cnt) {
        // Unlink the whole chain at once; its elements keep their links, so
        // lock-free readers on them still end at this bucket's marker, and
        // so does the walk below that frees them.
        h->buckets[batch].head.store(nulls_marker(batch), std::memory_order_release);
      }
      htab_unlock_bucket(h, batch);
      if (do_delete) {
        for (uintptr_t p = first; !is_nulls(p);) {
          auto* e = reinterpret_cast<HashElem*>(p);
          p = e->next.load(std::memory_order_relaxed);
          htab_free_elem(h, sec.slot(), e);
        }
      }
    }
    total += bucket_cnt;
    batch++;
    if (batch >= h->n_buckets) {
      ret = -ENOENT;
      break;
    }
  }
  if (args.out_batch) std::memcpy(args.out_batch, &batch, sizeof(batch));
  args.count = total;
  return ret;
}

}  // namespace

int htab_map_lookup_batch(Map* map, BatchArgs& args) {
  return htab_batch(map, args, false);
}
int htab_map_lookup_and_delete_batch(Map* map, BatchArgs& args) {
  return htab_batch(map, args, true);
}

}  // namespace userbpf::maps
