// The interpreter's slow paths: which regions a program may touch, the
// run-time form of the verifier's helper argument checks, and fault records.
#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>

#include "maps/bpf_obj.h"
#include "mem/domain.h"
#include "vm/interp_state.h"

namespace userbpf::vm::interp {
namespace {

const char* arg_kind_name(ArgKind k) {
  switch (k) {
    case ArgKind::kConstMapPtr:
      return "map";
    case ArgKind::kMapKey:
      return "map key";
    case ArgKind::kMapValue:
    case ArgKind::kMapValueOrNull:
      return "map value";
    case ArgKind::kMem:
      return "memory";
    case ArgKind::kUninitMem:
    case ArgKind::kFixedSizeMem:
      return "writable memory";
    case ArgKind::kConstStr:
      return "string";
    case ArgKind::kCtx:
      return "context";
    case ArgKind::kFunc:
      return "callback";
    default:
      return "argument";
  }
}

// Records a bad helper argument i (0-based) and returns false.
[[gnu::format(printf, 5, 6)]] bool arg_fault(InterpState& s, const HelperProto& proto, int i,
                                             uint64_t value, const char* fmt, ...) {
  char why[128];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  set_fault(s, EFAULT, s.call_pc, value, "%s arg%d (%s) %s", proto.name ? proto.name : "helper",
            i + 1, arg_kind_name(proto.args[i]), why);
  return false;
}

maps::Map* find_map(const Program& prog, uint64_t v) {
  for (maps::Map* m : prog.maps) {
    if (m != nullptr && reinterpret_cast<uintptr_t>(m) == v) return m;
  }
  return nullptr;
}

bool map_access_ok(const maps::Map* m, uint64_t addr, uint64_t size, bool write) {
  if (m == nullptr || m->ops == nullptr || m->ops->access_ok == nullptr) return false;
  // Frozen maps stay writable by programs (the kernel's BPF_MAP_FREEZE).
  if (write && (m->attr.map_flags & maps::kBpfFRdonlyProg)) return false;
  return m->ops->access_ok(m, static_cast<uintptr_t>(addr), static_cast<size_t>(size), write);
}

// The value at lo of map m as a region, if the map lets programs read all of
// it (writable if it allows writes too); span 0 otherwise. Map-in-map
// "values" are inner map pointers, never program memory.
Region map_value_region(const maps::Map* m, uintptr_t lo) {
  const uint32_t type = m->attr.type;
  const uint32_t size = m->attr.value_size;
  if (lo == 0 || size == 0 || type == static_cast<uint32_t>(maps::MapType::kARRAY_OF_MAPS) ||
      type == static_cast<uint32_t>(maps::MapType::kHASH_OF_MAPS)) {
    return Region{};
  }
  // Most values are writable: one access_ok call answers both questions.
  if (map_access_ok(m, lo, size, true)) return Region{lo, size, true};
  if (map_access_ok(m, lo, size, false)) return Region{lo, size, false};
  return Region{};
}

void add_grant(InterpState& s, const Region& r) {
  s.grants[s.num_grants % kMaxGrants] = r;
  ++s.num_grants;
  s.hit = r;
}

// Whether m's lookup is ArrayLayout indexing (arrays): its values are fixed
// memory for the map's whole life, which check_mem_slow finds and caches by
// itself, so a returned value only becomes the hit region and takes no
// grant slot (array lookups never push helper memory or hash values out of
// the grant list, on either engine; the JIT may skip even the hit region).
bool fixed_values(const maps::Map* m, maps::ArrayLayout* lay) {
  return m->ops != nullptr && m->ops->gen_lookup != nullptr && m->ops->gen_lookup(m, lay);
}

// Whether check_mem_slow finds every value of m by address and caches it
// whole: array values (fixed_values) and maps with value_at (hash maps).
bool found_by_address(const maps::Map* m) {
  maps::ArrayLayout lay;
  return fixed_values(m, &lay) || (m->ops != nullptr && m->ops->value_at != nullptr);
}

// A map value the program obtained (helper return): only cached when the
// region logic finds such values by itself (found_by_address: they take no
// grant slot, so they never push helper memory out of the grant list, on
// either engine), else granted.
void remember_value(InterpState& s, const maps::Map* m, const Region& r) {
  if (found_by_address(m)) {
    s.hit = r;
  } else {
    add_grant(s, r);
  }
}

// A sized pointer argument: region check of size bytes at v.
bool check_sized(InterpState& s, const HelperProto& proto, int i, uint64_t v, uint64_t size,
                 bool write) {
  if (size == 0) return true;
  if (check_mem(s, v, size, write)) return true;
  return arg_fault(s, proto, i, v, "of %" PRIu64 " bytes is not %s", size,
                   write ? "writable" : "readable");
}

}  // namespace

bool is_callback_value(const Program& prog, uint64_t v) {
  if ((v & 0xffffffff00000000ull) != kCallbackTag) return false;
  return std::binary_search(prog.func_entries.begin(), prog.func_entries.end(),
                            static_cast<uint32_t>(v));
}

bool check_mem_slow(InterpState& s, uint64_t addr, uint64_t size, bool write) {
  const RunContext& rc = *s.rc;
  if (rc.ctx != nullptr) {
    const Region r{reinterpret_cast<uintptr_t>(rc.ctx), rc.ctx_size, rc.ctx_writable};
    if (r.contains(addr, size)) {
      if (write && !r.writable) return false;
      s.hit = r;
      return true;
    }
  }
  // The packet bounds are read every time: helpers (adjust_head/tail) move them.
  uint8_t* pkt = rc.data_meta != nullptr ? rc.data_meta : rc.data;
  if (pkt != nullptr && rc.data_end > pkt) {
    const Region r{reinterpret_cast<uintptr_t>(pkt), static_cast<uintptr_t>(rc.data_end - pkt),
                   true};
    if (r.contains(addr, size)) {
      s.hit = r;
      return true;
    }
  }
  if (rc.loan != nullptr) {
    const Region r{reinterpret_cast<uintptr_t>(rc.loan), rc.loan_size, rc.loan_writable};
    if (r.contains(addr, size) && (!write || r.writable)) return true;  // not cached: short-lived
  }
  for (uint32_t i = 0; i < s.num_grants && i < kMaxGrants; ++i) {
    if (s.grants[i].contains(addr, size) && (!write || s.grants[i].writable)) {
      s.hit = s.grants[i];
      return true;
    }
  }
  const maps::Map* hit = nullptr;
  if (map_access_ok(s.hit_map, addr, size, write)) {
    hit = s.hit_map;
  } else {
    for (const maps::Map* m : s.prog->maps) {
      if (m != s.hit_map && map_access_ok(m, addr, size, write)) {
        hit = s.hit_map = m;
        break;
      }
    }
  }
  if (hit == nullptr) {
    // An object from bpf_obj_new reached through a kptr loaded from a map
    // value (or bpf_kptr_xchg / bpf_this_cpu_ptr): accessible while live.
    uintptr_t lo, span;
    if (s.prog->mem_domain == nullptr ||
        !maps::obj_region(*s.prog->mem_domain, addr, size, &lo, &span))
      return false;
    add_grant(s, Region{lo, span, true});
    return true;
  }
  // Global data (a direct value) or an array value: cache the whole value as
  // a region so the next accesses take the inline path instead of asking
  // the map again.
  uintptr_t value = 0;
  maps::ArrayLayout lay;
  if (hit->ops->direct_value_addr != nullptr) {
    value = reinterpret_cast<uintptr_t>(hit->ops->direct_value_addr(const_cast<maps::Map*>(hit)));
  }
  if (value == 0 && fixed_values(hit, &lay) && lay.elem_size != 0 && addr >= lay.base &&
      (addr - lay.base) / lay.elem_size < lay.max_entries) {
    value = lay.base + (addr - lay.base) / lay.elem_size * lay.elem_size;
  }
  if (value == 0 && hit->ops->value_at != nullptr) value = hit->ops->value_at(hit, addr);
  if (value != 0) {
    const Region r = map_value_region(hit, value);
    if (r.span != 0 && r.contains(addr, size)) s.hit = r;
  }
  return true;
}

bool check_mem(InterpState& s, uint64_t addr, uint64_t size, bool write) {
  const uintptr_t top = reinterpret_cast<uintptr_t>(s.stack_top);
  const uintptr_t span = static_cast<uintptr_t>(s.depth + 1) * isa::kStackSize;
  const Region stack{top - span, span, true};
  return stack.contains(addr, size) || check_mem_nonstack(s, addr, size, write);
}

bool check_helper_args(InterpState& s, const HelperProto& proto, const uint64_t* regs,
                       const maps::Map** map_out) {
  const maps::Map* map = nullptr;  // of the last kConstMapPtr argument
  for (int i = 0; i < 5; ++i) {
    // Scalars and sizes (most arguments) skip the switch's jump table.
    if (arg_kind_bit(proto.args[i]) & kUncheckedArgKinds) continue;
    const uint64_t v = regs[i + 1];
    switch (proto.args[i]) {
      case ArgKind::kNone:
      case ArgKind::kAnything:
      case ArgKind::kConstSize:
      case ArgKind::kConstSizeOrZero:
        break;
      case ArgKind::kConstMapPtr:
        map = find_map(*s.prog, v);
        if (map == nullptr) return arg_fault(s, proto, i, v, "is not a map of this program");
        break;
      case ArgKind::kMapValueOrNull:
        if (v == 0) break;
        [[fallthrough]];
      case ArgKind::kMapKey:
      case ArgKind::kMapValue: {
        if (map == nullptr) return arg_fault(s, proto, i, v, "without a map argument before it");
        const bool key = proto.args[i] == ArgKind::kMapKey;
        if (!check_sized(s, proto, i, v, key ? map->attr.key_size : map->attr.value_size, false)) {
          return false;
        }
        break;
      }
      case ArgKind::kMem:
      case ArgKind::kUninitMem: {
        const ArgKind size_kind = i + 1 < 5 ? proto.args[i + 1] : ArgKind::kNone;
        if (size_kind != ArgKind::kConstSize && size_kind != ArgKind::kConstSizeOrZero) {
          return arg_fault(s, proto, i, v, "has no size argument after it");
        }
        const uint64_t size = regs[i + 2];
        if (size == 0 && size_kind == ArgKind::kConstSize) {
          return arg_fault(s, proto, i, v, "with size 0");
        }
        if (!check_sized(s, proto, i, v, size, proto.args[i] == ArgKind::kUninitMem)) return false;
        break;
      }
      case ArgKind::kFixedSizeMem:
        if (v % 8 != 0) return arg_fault(s, proto, i, v, "is not 8-byte aligned");
        if (!check_sized(s, proto, i, v, proto.arg_size[i], true)) return false;
        break;
      case ArgKind::kConstStr: {
        // NUL-terminated inside accessible memory: every byte up to the NUL.
        for (uint64_t p = v;; ++p) {
          if (!check_mem(s, p, 1, false)) {
            return arg_fault(s, proto, i, v, "is not NUL-terminated in readable memory");
          }
          if (*reinterpret_cast<const char*>(static_cast<uintptr_t>(p)) == '\0') break;
        }
        break;
      }
      case ArgKind::kCtx:
        if (v != reinterpret_cast<uintptr_t>(s.rc->ctx)) {
          return arg_fault(s, proto, i, v, "is not the program's context");
        }
        break;
      case ArgKind::kFunc:
        if (!is_callback_value(*s.prog, v)) {
          return arg_fault(s, proto, i, v, "is not a function of this program");
        }
        break;
    }
  }
  if (map_out != nullptr) *map_out = map;
  return true;
}

void grant_map_value(InterpState& s, const maps::Map* m, uint64_t r0) {
  if (r0 == 0) return;
  const Region r = map_value_region(m, static_cast<uintptr_t>(r0));
  if (r.span != 0) remember_value(s, m, r);
}

void grant_return(InterpState& s, const HelperProto& proto, const uint64_t* args, uint64_t r0) {
  if (r0 == 0) return;
  if (proto.ret == RetKind::kMapValueOrNull) {
    // A map value of the map argument: remembered as a region (the map's
    // access_ok still decides, once for the whole value), so later accesses
    // hit the cache. Values stay valid until the program returns. Array
    // values are only cached (remember_value).
    for (int i = 4; i >= 0; --i) {
      if (proto.args[i] != ArgKind::kConstMapPtr) continue;
      if (const maps::Map* m = find_map(*s.prog, args[i])) {
        const Region r = map_value_region(m, static_cast<uintptr_t>(r0));
        if (r.span != 0) remember_value(s, m, r);
      }
      break;
    }
    return;
  }
  uint64_t size = proto.ret_size;
  if (size == 0 && proto.ret_size_arg >= 0 && proto.ret_size_arg < 5) {
    size = args[proto.ret_size_arg];
  }
  if (size != 0) add_grant(s, Region{static_cast<uintptr_t>(r0), size, true});
}

void set_fault(InterpState& s, int err, const isa::Insn* pc, uint64_t addr, const char* fmt, ...) {
  if (s.stop != Stop::kRunning) return;  // keep the first fault
  s.stop = Stop::kFaulted;
  s.rc->faulted = true;  // helpers looping over callbacks stop at once
  s.err = err;
  s.fault_pc = pc != nullptr ? static_cast<uint32_t>(pc - s.insns) : 0;
  s.fault_addr = addr;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(s.what, sizeof(s.what), fmt, ap);
  va_end(ap);
}

void fault_in_helper(RunContext* rc, int err, uint64_t addr, const char* fmt, ...) {
  if (rc == nullptr || rc->engine_state == nullptr) return;
  InterpState& s = *static_cast<InterpState*>(rc->engine_state);
  char why[160];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  set_fault(s, err, s.call_pc, addr, "%s", why);
}

void fault_access(InterpState& s, const isa::Insn* pc, uint64_t addr, uint64_t size, bool write,
                  bool atomic) {
  const char* op = atomic ? "atomic" : write ? "store" : "load";
  if (atomic && addr % size != 0 && check_mem(s, addr, size, true)) {
    set_fault(s, EFAULT, pc, addr, "misaligned atomic of %" PRIu64 " bytes", size);
  } else if (write && check_mem(s, addr, size, false)) {
    set_fault(s, EFAULT, pc, addr, "%s of %" PRIu64 " bytes to read-only memory", op, size);
  } else if (addr < 4096) {
    set_fault(s, EFAULT, pc, addr, "null pointer %s of %" PRIu64 " bytes", op, size);
  } else {
    set_fault(s, EFAULT, pc, addr, "out-of-bounds %s of %" PRIu64 " bytes", op, size);
  }
}

void release_held_objects(InterpState& s) {
  if (s.stop == Stop::kRunning) {
    set_fault(s, EINVAL, nullptr, 0,
              "returned holding %u object(s) from bpf_obj_new or bpf_kptr_xchg (drop them or "
              "store them in a map; the kernel's verifier refuses this: unreleased reference)",
              s.obj.held);
    s.fault_pc = kNoFaultPc;
  }
  // The domain and slot the kfuncs used (helpers_obj.cc): the program's
  // domain, the slot the run holds in it.
  mem::MemDomain& d = s.prog->mem_domain ? *s.prog->mem_domain : mem::default_mem_domain();
  maps::obj_drop_owned_by(d, s.obj.slot >= 0 ? s.obj.slot : d.slots.held_slot());
  s.obj.held = 0;
}

Result<uint64_t> run_result(const InterpState& s, uint64_t r0) {
  switch (s.stop) {
    case Stop::kRunning:
      return r0;
    case Stop::kAborted:
      return uint64_t{0};
    case Stop::kFaulted:
      break;
  }
  RunContext& rc = *s.rc;
  const Program& prog = *s.prog;
  rc.faulted = true;
  rc.fault.pc = s.fault_pc;
  rc.fault.addr = s.fault_addr;
  rc.fault.what = s.what;
  if (s.err == EFAULT) {
    return make_error(EFAULT, "program '%s': pc %u: %s at 0x%" PRIx64, prog.name.c_str(),
                      s.fault_pc, s.what, s.fault_addr);
  }
  if (s.fault_pc == kNoFaultPc)
    return make_error(s.err, "program '%s': %s", prog.name.c_str(), s.what);
  return make_error(s.err, "program '%s': pc %u: %s", prog.name.c_str(), s.fault_pc, s.what);
}

}  // namespace userbpf::vm::interp
