// Program-allocated objects: allocation, the state word's transitions, kptr
// exchange and release, and the region query of the memory checks.
#include "maps/bpf_obj.h"

#include <sys/random.h>

#include <atomic>
#include <cstring>
#include <ctime>

#include "maps/bpf_obj_fast.h"
#include "mem/domain.h"

namespace userbpf::maps {
using namespace objw;

namespace {

uint64_t make_secret() {
  uint64_t s = 0;
  if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != sizeof(s))
    s = static_cast<uint64_t>(time(nullptr)) * 0x9e3779b97f4a7c15ull;
  return s;
}

}  // namespace

// Initialized before main: first use may be in a signal handler.
const uint64_t objw::g_obj_secret = make_secret();

namespace {

struct Found {
  mem::MemAlloc* ma = nullptr;
  uintptr_t o = 0;    // the allocator's object (state word)
  size_t stride = 0;  // per-CPU: bytes per copy
};

bool locate(mem::MemDomain& d, uintptr_t addr, bool percpu, Found* f) {
  size_t usable;
  if (!percpu) {
    if (!d.global_ma.find_object(addr, &f->o, &usable)) return false;
    f->ma = &d.global_ma;
    return true;
  }
  for (uint32_t c = 0; c <= mem::MemDomain::kPercpuMaxClass; c++) {
    mem::MemAlloc* ma = d.percpu_ma_if_exists(c);
    if (ma && ma->find_object(addr, &f->o, &usable)) {
      f->ma = ma;
      auto* o = reinterpret_cast<char*>(f->o);
      f->stride = static_cast<size_t>(static_cast<char*>(ma->per_cpu_ptr(o, 1)) - o);
      return true;
    }
  }
  return false;
}

// The object whose data pointer is exactly p.
bool locate_exact(mem::MemDomain& d, void* p, bool percpu, Found* f) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  return a >= 8 && locate(d, a, percpu, f) && f->o + 8 == a;
}

void give_back(mem::MemDomain& d, const Found& f, bool published, int slot) {
  if (slot >= 0) {
    published ? f.ma->free_rcu(slot, reinterpret_cast<void*>(f.o))
              : f.ma->free(slot, reinterpret_cast<void*>(f.o));
    return;
  }
  // Host paths (map update/delete/free from the API): a slot of our own.
  mem::SlotGuard g(
      d.slots, mem::SlotTable::thread_in_slot() ? mem::EnterMode::kNoWait : mem::EnterMode::kWait);
  if (!g.ok()) return;  // no slot at all (nested too deep): the object leaks
  published ? f.ma->free_rcu(g.slot(), reinterpret_cast<void*>(f.o))
            : f.ma->free(g.slot(), reinterpret_cast<void*>(f.o));
}

}  // namespace

int obj_class(uint32_t size) {
  return size == 0 || size > kObjMaxSize ? -1 : mem::size_class_for(size + 8);
}

uint64_t obj_owned_state(mem::MemDomain& d, uint32_t size) {
  return make_state(&d.global_ma, kStOwned, size);
}

uint64_t obj_free_state(mem::MemDomain& d, uint32_t size) {
  return make_state(&d.global_ma, kStFree, size);
}

void obj_free_class(mem::MemDomain& d, int slot, uint32_t cls, uintptr_t o) {
  d.global_ma.free_class(slot, cls, reinterpret_cast<void*>(o));
}

int percpu_obj_class(uint32_t size) {
  if (size == 0 || size > kPercpuObjMaxSize) return -1;
  for (uint32_t c = 0; c <= mem::MemDomain::kPercpuMaxClass; c++)
    if (mem::kSizeClasses[c] >= size) return static_cast<int>(c);
  return -1;
}

const char* obj_error_name(ObjError e) {
  switch (e) {
    case ObjError::kOk:
      return "ok";
    case ObjError::kNotObject:
      return "is not an object from bpf_obj_new";
    case ObjError::kNotOwned:
      return "is an object the program does not own (stored in a map or already dropped)";
    case ObjError::kSizeMismatch:
      return "has a different type size than the kptr field";
    case ObjError::kBadField:
      return "field holds a value that is not an object stored in a map";
  }
  return "?";
}

namespace {

// The end of obj_new_in_slot for objects whose zeroing is a call.
[[gnu::noinline]] void* obj_new_finish(mem::MemDomain& d, char* o, uint32_t size, int slot,
                                       uint32_t cls, ObjMemo* memo) {
  return remember(memo, init_obj(d, o, size, slot), cls);
}

[[gnu::noinline]] void* obj_new_slow(mem::MemDomain& d, uint32_t size, int slot, uint32_t cls,
                                     ObjMemo* memo) {
  auto* o = static_cast<char*>(d.global_ma.alloc_class(slot, cls));
  return o ? obj_new_finish(d, o, size, slot, cls, memo) : nullptr;
}

}  // namespace

void* obj_new_in_slot(mem::MemDomain& d, uint32_t size, int slot, ObjMemo* memo) {
  if (size == 0 || size > kObjMaxSize || slot < 0) return nullptr;
  const auto cls = static_cast<uint32_t>(mem::size_class_for(size + 8));  // >= 0 for these sizes
  // No call on the fast path (the others are tail calls), so it saves no
  // registers: objects of up to 48 bytes (zero_data's inline stores).
  auto* o = static_cast<char*>(d.global_ma.try_alloc_class(slot, cls));
  if (!o) [[unlikely]]
    return obj_new_slow(d, size, slot, cls, memo);
  if (size > 48) return obj_new_finish(d, o, size, slot, cls, memo);
  return remember(memo, init_obj(d, o, size, slot), cls);
}

void* obj_new(mem::MemDomain& d, uint32_t size) {
  return obj_new_in_slot(d, size, d.slots.held_slot());
}

void* percpu_obj_new(mem::MemDomain& d, uint32_t size) {
  const int c = percpu_obj_class(size);
  if (c < 0) return nullptr;
  mem::MemAlloc* ma = d.percpu_ma_if_exists(static_cast<uint32_t>(c));
  const int slot = d.slots.held_slot();
  if (!ma || slot < 0) return nullptr;
  auto* o = static_cast<char*>(ma->alloc(slot, 0));
  if (!o) return nullptr;
  for (uint32_t cpu = 0; cpu < d.slots.num_slots(); cpu++)
    std::memset(static_cast<char*>(ma->per_cpu_ptr(o, cpu)) + 8, 0, size);
  state_word(reinterpret_cast<uintptr_t>(o))
      .store(owned_by(make_state(ma, kStOwned, size), slot), std::memory_order_relaxed);
  return o + 8;
}

namespace {

// Why w is not "owned by slot" in allocator ma.
[[gnu::cold]] ObjError drop_error(const mem::MemAlloc* ma, uint64_t w) {
  return tag_ok(ma, w) ? ObjError::kNotOwned : ObjError::kNotObject;
}

// bpf_obj_drop of the plain object whose data pointer is a, of class cls of
// d.global_ma: one compare of the state word says the caller's run owns it.
[[gnu::always_inline]] inline ObjError obj_drop_object(mem::MemDomain& d, uintptr_t a, int slot,
                                                       uint32_t cls) {
  mem::MemAlloc& ma = d.global_ma;
  const uintptr_t o = a - 8;
  const uint64_t w = state_word(o).load(std::memory_order_relaxed);
  if (!owned_here(ma, w, slot)) [[unlikely]]
    return drop_error(&ma, w);
  drop_owned(ma, o, w, slot, cls);
  return ObjError::kOk;
}

// bpf_obj_drop of a plain object: the page cache says which object of which
// class p is, then obj_drop_object.
ObjError obj_drop_plain(mem::MemDomain& d, void* p, int slot) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uintptr_t o;
  size_t usable;
  uint32_t cls;
  if (!d.global_ma.find_object(a, &o, &usable, &cls) || o + 8 != a) [[unlikely]]
    return ObjError::kNotObject;
  // Addressing the state word by a, not o, keeps its load off the
  // dependency chain of the lookup (the branch above is predicted).
  return obj_drop_object(d, a, slot, cls);
}

// The objects of ma owned by slot, dropped.
uint32_t drop_all_owned(mem::MemAlloc& ma, int slot) {
  const uint64_t want = tag_of(&ma) | kStOwned << 14 | uint64_t(uint16_t(slot)) << 16;
  uint32_t n = 0;
  ma.for_each_object([&](void* obj, uint32_t cls) {
    const auto o = reinterpret_cast<uintptr_t>(obj);
    const uint64_t w = state_word(o).load(std::memory_order_relaxed);
    if ((w & ~(kPublished | kSizeMask)) == want) {
      drop_owned(ma, o, w, slot, cls);
      n++;
    }
    return true;
  });
  return n;
}

}  // namespace

ObjError obj_drop_in_slot(mem::MemDomain& d, void* p, int slot, const ObjMemo* memo) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (memo && a != 0) {
    // ObjMemo: a known object of a known class, no page lookup (a is not 0:
    // unused entries are).
    for (uint32_t i = 0; i < ObjMemo::kEntries; i++)
      if (memo->ptr[i] == a) return obj_drop_object(d, a, slot, memo->cls[i]);
  }
  return obj_drop_plain(d, p, slot);
}

ObjError obj_drop(mem::MemDomain& d, void* p, bool percpu) {
  if (!percpu) [[likely]]
    return obj_drop_plain(d, p, d.slots.held_slot());
  Found f;
  if (!locate_exact(d, p, percpu, &f)) return ObjError::kNotObject;
  std::atomic<uint64_t>& sw = state_word(f.o);
  const uint64_t w = sw.load(std::memory_order_relaxed);
  if (!tag_ok(f.ma, w)) return ObjError::kNotObject;
  const int slot = d.slots.held_slot();
  if (slot < 0 || !owned_by_slot(w, slot)) return ObjError::kNotOwned;
  drop_owned(*f.ma, f.o, w, slot, 0);  // per-CPU allocators have one class
  return ObjError::kOk;
}

uint32_t obj_drop_owned_by(mem::MemDomain& d, int slot) {
  if (slot < 0) return 0;
  uint32_t n = drop_all_owned(d.global_ma, slot);
  for (uint32_t c = 0; c <= mem::MemDomain::kPercpuMaxClass; c++)
    if (mem::MemAlloc* ma = d.percpu_ma_if_exists(c)) n += drop_all_owned(*ma, slot);
  return n;
}

ObjError kptr_xchg(mem::MemDomain& d, uint64_t* field, void* p, bool percpu, uint32_t obj_size,
                   void** old) {
  *old = nullptr;
  Found nf;
  uint64_t nw = 0;
  const int slot = d.slots.held_slot();
  if (p) {
    if (!locate_exact(d, p, percpu, &nf)) return ObjError::kNotObject;
    nw = state_word(nf.o).load(std::memory_order_relaxed);
    if (!tag_ok(nf.ma, nw)) return ObjError::kNotObject;
    if (slot < 0 || !owned_by_slot(nw, slot)) return ObjError::kNotOwned;
    if (obj_size && size_of(nw) != obj_size) return ObjError::kSizeMismatch;
    // Published by the field exchange below (release).
    state_word(nf.o).store(with_state(nw, kStInMap) | kPublished, std::memory_order_relaxed);
  }
  auto* prev = reinterpret_cast<void*>(
      __atomic_exchange_n(field, reinterpret_cast<uint64_t>(p), __ATOMIC_ACQ_REL));
  if (!prev) return ObjError::kOk;
  Found of;
  uint64_t ow = 0;
  bool taken = false;
  if (locate_exact(d, prev, percpu, &of)) {
    ow = state_word(of.o).load(std::memory_order_acquire);
    // A compare-exchange: a pointer planted in two fields by plain stores
    // can come out of both, but only one exchange takes the object.
    if (slot >= 0 && tag_ok(of.ma, ow) && state_of(ow) == kStInMap)
      taken = state_word(of.o).compare_exchange_strong(ow, owned_by(ow, slot),
                                                       std::memory_order_acq_rel);
  }
  if (!taken) {
    // A plain store put something else in the field: hand nothing out.
    // The object we stored stays in the field (it is in a map, as recorded).
    return ObjError::kBadField;
  }
  *old = prev;
  return ObjError::kOk;
}

void kptr_release(mem::MemDomain& d, uint64_t* field, bool percpu) {
  auto* prev = reinterpret_cast<void*>(__atomic_exchange_n(field, 0, __ATOMIC_ACQ_REL));
  if (!prev) return;
  Found f;
  if (!locate_exact(d, prev, percpu, &f)) return;  // not an object: nothing to drop
  std::atomic<uint64_t>& sw = state_word(f.o);
  uint64_t w = sw.load(std::memory_order_acquire);
  if (!tag_ok(f.ma, w) || state_of(w) != kStInMap) return;
  if (!sw.compare_exchange_strong(w, with_state(w, kStFree), std::memory_order_acq_rel)) return;
  give_back(d, f, true, d.slots.held_slot());
}

bool obj_region(mem::MemDomain& d, uint64_t addr, uint64_t size, uintptr_t* lo, uintptr_t* span) {
  for (bool percpu : {false, true}) {
    Found f;
    if (!locate(d, static_cast<uintptr_t>(addr), percpu, &f)) continue;
    // Any state: a program may still hold a pointer to an object another run
    // dropped (published objects wait for a grace period; the allocator
    // never writes data bytes), as the kernel's RCU-protected kptrs allow.
    const uint64_t w = state_word(f.o).load(std::memory_order_acquire);
    if (!tag_ok(f.ma, w)) return false;
    uintptr_t data = f.o + 8;
    if (percpu) data += (addr - f.o) / f.stride * f.stride;
    const uint64_t n = size_of(w);
    const uint64_t off = addr - data;
    if (addr < data || off >= n || size > n - off) return false;
    *lo = data;
    *span = n;
    return true;
  }
  return false;
}

void* percpu_obj_ptr(mem::MemDomain& d, void* p, uint32_t cpu) {
  Found f;
  if (cpu >= d.slots.num_slots() || !locate_exact(d, p, true, &f)) return nullptr;
  if (!tag_ok(f.ma, state_word(f.o).load(std::memory_order_acquire))) return nullptr;
  return static_cast<char*>(f.ma->per_cpu_ptr(reinterpret_cast<void*>(f.o), cpu)) + 8;
}

}  // namespace userbpf::maps
