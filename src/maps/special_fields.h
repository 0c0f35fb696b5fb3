// Special fields of map values: kptrs (bpf_kptr_xchg), bpf_spin_lock
// (spin_lock.h), and later bpf_timer and bpf_wq. The loader finds them in the
// value's BTF and hands the map a FieldTable at creation (MapAttr::fields);
// maps then (1) never let a copy from or to the host touch them (user space
// cannot plant a pointer a program would follow, nor overwrite a lock word a
// program holds, and sees zeros where they are), and (2) release what they
// hold when the value is overwritten by an update, its element is deleted, or
// the map is freed (the kernel's bpf_obj_free_fields; a spin lock holds
// nothing and is left alone). A new hash element starts with zeroed fields
// (the kernel's check_and_init_map_value).
//
// Invariants: fields are sorted by offset, do not overlap, and lie inside
// value_size; a FieldTable is immutable once the map holds it.
// Contexts: the copies and map_release_fields run anywhere a map operation
// runs (programs, signal handlers, host); they never block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "maps/map.h"

namespace userbpf::maps {

enum class FieldKind : uint8_t {
  kKptr,        // 8-byte pointer to a bpf_obj_new object (__kptr)
  kPercpuKptr,  // 8-byte pointer to a bpf_percpu_obj_new object (__percpu_kptr)
  kSpinLock,    // struct bpf_spin_lock (4 bytes)
  kTimer,       // struct bpf_timer (16 bytes)
  kWorkqueue,   // struct bpf_wq (16 bytes)
};

struct SpecialField {
  FieldKind kind;
  uint32_t offset;  // bytes from the value start
  uint32_t size;
  // kKptr/kPercpuKptr: usable bytes of the pointee (from BTF), 0 if unknown.
  uint32_t obj_size = 0;
};

struct FieldTable {
  std::vector<SpecialField> fields;  // sorted by offset
  bool has(FieldKind k) const {
    for (const SpecialField& f : fields)
      if (f.kind == k) return true;
    return false;
  }
  const SpecialField* find(FieldKind k) const {
    for (const SpecialField& f : fields)
      if (f.kind == k) return &f;
    return nullptr;
  }
};

inline const FieldTable* map_fields(const Map* m) {
  return m->attr.fields.get();
}

// Host value -> map value (size bytes, usually value_size), leaving special
// fields as they are. Word copies as copy_to_map (map_internal.h).
void copy_map_value_in(const Map* m, void* map_value, const void* src, size_t size);
// Map value -> host buffer, with zeros where special fields are.
void copy_map_value_out(const Map* m, void* dst, const void* map_value, size_t size);

// The kernel's copy_map_value_locked for BPF_F_LOCK: copy_map_value_in
// (lock_src false: the lock is dst's) or copy_map_value_out (lock_src true:
// src's) of value_size bytes, under the value's bpf_spin_lock, waiting for
// it as long as it takes. The map must have a spin lock and the caller must
// have passed map_check_lock_flag, so this thread holds none; 0, or the
// error of a lock word that holds this thread's own token (a program wrote
// it), in which case the copy is made without the lock.
int copy_map_value_locked(const Map* m, void* dst, const void* src, bool lock_src);

// Releases what the special fields of value hold (drops kptr objects, later
// cancels timers) and zeroes them; a bpf_spin_lock is left as it is (a
// program may hold it). No-op for a map without fields.
void map_release_fields(Map* m, void* value);

}  // namespace userbpf::maps
