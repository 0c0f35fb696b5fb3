// BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_LRU_HASH: their ops tables, and hooks
// tests use to reach the races the maps must survive.
#pragma once

#include <cstdint>

#include "maps/map.h"

namespace userbpf::maps {

extern const MapOps kHashMapOps;
extern const MapOps kLruHashMapOps;

namespace testing {

// Called by update_elem right after it takes a bucket lock (nullptr: none).
// Lets a test raise a signal on the same thread inside the locked window.
using BucketLockedHook = void (*)(Map* map);
void set_bucket_locked_hook(BucketLockedHook hook);

// The reuse counter of the element holding this value pointer (from
// lookup_elem): it changes whenever the element is recycled.
uint32_t elem_seq_of_value(const Map* map, const void* value);
// The bucket and lock group (kernel: hash & min(7, n_buckets - 1)) of a key.
uint32_t bucket_of_key(const Map* map, const void* key);
uint32_t lock_group_of_key(const Map* map, const void* key);
uint32_t n_buckets(const Map* map);
// LRU maps: inserts so far that reused an evicted element at once because
// no element was ready (lru_list.h); readers may then see another key's
// bytes where they looked one up.
uint64_t lru_reused_at_once(const Map* map);

}  // namespace testing
}  // namespace userbpf::maps
