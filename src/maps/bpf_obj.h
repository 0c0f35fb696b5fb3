// Program-allocated objects (bpf_obj_new / bpf_percpu_obj_new, the kernel's
// "local kptrs") and the kptr fields of map values that hold them.
//
// Objects come from the runtime's MemDomain: global_ma for plain objects, the
// per-class per-CPU allocators for per-CPU ones. Each object starts with an
// 8-byte state word the program never sees; the program's pointer is just
// after it:
//   plain:    [alloc header][state][data: size bytes]
//   per-CPU:  [alloc header][state | data copy 0][8 | data copy 1] ...
//             copy i's data at p + i * stride (stride = class + 8)
// The state word holds the size, the state, the owner's slot and a tag
// derived from a process secret and the allocator (stale or forged words
// never match). States:
//   kOwned   held by the run that holds the recorded slot (after obj_new, or
//            taken out of a map by bpf_kptr_xchg); a run that stops still
//            holding some has them dropped (obj_drop_owned_by)
//   kInMap   stored in a kptr field of a map value (by bpf_kptr_xchg)
//   kFree    dropped; data still reachable by stale pointers, never freed again
// plus a "published" bit once the object has been in a map: other runs may
// then have loaded its pointer with a plain load, so its drop waits for a
// grace period (free_rcu); an object that never left its run is freed for
// immediate reuse (free).
//
// Invariants: an owned object is moved on (dropped, stored) only by the run
// holding its owner slot, one run per slot at a time, so those transitions
// are plain stores; objects in maps leave through a compare-exchange. An
// object is handed back to its allocator only by the one transition to
// kFree of that allocation, so no program input (forged pointers, plain
// stores into kptr fields, a pointer dropped twice) can free an object twice
// or free memory that is not an object. The allocator never writes an
// object's data bytes (only its header and, while free, the state word), so
// a stale pointer a program still uses can only reach other objects' data.
//
// Costs (bpf_obj_new + bpf_obj_drop is a program's malloc/free pair): new is
// the slot's list pop, the zeroing and one store of the state word; drop
// finds the object through the allocator's page cache (MemAlloc::find_object,
// one load for an address in a known slab; no lookup at all for one of the
// last objects the run allocated, ObjMemo), checks tag, state and owner
// with one compare of the state word and pushes the object on the slot's
// list.
// The loader resolves each call's size and domain (helpers/helpers_obj.h).
//
// Contexts: everything here runs from programs (the caller holds a slot of
// the domain's table), signal handlers included; the release and region
// functions also from the host (they enter a slot when none is held). Never
// blocks, never allocates outside the object caches.
#pragma once

#include <cstddef>
#include <cstdint>

namespace userbpf::mem {
struct MemDomain;
}

namespace userbpf::maps {

// Largest object bpf_obj_new can allocate: the largest size class's usable
// bytes (4088) less the state word.
inline constexpr uint32_t kObjMaxSize = 4080;
// Largest per-CPU object (the kernel's BPF_GLOBAL_PERCPU_MA_MAX_SIZE).
inline constexpr uint32_t kPercpuObjMaxSize = 512;

// Size class of the per-CPU allocator for objects of size bytes, or -1.
int percpu_obj_class(uint32_t size);

// A zeroed object of size bytes (1..kObjMaxSize), owned by the caller, or
// nullptr (empty cache, no slot held, bad size).
void* obj_new(mem::MemDomain& d, uint32_t size);

// The last objects obj_new_in_slot gave one run (its pointers and size
// classes), so that run's obj_drop_in_slot of one of them skips the
// allocator's page lookup (MemAlloc::find_object): a program's malloc/free
// pair usually drops what it just allocated. An entry is a fact about the
// allocator, never about ownership: an address that was the data pointer of
// an object of class c of d.global_ma stays one for as long as d.global_ma
// exists (slabs go back to the page pool only in its destructor, and an
// object never changes class), whatever happened to the object since
// (dropped, stored in a map, taken out, reused). So a stale entry is still
// true and the drop still decides by the state word alone, exactly as
// without the memo; entries need no invalidation. A memo belongs to one
// domain (a run's, like ObjRunState::slot); unused entries are 0, which
// never matches (0 is never an object).
struct ObjMemo {
  static constexpr uint32_t kEntries = 4;
  uintptr_t ptr[kEntries] = {};
  uint8_t cls[kEntries] = {};
  uint32_t next = 0;  // entry the next obj_new overwrites (mod kEntries)
};

// obj_new for a caller that knows it holds slot of d's table (the JIT keeps
// its run's slot): skips the search of the thread's held slots. With a
// memo, the object is recorded in it.
void* obj_new_in_slot(mem::MemDomain& d, uint32_t size, int slot, ObjMemo* memo = nullptr);
// A zeroed per-CPU object (every copy), or nullptr. The per-CPU allocator of
// its class must exist (MemDomain::percpu_ma, created at load).
void* percpu_obj_new(mem::MemDomain& d, uint32_t size);

enum class ObjError : uint8_t {
  kOk,
  kNotObject,     // not the pointer of an object of this kind
  kNotOwned,      // an object, but stored in a map or already dropped
  kSizeMismatch,  // kptr_xchg: object size differs from the field's type
  kBadField,      // kptr_xchg: the field holds something that is not an object of its kind
};
const char* obj_error_name(ObjError e);

// For engines that inline obj_new / obj_drop of plain objects (the JIT):
// objects of size bytes come from class obj_class(size) of d.global_ma; the
// state word of a fresh object owned by slot is
// obj_owned_state(d, size) | slot << kObjSlotShift, that of a dropped one
// obj_free_state(d, size). An inlined drop may take the fast path only for
// an object whose state word equals the owned word exactly (not published:
// freed for immediate reuse); anything else goes to obj_drop.
inline constexpr unsigned kObjSlotShift = 16;
int obj_class(uint32_t size);
uint64_t obj_owned_state(mem::MemDomain& d, uint32_t size);
uint64_t obj_free_state(mem::MemDomain& d, uint32_t size);

// bpf_obj_drop / bpf_percpu_obj_drop of an object the caller owns.
ObjError obj_drop(mem::MemDomain& d, void* p, bool percpu);
// bpf_obj_drop of a plain object by the holder of slot (as obj_new_in_slot).
// With the memo obj_new_in_slot recorded p in (if it did), p's class comes
// from it instead of the page lookup; the outcome is the same either way.
ObjError obj_drop_in_slot(mem::MemDomain& d, void* p, int slot, const ObjMemo* memo = nullptr);

// Drops every object the run holding slot still owns (kOwned with that
// owner, plain and per-CPU), each exactly as obj_drop would (published ones
// wait for a grace period), and returns how many. For the engines, when a
// run stops holding objects (it returned, which the kernel's verifier would
// have refused as an unreleased reference, or it faulted): nothing can name
// them any more, and a buggy program must not leak memory per run. The
// caller is that run, still holding slot (so no one else moves those
// objects); a signal handler may call it. It visits every object of the
// domain's object allocators (MemAlloc::for_each_object), so only runs
// that stop holding objects pay, in proportion to the objects allocated.
uint32_t obj_drop_owned_by(mem::MemDomain& d, int slot);

// bpf_kptr_xchg on a kptr field (the caller checked that field is one):
// stores p (nullptr or an owned object of obj_size bytes, 0: any size) and
// returns the previous object in *old, now owned by the caller. A field
// holding something other than an object in a map yields kBadField and
// nothing changes.
ObjError kptr_xchg(mem::MemDomain& d, uint64_t* field, void* p, bool percpu, uint32_t obj_size,
                   void** old);

// Empties a kptr field and drops the object it held (map element deleted or
// overwritten, map freed). Enters a slot of d when the caller holds none.
void kptr_release(mem::MemDomain& d, uint64_t* field, bool percpu);

// Whether [addr, addr + size) lies in the data of an object of d (any copy
// of a per-CPU object; dropped ones included: a run may still hold a kptr it
// loaded before another run dropped the object, and data bytes are never the
// allocator's); *lo/*span = that data. For the engines' memory checks.
bool obj_region(mem::MemDomain& d, uint64_t addr, uint64_t size, uintptr_t* lo, uintptr_t* span);

// Copy cpu of the per-CPU object p (its data pointer), or nullptr.
void* percpu_obj_ptr(mem::MemDomain& d, void* p, uint32_t cpu);

}  // namespace userbpf::maps
