// Copies that skip special fields, and releasing what the fields hold.
#include "maps/special_fields.h"

#include <cstring>

#include "maps/bpf_obj.h"
#include "maps/map_internal.h"
#include "maps/spin_lock.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

// Word copies need 8-byte aligned map memory: pieces between fields may start
// at any offset (after a 4-byte spin lock), so head bytes go one by one.
void copy_piece_in(unsigned char* d, const unsigned char* s, size_t n) {
  while (n && (reinterpret_cast<uintptr_t>(d) & 7)) {
    __atomic_store_n(d++, *s++, __ATOMIC_RELAXED);
    n--;
  }
  copy_to_map(d, s, n);
}

void copy_piece_out(unsigned char* d, const unsigned char* s, size_t n) {
  while (n && (reinterpret_cast<uintptr_t>(s) & 7)) {
    *d++ = __atomic_load_n(s++, __ATOMIC_RELAXED);
    n--;
  }
  copy_from_map(d, s, n);
}

}  // namespace

void copy_map_value_in(const Map* m, void* map_value, const void* src, size_t size) {
  const FieldTable* ft = map_fields(m);
  if (!ft) return copy_to_map(map_value, src, size);
  auto* d = static_cast<unsigned char*>(map_value);
  const auto* s = static_cast<const unsigned char*>(src);
  size_t at = 0;
  for (const SpecialField& f : ft->fields) {
    if (f.offset >= size) break;
    copy_piece_in(d + at, s + at, f.offset - at);
    at = f.offset + f.size;
  }
  if (at < size) copy_piece_in(d + at, s + at, size - at);
}

void copy_map_value_out(const Map* m, void* dst, const void* map_value, size_t size) {
  const FieldTable* ft = map_fields(m);
  if (!ft) return copy_from_map(dst, map_value, size);
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(map_value);
  size_t at = 0;
  for (const SpecialField& f : ft->fields) {
    if (f.offset >= size) break;
    copy_piece_out(d + at, s + at, f.offset - at);
    std::memset(d + f.offset, 0, std::min<size_t>(f.size, size - f.offset));
    at = f.offset + f.size;
  }
  if (at < size) copy_piece_out(d + at, s + at, size - at);
}

int copy_map_value_locked(const Map* m, void* dst, const void* src, bool lock_src) {
  const SpecialField* f = map_fields(m)->find(FieldKind::kSpinLock);
  const void* value = lock_src ? src : dst;
  auto* word = reinterpret_cast<uint32_t*>(static_cast<unsigned char*>(const_cast<void*>(value)) +
                                           f->offset);
  const int err = spin_lock_acquire(word, false);
  if (lock_src)
    copy_map_value_out(m, dst, src, m->attr.value_size);
  else
    copy_map_value_in(m, dst, src, m->attr.value_size);
  if (err == 0) spin_lock_release(word);
  return err;
}

void map_release_fields(Map* m, void* value) {
  const FieldTable* ft = map_fields(m);
  if (!ft) return;
  auto* v = static_cast<unsigned char*>(value);
  mem::MemDomain& d = m->attr.domain ? *m->attr.domain : mem::default_mem_domain();
  for (const SpecialField& f : ft->fields) {
    if (f.kind == FieldKind::kKptr || f.kind == FieldKind::kPercpuKptr) {
      // Emptied with one exchange, so a concurrent bpf_kptr_xchg or a second
      // release gets the object or nothing, never both.
      kptr_release(d, reinterpret_cast<uint64_t*>(v + f.offset), f.kind == FieldKind::kPercpuKptr);
      continue;
    }
    // Zeroing would release a lock a program on another thread holds.
    if (f.kind == FieldKind::kSpinLock) continue;
    // Timers and work queues are cancelled by the code that implements them
    // (a later issue); until then the field is only cleared.
    for (uint32_t i = 0; i < f.size; i++) __atomic_store_n(v + f.offset + i, 0, __ATOMIC_RELAXED);
  }
}

}  // namespace userbpf::maps
