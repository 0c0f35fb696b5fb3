// Helpers for map tests: creating maps from a few attributes and calling the
// ops with typed keys and values.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "maps/map.h"
#include "maps/registry.h"

namespace userbpf::maps::test {

inline MapAttr make_attr(MapType type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                         uint32_t map_flags = 0) {
  MapAttr a;
  a.type = static_cast<uint32_t>(type);
  a.key_size = key_size;
  a.value_size = value_size;
  a.max_entries = max_entries;
  a.map_flags = map_flags;
  a.name = "test_map";
  return a;
}

// Creates a map; fails the test (and returns null) on error.
inline MapPtr must_create(const MapAttr& attr) {
  auto r = create_map(attr);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return MapPtr(r.ok() ? r.value() : nullptr);
}

// errno of a failed create_map, 0 on success (the map is destroyed).
inline int create_errno(const MapAttr& attr, std::string* message = nullptr) {
  auto r = create_map(attr);
  if (r.ok()) {
    destroy_map(r.value());
    return 0;
  }
  if (message) *message = r.error().message;
  return r.error().code;
}

template <class K, class V>
long update(Map* m, K key, V value, uint64_t flags = 0) {
  return m->ops->update_elem(m, &key, &value, flags);
}

template <class K>
long erase(Map* m, K key) {
  return m->ops->delete_elem(m, &key);
}

template <class K, class V>
int lookup(Map* m, K key, V* value, uint64_t flags = 0) {
  return m->ops->lookup_elem_copy(m, &key, value, flags);
}

}  // namespace userbpf::maps::test
