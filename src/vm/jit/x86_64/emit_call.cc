// The x86-64 code generator: calls (bpf-to-bpf, callx, helpers and kfuncs
// with their argument checks and grants) and inlined map lookups.
#include "vm/jit/x86_64/emitter.h"

#include <bit>

namespace userbpf::vm::jit {
namespace {

bool has_pointer_args(const HelperProto& p) {
  for (ArgKind k : p.args) {
    if (k != ArgKind::kNone && k != ArgKind::kAnything && k != ArgKind::kConstSize &&
        k != ArgKind::kConstSizeOrZero) {
      return true;
    }
  }
  return false;
}

}  // namespace

void Emitter::emit_zero_frame() {
  push(rdi);
  push(rcx);
  mov(ptr[r12 + kOffZeroedLo], r10);
  mov(rdi, r10);
  xor_(eax, eax);
  mov(ecx, kFrame / 8);
  rep();
  stosq();
  pop(rcx);
  pop(rdi);
}

void Emitter::emit_frame_push(size_t pc) {
  const Lbl deep = new_label();
  cmp(rbp, ptr[r12 + kOffFrameLimit]);
  jcc(Cond::kB, deep);
  fault_stub(deep, kFaultDepth, pc, nullptr);
  const Lbl clear = new_label();
  const Lbl cleared = new_label();
  lea(r10, ptr[rbp - 2 * kFrame]);
  cmp(r10, ptr[r12 + kOffZeroedLo]);
  jcc(Cond::kB, clear);
  bind(cleared);
  cold_.push_back([this, clear, cleared] {
    bind(clear);
    push(rax);
    emit_zero_frame();
    pop(rax);
    jmp_to(cleared);
  });
  charge_budget(pc, 1);
}

void Emitter::emit_call(size_t pc, const Insn& in) {
  if (in.code == kCallx) {
    // The value must name a function of this program (is_callback_value).
    for (const Reg64& r : {rax, rdi, rsi, rdx, rcx, r8, r9}) push(r);
    sub(rsp, 8);
    mov(rsi, kReg[in.dst]);
    mov(rdi, r12);
    mov(edx, static_cast<uint32_t>(pc));
    mov(ptr[r12 + kOffBudget], r9);
    call_abs(reinterpret_cast<const void*>(&jit_callx_target));
    mov(r11, rax);
    add(rsp, 8);
    for (const Reg64& r : {r9, r8, rcx, rdx, rsi, rdi, rax}) pop(r);
    test(r11, r11);
    jcc(Cond::kZ, fault_exit_synced_);
    emit_frame_push(pc);
    sub(rbp, kFrame);
    call(r11);
    add(rbp, kFrame);
    return;
  }
  if (in.src == kPseudoCall) {
    emit_frame_push(pc);
    sub(rbp, kFrame);
    call_to(func_lbl(pc + 1 + in.imm));
    add(rbp, kFrame);
    return;
  }
  const HelperProto& proto =
      in.src == kPseudoCallHelper ? *prog_.helpers[in.imm] : *prog_.kfuncs[in.imm];
  if (in.src == kPseudoCallHelper && in.imm == kHelperMapLookupElem &&
      (emit_inline_lookup(pc, proto) || emit_hash_lookup(pc))) {
    return;
  }
  if (in.src == kPseudoCallHelper && in.imm == kHelperLoop && emit_inline_loop(pc, proto)) {
    return;
  }
  if (emit_obj_new(pc, proto) || emit_obj_drop(pc, proto)) return;
  if (proto.slot_fn != nullptr) {
    emit_slot_call(pc, proto);
    return;
  }
  emit_helper_call(pc, proto);
}

// The call of proto.slot_fn alone (r1 and r2 as the program set them).
void Emitter::emit_slot_fn_call(size_t pc, const HelperProto& proto) {
  mov(ptr[r12 + kOffBudget], r9);
  mov(ptr[r12 + kOffCurRbp], rbp);
  mov(r10, reinterpret_cast<uint64_t>(insns_ + pc));
  mov(ptr[r12 + kOffCallPc], r10);
  lea(rdx, ptr[r12 + kOffObjRun]);
  call_abs(reinterpret_cast<const void*>(proto.slot_fn));
  mov(r9, ptr[r12 + kOffBudget]);
}

// A call with HelperProto::slot_fn (the loader's resolved bpf_obj_new and
// bpf_obj_drop): a direct call with the run's slot cache, none of the helper
// protocol they do not need (they check no argument the interpreter checks,
// run no program code, move no packet). What the interpreter does around
// them is kept: the fault stop (a bad drop), the call pc and frame for its
// message. A new object takes no grant on either engine: the region logic
// finds objects by address (maps::obj_region).
void Emitter::emit_slot_call(size_t pc, const HelperProto& proto) {
  emit_slot_fn_call(pc, proto);
  cmp(byte[r12 + kOffStop], 0);
  jcc(Cond::kNe, fault_exit_synced_);
  emit_clobber(live_out_[pc]);
}

// A helper or kfunc: a direct call to proto.fn, with the interpreter's
// argument checks before and region grants after.
void Emitter::emit_helper_call(size_t pc, const HelperProto& proto) {
  const bool check = has_pointer_args(proto);
  const bool grant = proto.ret == RetKind::kMemOrNull || proto.ret == RetKind::kMapValueOrNull;
  mov(ptr[r12 + kOffBudget], r9);
  mov(ptr[r12 + kOffCurRbp], rbp);
  mov(r10, reinterpret_cast<uint64_t>(insns_ + pc));
  mov(ptr[r12 + kOffCallPc], r10);
  // Map helpers with a constant map of this program in r1 and their key and
  // value pointers inside the current frame chain pass check_helper_args
  // for sure: checked here, the C check only runs otherwise.
  const maps::Map* map = r1_map_[pc];
  bool fast = check && map != nullptr && proto.args[0] == ArgKind::kConstMapPtr;
  for (int i = 1; fast && i < 5; ++i) {
    const ArgKind k = proto.args[i];
    const uint32_t size = k == ArgKind::kMapKey     ? map->attr.key_size
                          : k == ArgKind::kMapValue ? map->attr.value_size
                                                    : 0;
    fast = k == ArgKind::kNone || k == ArgKind::kAnything ||
           ((k == ArgKind::kMapKey || k == ArgKind::kMapValue) && size <= kFrame);
  }
  // Arguments proven inside the current frame (emit_facts.cc) need no code.
  auto proven = [&](int i, uint32_t size) {
    const int32_t off = arg_stack_off_[pc][i - 1];
    return off != kNoKeyOff && static_cast<int64_t>(off) + size <= 0;
  };
  bool all_proven = fast;
  for (int i = 1; all_proven && i < 5; ++i) {
    const ArgKind k = proto.args[i];
    if (k != ArgKind::kMapKey && k != ArgKind::kMapValue) continue;
    const uint32_t size = k == ArgKind::kMapKey ? map->attr.key_size : map->attr.value_size;
    all_proven = size == 0 || proven(i, size);
  }
  // The C argument check and the grant read r0-r5 from the stack:
  // regs[0..5] = r0..r5 at [rsp]; 48 bytes keep the alignment.
  const bool save = (check && !all_proven) || grant;
  if (save) {
    for (const Reg64& r : {r8, rcx, rdx, rsi, rdi, rax}) push(r);
  }
  const Lbl checked = new_label();
  if (fast && !all_proven) {
    const Lbl c_check = new_label();
    lea(r10, ptr[rbp - kFrame]);
    for (int i = 1; i < 5; ++i) {
      const ArgKind k = proto.args[i];
      if (k != ArgKind::kMapKey && k != ArgKind::kMapValue) continue;
      const uint32_t size = k == ArgKind::kMapKey ? map->attr.key_size : map->attr.value_size;
      if (size == 0 || proven(i, size)) continue;
      mov(r11, ptr[r12 + kOffStackTop]);
      sub(r11, size);
      cmp(kReg[i + 1], r10);
      jcc(Cond::kB, c_check);
      cmp(kReg[i + 1], r11);
      jcc(Cond::kA, c_check);
    }
    jmp_to(checked);
    bind(c_check);
  }
  if (check && !all_proven) {
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(&proto));
    mov(rdx, rsp);
    call_abs(reinterpret_cast<const void*>(&jit_check_helper));
    test(rax, rax);
    jcc(Cond::kZ, fault_exit_synced_);
    mov(rax, ptr[rsp]);
    mov(rdi, ptr[rsp + 8]);
    mov(rsi, ptr[rsp + 16]);
    mov(rdx, ptr[rsp + 24]);
    mov(rcx, ptr[rsp + 32]);
    mov(r8, ptr[rsp + 40]);
  }
  bind(checked);
  // bpf_map_lookup_elem (helper ids are the kernel's) of a known map calls
  // the map's lookup directly, as the kernel's map_gen_lookup for hash maps
  // does; the helper would only add the indirection.
  const bool direct_lookup = in_is_lookup(pc) && map != nullptr && map->ops != nullptr &&
                             map->ops->lookup_elem != nullptr &&
                             proto.args[0] == ArgKind::kConstMapPtr &&
                             proto.args[1] == ArgKind::kMapKey;
  if (direct_lookup) {
    call_abs(reinterpret_cast<const void*>(map->ops->lookup_elem));
  } else {
    // Callbacks (bpf_loop, for_each_map_elem...) run program code from C.
    sync_may_goto_out();
    call_abs(reinterpret_cast<const void*>(proto.fn));
    sync_may_goto_in();
  }
  // The helper may have moved the packet: forget the cached region.
  if (call_may_move_packet(proto)) mov(qword[r12 + kOffHitSpan], 0);
  // The map of a map-value return, when r1 is a known map and the only map
  // argument (grant_return's search would find it): granted inline, without
  // the search.
  bool known_map_grant = grant && proto.ret == RetKind::kMapValueOrNull && map != nullptr &&
                         proto.args[0] == ArgKind::kConstMapPtr;
  for (int i = 1; known_map_grant && i < 5; ++i) {
    if (proto.args[i] == ArgKind::kConstMapPtr) known_map_grant = false;
  }
  if (known_map_grant) {
    emit_known_map_grant(map);
  } else if (grant) {
    mov(ptr[rsp], rax);
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(&proto));
    lea(rdx, ptr[rsp + 8]);
    mov(rcx, rax);
    call_abs(reinterpret_cast<const void*>(&jit_grant_return));
    mov(rax, ptr[rsp]);
  }
  if (save) add(rsp, 48);
  mov(r9, ptr[r12 + kOffBudget]);
  cmp(byte[r12 + kOffStop], 0);
  jcc(Cond::kNe, fault_exit_synced_);
  emit_clobber(live_out_[pc]);
}

void Emitter::emit_clobber(uint16_t live) {
  int first = 0;
  for (int r = 1; r <= 5; ++r) {
    if ((live >> r & 1) == 0) continue;
    if (first == 0) {
      mov(kReg[r], interp::kClobberedReg);
      first = r;
    } else {
      mov(kReg[r], kReg[first]);
    }
  }
}

// bpf_map_lookup_elem of a constant array map inlined (the kernel's
// map_gen_lookup): key on the stack, bounds check, address arithmetic, and
// the interpreter's bookkeeping of the call. Array values take no grant slot
// (interp::remember_value); the value becomes the hit region only if some
// access through it is not proven by the facts (lookup_caches_value_), and
// only the argument registers still read later get the clobbered value. An
// `if r0 == 0` or `if r0 != 0` right after the call, where no jump lands,
// branches straight from the lookup's two outcomes. A key elsewhere takes
// the full helper call. False if the call cannot be inlined.
bool Emitter::emit_inline_lookup(size_t pc, const HelperProto& proto) {
  const maps::Map* m = nullptr;
  if (!is_array_lookup(pc, &m)) return false;
  maps::ArrayLayout lay;
  array_layout(m, &lay);  // is_array_lookup checked it succeeds
  const bool rdonly = (m->attr.map_flags & maps::kBpfFRdonlyProg) != 0;
  const bool known_key = inline_lookup_known_key(pc);
  const Insn* test = nullptr;
  if (pc + 2 < n_ && !target_[pc + 1]) {
    const Insn& t = insns_[pc + 1];
    if ((t.code == (kClassJmp | kSrcK | kJmpJeq) || t.code == (kClassJmp | kSrcK | kJmpJne)) &&
        t.dst == 0 && t.imm == 0) {
      test = &t;
    }
  }
  const bool jeq = test != nullptr && insn_op(test->code) == kJmpJeq;
  const Lbl generic = new_label();
  const Lbl null_value = new_label();
  const Lbl done = new_label();
  // The key: 4 bytes in the current frame chain (check_helper_args' kMapKey),
  // known statically when r2 = r10 + constant.
  if (known_key) {
    mov(eax, dword[rbp + key_off_[pc]]);
  } else {
    lea(r10, ptr[rbp - kFrame]);
    cmp(rsi, r10);
    jcc(Cond::kB, generic);
    cmp(rsi, ptr[r12 + kOffTopMinus + 8 * log2_size(4)]);
    jcc(Cond::kA, generic);
    mov(eax, dword[rsi]);
  }
  cmp(eax, lay.max_entries);
  jcc(Cond::kAe, null_value);
  mov(r10, static_cast<uint64_t>(lay.base));
  const uint32_t es = lay.elem_size;
  if (es == 1 || es == 2 || es == 4 || es == 8) {
    lea(rax, ptr[r10 + rax * static_cast<int>(es)]);
  } else {
    imul(rax, rax, static_cast<int>(es));
    add(rax, r10);
  }
  if (lay.cpu_stride != 0) {
    // Per-CPU array: the copy of the run's CPU slot (RunContext::cpu, what
    // the map's own lookup picks from the held slot; JitState::cpu holds it
    // for the run: one load, not two).
    mov(r10, ptr[r12 + kOffCpu]);
    shl(r10, static_cast<uint8_t>(std::countr_zero(lay.cpu_stride)));
    add(rax, r10);
  }
  if (lay.cpu_stride != 0 && m->ops->value_at == nullptr) {
    // Copies the region logic cannot place take a grant, as the helper path.
    mov(r11d, rdonly ? 0 : 1);
    emit_add_grant(m->attr.value_size, rax);
  } else if (lookup_caches_value_[pc]) {
    // Writable unless read-only to programs (map_value_region).
    mov(r11d, rdonly ? 0 : 1);
    emit_set_hit(m->attr.value_size, rax);
  }
  const uint16_t live = live_out_[pc];
  emit_clobber(live);
  if (test != nullptr) {
    skip_pc_ = pc + 1;
    if (!jeq) emit_branch(pc + 1, test->off, nullptr);  // found: the jump is taken
  }
  bind(done);
  cold_.push_back([this, generic, null_value, done, pc, &proto, test, jeq, known_key, live] {
    bind(null_value);
    xor_(eax, eax);
    emit_clobber(live);
    if (test == nullptr) {
      jmp_to(done);
    } else if (jeq) {
      emit_branch(pc + 1, test->off, nullptr);
    } else {
      jmp_to(pc_lbl(pc + 2));
    }
    if (known_key) return;
    bind(generic);
    emit_helper_call(pc, proto);
    if (test == nullptr) {
      jmp_to(done);
    } else {
      emit_jmp(pc + 1, *test);
      jmp_to(pc_lbl(pc + 2));
    }
  });
  return true;
}

// bpf_map_lookup_elem of a constant hash map with its key in the frame: a
// direct call of the map's lookup (the helper's whole body), nothing else
// of the helper protocol (the lookup reads no run state, moves no packet,
// cannot fault or stop the run). Its values take no grant slot on either
// engine (interp::remember_value, MapOps::value_at); like an array value the
// result becomes the hit region only if some access through it is not proven
// by the facts. r1 and r2 are not read (the refined liveness may have
// dropped their set-up): the map and key offset are constants.
bool Emitter::emit_hash_lookup(size_t pc) {
  const maps::Map* m = nullptr;
  if (!is_hash_lookup(pc, &m) || !inline_lookup_known_key(pc)) return false;
  mov(ptr[r12 + kOffBudget], r9);  // r9 (the budget) is caller-saved
  mov(rdi, reinterpret_cast<uint64_t>(m));
  lea(rsi, ptr[rbp + key_off_[pc]]);
  call_abs(reinterpret_cast<const void*>(m->ops->lookup_elem));
  mov(r9, ptr[r12 + kOffBudget]);
  if (lookup_caches_value_[pc]) {
    const Lbl null_value = new_label();
    test(rax, rax);
    jcc(Cond::kZ, null_value);
    mov(r11d, (m->attr.map_flags & maps::kBpfFRdonlyProg) ? 0 : 1);
    emit_set_hit(m->attr.value_size, rax);
    bind(null_value);
  }
  emit_clobber(live_out_[pc]);
  return true;
}

// The hit region cache = [lo, lo + span), writable if r11b.
void Emitter::emit_set_hit(uint32_t span, const Reg64& lo) {
  mov(ptr[r12 + kOffHitLo], lo);
  mov(qword[r12 + kOffHitSpan], span);
  mov(byte[r12 + kOffHitWritable], r11b);
}

// The interpreter's add_grant(Region{lo, span, r11b}): the next grant slot
// and the hit cache. Clobbers r10 (lo must be another register).
void Emitter::emit_add_grant(uint32_t span, const Reg64& lo) {
  mov(r10d, dword[r12 + kOffNumGrants]);
  and_(r10d, interp::kMaxGrants - 1);
  imul(r10d, r10d, kRegionSize);
  mov(ptr[r12 + r10 + kOffGrants], lo);
  mov(qword[r12 + r10 + kOffGrants + kRegionSpan], span);
  mov(byte[r12 + r10 + kOffGrants + kRegionWritable], r11b);
  inc(dword[r12 + kOffNumGrants]);
  emit_set_hit(span, lo);
}

// interp::grant_map_value(s, m, rax) for a map known at compile time, with
// r0 saved at [rsp]: map_value_region's static tests decided here, the map's
// access_ok called directly (writable first unless read-only to programs,
// then read-only), the region recorded inline. rax is kept.
void Emitter::emit_known_map_grant(const maps::Map* m) {
  const uint32_t type = m->attr.type;
  const uint32_t size = m->attr.value_size;
  if (m->ops == nullptr || m->ops->access_ok == nullptr || size == 0 ||
      type == static_cast<uint32_t>(maps::MapType::kARRAY_OF_MAPS) ||
      type == static_cast<uint32_t>(maps::MapType::kHASH_OF_MAPS)) {
    return;  // map_value_region gives no region
  }
  const Lbl done = new_label();
  if (size > INT32_MAX) {  // beyond emit_add_grant's immediates: in C
    test(rax, rax);
    jcc(Cond::kZ, done);
    mov(ptr[rsp], rax);
    mov(rdi, r12);
    mov(rsi, reinterpret_cast<uint64_t>(m));
    mov(rdx, rax);
    call_abs(reinterpret_cast<const void*>(&jit_grant_map_value));
    mov(rax, ptr[rsp]);
    bind(done);
    return;
  }
  const void* access_ok = reinterpret_cast<const void*>(m->ops->access_ok);
  const Lbl read_only = new_label(), granted = new_label(), restore = new_label();
  test(rax, rax);
  jcc(Cond::kZ, done);
  mov(ptr[rsp], rax);
  if ((m->attr.map_flags & maps::kBpfFRdonlyProg) == 0) {
    mov(rdi, reinterpret_cast<uint64_t>(m));
    mov(rsi, rax);
    mov(edx, size);
    mov(ecx, 1);
    call_abs(access_ok);
    mov(r11d, 1);
    test(al, al);
    jcc(Cond::kNz, granted);
  }
  bind(read_only);
  mov(rdi, reinterpret_cast<uint64_t>(m));
  mov(rsi, ptr[rsp]);
  mov(edx, size);
  xor_(ecx, ecx);
  call_abs(access_ok);
  test(al, al);
  jcc(Cond::kZ, restore);
  xor_(r11d, r11d);
  bind(granted);
  mov(rax, ptr[rsp]);
  // interp::remember_value: values found by address are cached, others
  // granted.
  maps::ArrayLayout lay;
  if ((m->ops->gen_lookup != nullptr && m->ops->gen_lookup(m, &lay)) ||
      m->ops->value_at != nullptr) {
    emit_set_hit(size, rax);
  } else {
    emit_add_grant(size, rax);
  }
  bind(restore);
  mov(rax, ptr[rsp]);
  bind(done);
}

}  // namespace userbpf::vm::jit

namespace userbpf::vm::jit {

// bpf_loop(nr, fn, ctx, flags) with fn a known function of this program,
// inlined like the kernel's inline_bpf_loop: the helper's checks (flags
// EINVAL, nr > BPF_MAX_LOOPS E2BIG), then per iteration what a callback
// through RunContext::call_fn does (call_callback in run.cc: budget, depth,
// first-use clearing of the frame, r0 and r6-r9 zeroed, r1 = i, r2 = ctx,
// r3-r5 = 0) and a direct call; a nonzero r0 stops after i + 1 calls. A fault
// inside the callback unwinds the whole run, as through the helper. The
// caller's r6-r9 and the loop state live on the native stack meanwhile.
bool Emitter::emit_inline_loop(size_t pc, const HelperProto& proto) {
  const int32_t fn = loop_callback_[pc];
  if (fn < 0 || proto.ret != RetKind::kInteger || proto.args[0] != ArgKind::kAnything ||
      proto.args[1] != ArgKind::kFunc || proto.args[2] != ArgKind::kAnything ||
      proto.args[3] != ArgKind::kAnything) {
    return false;
  }
  const Lbl einval = new_label(), e2big = new_label(), next = new_label();
  const Lbl all = new_label(), done = new_label(), deep = new_label(), clear = new_label();
  const Lbl cleared = new_label();
  mov(r10, reinterpret_cast<uint64_t>(insns_ + pc));
  mov(ptr[r12 + kOffCallPc], r10);
  test(rcx, rcx);
  jcc(Cond::kNz, einval);
  cmp(edi, kBpfMaxLoops);
  jcc(Cond::kA, e2big);
  // [rsp]: i, [rsp + 8]: nr, [rsp + 16]: ctx, [rsp + 24]: pad, then r6-r9.
  push(rbx);
  push(r13);
  push(r14);
  push(r15);
  sub(rsp, 32);
  mov(qword[rsp], 0);
  mov(edi, edi);
  mov(ptr[rsp + 8], rdi);
  mov(ptr[rsp + 16], rdx);
  bind(next);
  mov(rax, ptr[rsp]);
  cmp(rax, ptr[rsp + 8]);
  jcc(Cond::kAe, all);
  charge_budget(pc, 1);
  cmp(rbp, ptr[r12 + kOffFrameLimit]);
  jcc(Cond::kB, deep);
  lea(r10, ptr[rbp - 2 * kFrame]);
  cmp(r10, ptr[r12 + kOffZeroedLo]);
  jcc(Cond::kB, clear);
  bind(cleared);
  mov(rdi, ptr[rsp]);
  mov(rsi, ptr[rsp + 16]);
  xor_(edx, edx);
  xor_(ecx, ecx);
  xor_(r8d, r8d);
  xor_(eax, eax);
  xor_(ebx, ebx);
  xor_(r13d, r13d);
  xor_(r14d, r14d);
  if (!may_goto_reg_) xor_(r15d, r15d);  // else the run's may_goto budget
  sub(rbp, kFrame);
  call_to(func_lbl(static_cast<size_t>(fn)));
  add(rbp, kFrame);
  inc(qword[rsp]);
  test(rax, rax);
  jcc(Cond::kZ, next);
  mov(rax, ptr[rsp]);  // i + 1
  bind(done);
  if (may_goto_reg_) {
    add(rsp, 40);  // r15 carries the may_goto budget on
  } else {
    add(rsp, 32);
    pop(r15);
  }
  pop(r14);
  pop(r13);
  pop(rbx);
  const Lbl out = new_label();
  bind(out);
  mov(qword[r12 + kOffHitSpan], 0);
  emit_clobber(live_out_[pc]);
  fault_stub(deep, kFaultDepth, pc, nullptr);
  cold_.push_back([this, all, done, einval, e2big, out, clear, cleared] {
    bind(all);
    mov(rax, ptr[rsp + 8]);
    jmp_to(done);
    bind(einval);
    mov(rax, static_cast<uint64_t>(-static_cast<int64_t>(EINVAL)));
    jmp_to(out);
    bind(e2big);
    mov(rax, static_cast<uint64_t>(-static_cast<int64_t>(E2BIG)));
    jmp_to(out);
    bind(clear);
    emit_zero_frame();
    jmp_to(cleared);
  });
  return true;
}

}  // namespace userbpf::vm::jit
