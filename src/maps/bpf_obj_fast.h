// The state word of program-allocated objects and the fast paths of
// bpf_obj_new / bpf_obj_drop, inline for the engines' dispatch (the
// interpreter calls them from its fused obj calls) and for bpf_obj.cc,
// which holds the slow paths. Layout and invariants: bpf_obj.h.
//
// Contexts: as bpf_obj.h (the caller holds slot of the domain's table).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#include "maps/bpf_obj.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace objw {

// The process secret the tags derive from (bpf_obj.cc; set before main).
extern const uint64_t g_obj_secret;

// State word: bits 0-12 size, 13 published, 14-15 state, 16-31 the slot
// of the run owning the object (kOwned), 32-63 tag.
constexpr uint64_t kStOwned = 1;
constexpr uint64_t kStInMap = 2;
constexpr uint64_t kStFree = 3;
constexpr uint64_t kSizeMask = 0x1fff;
constexpr uint64_t kPublished = 1u << 13;
constexpr uint64_t kStateMask = uint64_t{3} << 14;
constexpr uint64_t kSlotMask = uint64_t{0xffff} << 16;
static_assert(kSlotMask == uint64_t{0xffff} << kObjSlotShift);

inline uint64_t tag_of(const mem::MemAlloc* ma) {
  uint64_t h = (g_obj_secret ^ reinterpret_cast<uintptr_t>(ma)) * 0x9e3779b97f4a7c15ull;
  return ((h >> 32) | 1) << 32;
}
inline uint64_t make_state(const mem::MemAlloc* ma, uint64_t st, uint32_t size) {
  return tag_of(ma) | st << 14 | size;
}
inline uint64_t state_of(uint64_t w) {
  return (w >> 14) & 3;
}
inline uint32_t size_of(uint64_t w) {
  return static_cast<uint32_t>(w & kSizeMask);
}
inline uint64_t owned_by(uint64_t w, int slot) {
  return (w & ~(kStateMask | kSlotMask)) | kStOwned << 14 | uint64_t(uint16_t(slot)) << 16;
}
inline uint64_t with_state(uint64_t w, uint64_t st) {
  return (w & ~(kStateMask | kSlotMask)) | st << 14;
}
// Whether w says "owned by the run holding slot": only that run (one at a
// time per slot) may move such an object on, so its transitions need no
// atomic read-modify-write.
inline bool owned_by_slot(uint64_t w, int slot) {
  return state_of(w) == kStOwned && ((w & kSlotMask) >> 16) == uint64_t(uint16_t(slot));
}
inline bool tag_ok(const mem::MemAlloc* ma, uint64_t w) {
  return (w & ~uint64_t{0xffffffff}) == tag_of(ma);
}
inline std::atomic<uint64_t>& state_word(uintptr_t o) {
  return *reinterpret_cast<std::atomic<uint64_t>*>(o);
}

// Zeroes an object's data (size bytes after the state word). Small objects
// get the whole data area of their class in a few stores (constant sizes,
// no call): up to 16 bytes the class is 32 (16 data bytes), up to 48 it is
// 64 (48 data bytes).
[[gnu::always_inline]] inline void zero_data(char* data, uint32_t size) {
  if (size <= 16) [[likely]]
    std::memset(data, 0, 16);
  else if (size <= 48)
    std::memset(data, 0, 48);
  else
    std::memset(data, 0, size);
}

// A fresh object o of d.global_ma: zeroed, owned by slot; its data pointer.
[[gnu::always_inline]] inline void* init_obj(mem::MemDomain& d, char* o, uint32_t size, int slot) {
  zero_data(o + 8, size);
  state_word(reinterpret_cast<uintptr_t>(o))
      .store(owned_by(make_state(&d.global_ma, kStOwned, size), slot), std::memory_order_relaxed);
  return o + 8;
}

// Records object p of class cls in memo (if any).
[[gnu::always_inline]] inline void* remember(ObjMemo* memo, void* p, uint32_t cls) {
  if (memo) {
    const uint32_t i = memo->next++ % ObjMemo::kEntries;
    memo->ptr[i] = reinterpret_cast<uintptr_t>(p);
    memo->cls[i] = static_cast<uint8_t>(cls);
  }
  return p;
}

// The drop of object o of class cls of ma, whose state word w says the
// caller's run (holding slot) owns it: kFree, then back to the allocator,
// after a grace period if it was ever in a map. bpf_obj_drop and the sweep
// of a stopped run both end here.
[[gnu::always_inline]] inline void drop_owned(mem::MemAlloc& ma, uintptr_t o, uint64_t w, int slot,
                                              uint32_t cls) {
  state_word(o).store(with_state(w, kStFree), std::memory_order_relaxed);
  if (w & kPublished) [[unlikely]]
    ma.free_rcu(slot, reinterpret_cast<void*>(o));
  else if (!ma.try_free_class(slot, cls, reinterpret_cast<void*>(o))) [[unlikely]]
    ma.free_class(slot, cls, reinterpret_cast<void*>(o));
}

// Whether w says the run holding slot owns the object, whatever its size
// and published bit: tag, state and owner in one compare.
[[gnu::always_inline]] inline bool owned_here(const mem::MemAlloc& ma, uint64_t w, int slot) {
  const uint64_t want = tag_of(&ma) | kStOwned << 14 | uint64_t(uint16_t(slot)) << 16;
  return slot >= 0 && (w & ~(kPublished | kSizeMask)) == want;
}

}  // namespace objw

// d.global_ma.free_class out of line: the end of a drop whose inline push
// declined (the list busy or above high), kept off the callers' fast path.
void obj_free_class(mem::MemDomain& d, int slot, uint32_t cls, uintptr_t o);

// The new of an object o (its allocator's pointer, header set) the caller
// took off a free list of its own: zeroed and owned (owned as for
// obj_new_fast) by the run holding slot; its data pointer.
[[gnu::always_inline]] inline void* obj_renew(char* o, uint64_t owned, uint32_t size, int slot) {
  objw::zero_data(o + 8, size);
  objw::state_word(reinterpret_cast<uintptr_t>(o))
      .store(owned | uint64_t(uint16_t(slot)) << kObjSlotShift, std::memory_order_relaxed);
  return o + 8;
}

// obj_new_in_slot's fast path for an object of size bytes (1..48) of class
// cls (obj_class(size)), whose lists are lists (d.global_ma.class_lists(cls))
// and whose owned state word is owned (obj_owned_state(d, size)): the
// object, or nullptr when the slot's list is empty, busy or at its low
// watermark (the caller then makes the full call, which decides). slot:
// held by the caller.
[[gnu::always_inline]] inline void* obj_new_fast(const mem::ClassLists& lists, uint64_t owned,
                                                 uint32_t size, uint32_t cls, int slot,
                                                 ObjMemo* memo) {
  auto* o = static_cast<char*>(mem::MemAlloc::try_alloc_in(lists, slot));
  if (!o) [[unlikely]]
    return nullptr;
  return objw::remember(memo, obj_renew(o, owned, size, slot), cls);
}

// obj_drop_in_slot's fast path: true when a (not 0) is one of memo's
// objects, owned by the run holding slot, and was dropped; false with
// nothing changed otherwise (the caller then makes the full call, which
// decides, faults included). owned0: obj_owned_state(d, 0).
[[gnu::always_inline]] inline bool obj_drop_fast(mem::MemDomain& d, uint64_t owned0, uintptr_t a,
                                                 int slot, const ObjMemo& memo) {
  for (uint32_t i = 0; i < ObjMemo::kEntries; i++) {
    if (memo.ptr[i] != a) continue;
    const uintptr_t o = a - 8;
    const uint64_t w = objw::state_word(o).load(std::memory_order_relaxed);
    // owned_here with the tag precomputed.
    if (slot < 0 || (w & ~(objw::kPublished | objw::kSizeMask)) !=
                        (owned0 | uint64_t(uint16_t(slot)) << kObjSlotShift)) [[unlikely]]
      return false;
    objw::drop_owned(d.global_ma, o, w, slot, memo.cls[i]);
    return true;
  }
  return false;
}

// The first half of obj_drop_in_slot's fast path for an object a (not 0)
// that the caller knows to be of size bytes and, if the run still owns it,
// never published (an engine's static facts: a bpf_obj_new of this run with
// no call in between; slot: the one that new found, so not negative): true
// when its state word is exactly owned (obj_owned_state(d, size)) with
// slot, and then the word is freed (obj_free_state(d, size)); false with
// nothing changed otherwise (the caller then makes the full call, which
// decides, faults included). The caller then gives the object (a - 8, its
// allocator pointer) back (obj_give_back), or keeps it for a new of its
// own (obj_renew).
[[gnu::always_inline]] inline bool obj_release_known(uint64_t owned, uint64_t freed, uintptr_t a,
                                                     int slot) {
  const uint64_t w = objw::state_word(a - 8).load(std::memory_order_relaxed);
  if (w != (owned | uint64_t(uint16_t(slot)) << kObjSlotShift)) [[unlikely]]
    return false;
  objw::state_word(a - 8).store(freed, std::memory_order_relaxed);
  return true;
}

// The end of a drop of o, a never-published object of the class whose lists
// are lists (d.global_ma.class_lists(cls)), released by the run holding
// slot: onto the slot's list, immediately reusable. When the list declines
// the push (busy, or above high) it ends in declined(o), which must call
// obj_free_class(d, slot, cls, o): the caller passes what it needs only
// there, so the fast path does not load it.
template <typename Declined>
[[gnu::always_inline]] inline void obj_give_back(const mem::ClassLists& lists, int slot,
                                                 uintptr_t o, Declined&& declined) {
  if (!mem::MemAlloc::try_free_in(lists, slot, reinterpret_cast<void*>(o))) [[unlikely]]
    declined(o);
}

}  // namespace userbpf::maps
