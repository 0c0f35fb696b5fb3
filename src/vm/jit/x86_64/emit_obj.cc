// The x86-64 code generator: bpf_obj_new and bpf_obj_drop of plain objects
// inlined (the loader's resolved calls, HelperProto::ObjCall), on the run's
// CPU slot cached in s.obj_slot.
//
// bpf_obj_new of a small object pops the head of the slot's list of its
// size class, as MemAlloc::unit_try_alloc does (the `active` bracket around
// the list update, everything it cannot decide at or below the low
// watermark left to the call), zeroes the object and writes its state word
// (maps/bpf_obj.h). bpf_obj_drop of an object the facts say came from such
// an obj_new in this straight-line code (emit_facts.cc: no call in between,
// so the object is still this run's and was never published) checks the
// state word is exactly "owned by this slot", then pushes the object as
// unit_try_free does. Anything else (the slot not known yet, the list busy
// or at a watermark, an unexpected state word) is the call, whose C code
// decides, faults included. Both keep the interpreter's bookkeeping: the
// count of objects the run holds (ObjRunState), r0, the clobbered argument
// registers (a new object takes no grant: objects are found by address).
#include "maps/bpf_obj.h"
#include "mem/domain.h"
#include "vm/jit/x86_64/emitter.h"

namespace userbpf::vm::jit {
namespace {

// Largest object whose zeroing is inlined (eight stores).
constexpr uint32_t kInlineObjMax = 64;

}  // namespace

bool Emitter::can_inline_obj(uint32_t size) const {
  return prog_.mem_domain != nullptr && size != 0 && size <= kInlineObjMax &&
         maps::obj_class(size) >= 0;
}

// r10 = slot s.obj_slot's list of class cls; jumps to slow if the slot is
// not known (yet) for this run.
void Emitter::emit_obj_cache(uint32_t cls, Lbl slow) {
  const mem::MemAlloc::InlineLayout lay = prog_.mem_domain->global_ma.inline_layout();
  movsxd(r10, dword[r12 + kOffObjSlot]);
  test(r10, r10);
  jcc(Cond::kL, slow);  // kSlotUnknown, or no slot (-1)
  imul(r10, r10, static_cast<int>(lay.slot_stride));
  mov(r11, lay.caches + uint64_t{cls} * lay.cache_stride);
  add(r10, r11);
}

// The out-of-line end of an inlined call: busy (the list's `active` set by
// us) clears it, then slow makes the call and goes back to back (after the
// stop check when the call can fault).
void Emitter::emit_obj_slow(size_t pc, const HelperProto& proto, Lbl busy, Lbl slow, Lbl back,
                            bool can_fault) {
  const int32_t active = prog_.mem_domain->global_ma.inline_layout().active;
  cold_.push_back([this, pc, &proto, busy, slow, back, can_fault, active] {
    bind(busy);
    mov(byte[r10 + active], 0);
    bind(slow);
    emit_slot_fn_call(pc, proto);
    if (can_fault) {
      cmp(byte[r12 + kOffStop], 0);
      jcc(Cond::kNe, fault_exit_synced_);
    }
    jmp_to(back);
  });
}

bool Emitter::emit_obj_new(size_t pc, const HelperProto& proto) {
  const uint32_t size = proto.ret_size;
  if (proto.obj_call != HelperProto::ObjCall::kNew || !can_inline_obj(size)) return false;
  mem::MemDomain& d = *prog_.mem_domain;
  const uint32_t cls = static_cast<uint32_t>(maps::obj_class(size));
  const mem::MemAlloc::InlineLayout lay = d.global_ma.inline_layout();
  const Lbl slow = new_label(), busy = new_label(), done = new_label();
  emit_obj_cache(cls, slow);
  cmp(byte[r10 + lay.active], 0);
  jcc(Cond::kNe, slow);
  mov(byte[r10 + lay.active], 1);
  // unit_try_alloc's test: an empty list, or one at or below its low
  // watermark whose worker has not been asked yet (no batch waiting), is
  // the call's (which asks).
  const Lbl take = new_label();
  mov(r11d, dword[r10 + lay.cnt]);
  test(r11d, r11d);
  jcc(Cond::kZ, busy);
  cmp(r11d, dword[r10 + lay.low]);
  jcc(Cond::kA, take);
  cmp(qword[r10 + lay.incoming], 0);
  jcc(Cond::kNe, take);
  cmp(byte[r10 + lay.kicked], 0);
  jcc(Cond::kEq, busy);
  bind(take);
  mov(rax, qword[r10 + lay.head]);  // cnt > 0: the list is not empty
  dec(r11d);
  mov(dword[r10 + lay.cnt], r11d);
  mov(r11, qword[rax]);
  mov(qword[r10 + lay.head], r11);
  mov(byte[r10 + lay.active], 0);
  // [header][state word][data]: the program's pointer is the data.
  mov(r11, d.global_ma.class_word(cls));
  mov(qword[rax], r11);
  for (uint32_t off = 0; off < size; off += 8) mov(qword[rax + 16 + off], 0);
  movsxd(r11, dword[r12 + kOffObjSlot]);
  shl(r11, maps::kObjSlotShift);
  mov(r10, maps::obj_owned_state(d, size));
  or_(r11, r10);
  mov(qword[rax + 8], r11);
  add(rax, 16);
  inc(dword[r12 + kOffObjHeld]);
  bind(done);
  emit_clobber(live_out_[pc]);
  emit_obj_slow(pc, proto, busy, slow, done, false);
  return true;
}

bool Emitter::emit_obj_drop(size_t pc, const HelperProto& proto) {
  const uint32_t size = drop_obj_size_[pc];
  if (proto.obj_call != HelperProto::ObjCall::kDrop || !can_inline_obj(size)) return false;
  mem::MemDomain& d = *prog_.mem_domain;
  const uint32_t cls = static_cast<uint32_t>(maps::obj_class(size));
  const mem::MemAlloc::InlineLayout lay = d.global_ma.inline_layout();
  const Lbl slow = new_label(), busy = new_label(), done = new_label(), out = new_label();
  // rdi (r1) = the object or null, rsi (r2) = the domain: kept for the call.
  test(rdi, rdi);
  jcc(Cond::kZ, done);  // dropping null does nothing
  emit_obj_cache(cls, slow);
  // The state word must say "owned by this slot, not published".
  movsxd(r11, dword[r12 + kOffObjSlot]);
  shl(r11, maps::kObjSlotShift);
  mov(rax, maps::obj_owned_state(d, size));
  or_(r11, rax);
  cmp(qword[rdi - 8], r11);
  jcc(Cond::kNe, slow);
  cmp(byte[r10 + lay.active], 0);
  jcc(Cond::kNe, slow);
  mov(byte[r10 + lay.active], 1);
  mov(r11d, dword[r10 + lay.cnt]);
  inc(r11d);
  // unit_try_free's test: above high with the worker not asked yet to trim
  // is the call's (which asks).
  const Lbl push = new_label();
  cmp(r11d, dword[r10 + lay.high]);
  jcc(Cond::kBe, push);
  cmp(byte[r10 + lay.kicked], 0);
  jcc(Cond::kEq, busy);
  bind(push);
  mov(rax, maps::obj_free_state(d, size));
  mov(qword[rdi - 8], rax);
  lea(rax, ptr[rdi - 16]);
  mov(rcx, qword[r10 + lay.head]);
  mov(qword[rax], rcx);
  mov(qword[r10 + lay.head], rax);
  mov(dword[r10 + lay.cnt], r11d);
  mov(byte[r10 + lay.active], 0);
  dec(dword[r12 + kOffObjHeld]);
  bind(done);
  xor_(eax, eax);
  bind(out);
  emit_clobber(live_out_[pc]);
  emit_obj_slow(pc, proto, busy, slow, out, true);
  return true;
}

}  // namespace userbpf::vm::jit
