// What an engine needs to know about a helper or kfunc: its native function
// and the kinds of its arguments, so pointer arguments can be checked against
// the memory the program may touch before the call (the runtime form of the
// kernel verifier's check_func_arg). Implementations live in src/helpers.
#pragma once

#include <cstdint>

#include "maps/bpf_obj.h"

namespace userbpf::vm {

// Every helper and kfunc has this native signature: five 64-bit arguments in
// r1-r5, result in r0. The JIT calls these directly.
using HelperFn = uint64_t (*)(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5);

enum class ArgKind : uint8_t {
  kNone,         // argument unused
  kAnything,     // any scalar or pointer, not dereferenced by the helper
  kConstMapPtr,  // a struct bpf_map * the program obtained by ld_imm64
  kMapKey,       // readable, key_size of the map in the previous kConstMapPtr argument
  kMapValue,     // readable, value_size of that map
  kMem,          // readable memory, size in the next kConstSize/kConstSizeOrZero argument
  kUninitMem,    // writable memory, size in the next size argument
  kConstSize,    // size of the preceding kMem/kUninitMem, > 0
  kConstSizeOrZero,
  kConstStr,        // NUL-terminated string in readable memory (e.g. a format)
  kCtx,             // the program's context pointer
  kFunc,            // a callback: BPF_PSEUDO_FUNC value
  kMapValueOrNull,  // like kMapValue, NULL allowed
  kFixedSizeMem,    // writable, 8-byte aligned, HelperProto::arg_size bytes (kernel
                    // ARG_PTR_TO_FIXED_SIZE_MEM | MEM_UNINIT, e.g. bpf_strtol's *res)
};

enum class RetKind : uint8_t {
  kInteger,  // scalar
  kVoid,
  kMapValueOrNull,  // pointer into the map of the kConstMapPtr argument: becomes accessible
  kMemOrNull,       // pointer to memory the helper vouches for (size in ret_size)
};

struct HelperProto {
  const char* name = nullptr;
  HelperFn fn = nullptr;
  ArgKind args[5] = {};
  RetKind ret = RetKind::kInteger;
  bool sleepable_only = false;  // may only be called from sleepable programs
  uint32_t arg_size[5] = {};    // bytes of each kFixedSizeMem argument
  // kMemOrNull: bytes the returned pointer may access (the program may read
  // and write them until it returns). 0 with ret_size_arg >= 0: the size is
  // that argument's value (e.g. bpf_ringbuf_reserve's size).
  uint32_t ret_size = 0;
  int8_t ret_size_arg = -1;
  // May change the packet bounds (data_meta, data, data_end).
  bool moves_packet = false;
  // The same call for engines that keep the run's ObjRunState (below): the
  // loader's resolved bpf_obj_new / bpf_obj_drop, whose r2 is the memory
  // domain. Saves the search of the thread's held slots on every call. Only
  // for protos that need nothing around the call (call_needs_nothing).
  uint64_t (*slot_fn)(uint64_t r1, uint64_t r2, struct ObjRunState* run) = nullptr;
  // Which of those it is: an engine may inline them for plain objects of
  // the program's memory domain (maps/bpf_obj.h says how), kNew with the
  // object's size in ret_size.
  enum class ObjCall : uint8_t { kNone, kNew, kDrop } obj_call = ObjCall::kNone;
};

inline constexpr int32_t kSlotUnknown = -2;

// What a run keeps about program-allocated objects (reset when a run
// starts): the run's CPU slot of the program's memory domain (kSlotUnknown
// until the first bpf_obj_new/drop looks it up) and how many objects the
// run holds (from bpf_obj_new or taken out of a map with bpf_kptr_xchg, not
// dropped or stored since). A run that returns holding some is refused, as
// the kernel's verifier refuses such a program (unreleased reference).
// memo: the run's last objects from bpf_obj_new, so their bpf_obj_drop
// skips the allocator's page lookup (maps::ObjMemo says why that is exact).
struct ObjRunState {
  int32_t slot = kSlotUnknown;
  uint32_t held = 0;
  maps::ObjMemo memo;
};

// Bit k set for each kind k among p's arguments: one word answers what a
// call needs (e.g. whether check_helper_args has anything to check).
// Computed at each call from the proto itself, never stored beside it:
// protos are built by assigning their arguments one by one (registry.cc,
// tests), so a field derived at construction would be stale.
constexpr uint32_t arg_kind_bit(ArgKind k) {
  return uint32_t{1} << static_cast<unsigned>(k);
}
static_assert(static_cast<unsigned>(ArgKind::kFixedSizeMem) < 32, "arg_kinds: one bit per kind");
inline uint32_t arg_kinds(const HelperProto& p) {
  return arg_kind_bit(p.args[0]) | arg_kind_bit(p.args[1]) | arg_kind_bit(p.args[2]) |
         arg_kind_bit(p.args[3]) | arg_kind_bit(p.args[4]);
}
// The kinds that need no check before the call: scalars, and sizes (which
// the pointer argument before them checks, with its own kind).
inline constexpr uint32_t kUncheckedArgKinds =
    arg_kind_bit(ArgKind::kNone) | arg_kind_bit(ArgKind::kAnything) |
    arg_kind_bit(ArgKind::kConstSize) | arg_kind_bit(ArgKind::kConstSizeOrZero);

// Whether memory a run could reach before the call may have moved by the
// time it returns: the packet, by the helper itself or by a callback of the
// program it runs (which may call such helpers). The engines then forget
// their cached last region; after any other call it stays valid. kinds:
// arg_kinds(p).
inline bool call_may_move_packet(const HelperProto& p, uint32_t kinds) {
  return p.moves_packet || (kinds & arg_kind_bit(ArgKind::kFunc)) != 0;
}
inline bool call_may_move_packet(const HelperProto& p) {
  return call_may_move_packet(p, arg_kinds(p));
}

// Whether the memory a call of p returns becomes accessible to the run
// (grant_return). bpf_obj_new's objects take no grant: the engines find
// objects by address (maps::obj_region).
inline bool returns_grant(const HelperProto& p) {
  return (p.ret == RetKind::kMemOrNull || p.ret == RetKind::kMapValueOrNull) &&
         p.obj_call != HelperProto::ObjCall::kNew;
}

// Whether a call of p needs none of the protocol around a helper call: no
// argument to check, no packet move or callback, no grant. A proto with a
// slot_fn must be such (prepare_program refuses others): both engines call
// a slot_fn with nothing around it but the fault check.
inline bool call_needs_nothing(const HelperProto& p) {
  const uint32_t kinds = arg_kinds(p);
  return (kinds & ~kUncheckedArgKinds) == 0 && !call_may_move_packet(p, kinds) && !returns_grant(p);
}

// Helper ids are the kernel's (enum bpf_func_id); the table is indexed by id.
inline constexpr uint32_t kMaxHelperId = 256;
using HelperTable = const HelperProto* const*;  // kMaxHelperId entries, nullptr if unknown

}  // namespace userbpf::vm
