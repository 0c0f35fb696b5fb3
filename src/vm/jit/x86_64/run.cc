// Running JIT code: the run entry (the JIT's interpret()), callbacks through
// RunContext::call_fn, and the C slow paths generated code calls, all built on
// the interpreter's region and fault logic (interp_check.cc).
#include <cinttypes>
#include <cstring>
#include <mutex>
#include <optional>

#include <time.h>

#include "vm/jit/x86_64/compile_mem.h"
#include "vm/jit/x86_64/jit_internal.h"

namespace userbpf::vm {

JitImage::~JitImage() {
  if (extable_slot >= 0) jit::unregister_extable(extable_slot);
  if (code != nullptr) jit::CodePages::give(code, map_size);
}

namespace jit {
namespace {

constexpr uintptr_t kFrame = isa::kStackSize;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The interpreter's stack depth for C code that checks the frame chain.
void sync_depth(JitState* st) {
  const uintptr_t top = reinterpret_cast<uintptr_t>(st->s.stack_top);
  st->s.depth = static_cast<int>((top - st->cur_rbp) / kFrame);
}

// A function's native entry (prologue first: for calls from generated code)
// and its body (for the entry trampoline, which builds the frame itself).
const void* native_entry(const JitState& st, uint32_t pc) {
  return st.image->code + st.image->pc_offset[pc];
}
const void* native_body(const JitState& st, uint32_t pc) {
  return st.image->code + st.image->pc_offset[pc] + kPrologueBytes;
}

// RunContext::call_fn: a helper calling back into the program; mirrors the
// interpreter's call_callback + run_frames entry checks.
// Calls into generated code. UBSan's -fsanitize=function reads a type
// signature just before the callee, which generated code does not have (and
// the bytes before the first function of an image are unmapped).
[[clang::no_sanitize("function")]] uint64_t call_jit(EnterFn enter, const void* target, JitState* j,
                                                     uintptr_t rbp, const uint64_t* args) {
  return enter(target, j, rbp, args);
}

uint64_t call_callback(RunContext* rc, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5) {
  JitState& j = *static_cast<JitState*>(rc->engine_state);
  interp::InterpState& s = j.s;
  if (s.stop != interp::Stop::kRunning) return 0;
  if (!interp::is_callback_value(*s.prog, fn)) {
    interp::set_fault(s, EFAULT, s.call_pc, fn, "callback 0x%" PRIx64 " is not a function", fn);
    return 0;
  }
  if (s.budget == 0) {
    interp::set_fault(s, ELOOP, s.call_pc, 0, "instruction budget exhausted");
    return 0;
  }
  --s.budget;
  const uintptr_t rbp = j.cur_rbp - kFrame;
  if (rbp < j.frame_limit - kFrame) {
    interp::set_fault(s, E2BIG, s.call_pc, 0, "call stack deeper than %d frames",
                      isa::kMaxCallFrames);
    return 0;
  }
  if (rbp - kFrame < j.zeroed_lo) {
    std::memset(reinterpret_cast<void*>(rbp - kFrame), 0, kFrame);
    j.zeroed_lo = rbp - kFrame;
  }
  const isa::Insn* const saved_call_pc = s.call_pc;
  const uintptr_t saved_rbp = j.cur_rbp;
  const uint64_t args[5] = {a1, a2, a3, a4, a5};
  const uint64_t r0 =
      call_jit(j.image->enter, native_body(j, static_cast<uint32_t>(fn)), &j, rbp, args);
  s.call_pc = saved_call_pc;
  j.cur_rbp = saved_rbp;
  return r0;
}

// A RunLoop's JIT state: set up once by begin_jit_loop, reset per run by
// jit_loop_run.
struct JitLoop {
  JitState j;
  alignas(64) uint8_t stack[isa::kMaxCallFrames * isa::kStackSize];
  uint64_t (*saved_call_fn)(RunContext*, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                            uint64_t);
  void* saved_state;
  std::optional<RunScope> scope;
};
static_assert(sizeof(JitLoop) <= RunLoop::kStateBytes);

// A run that resets the whole state (and the entry frame if the program may
// write memory).
[[gnu::noinline]] uint64_t jit_loop_run_full(RunLoop& loop, uint32_t entry, const uint64_t* args) {
  JitLoop& l = *reinterpret_cast<JitLoop*>(loop.state);
  JitState& j = l.j;
  interp::InterpState& s = j.s;
  RunContext& rc = *loop.rc;
  const JitImage& img = *j.image;
  // What a run changes: the entry frame's bytes, budgets, region cache and
  // grants, the stop (entry_rsp is restored by every exit, faults included).
  const uintptr_t top = reinterpret_cast<uintptr_t>(s.stack_top);
  // The entry frame starts zeroed (begin_jit_loop); a run of a program that
  // cannot write memory leaves it so.
  if (img.writes_memory) std::memset(l.stack + sizeof(l.stack) - kFrame, 0, kFrame);
  j.zeroed_lo = top - kFrame;
  j.cur_rbp = top;
  s.depth = 0;
  s.budget = rc.insn_budget;
  s.may_goto_left = interp::kMayGotoBudget;
  s.obj = ObjRunState{};
  j.cpu = rc.cpu;
  s.call_pc = nullptr;
  s.hit.span = 0;
  s.hit_map = nullptr;
  s.num_grants = 0;
  s.stop = interp::Stop::kRunning;
  if (rc.faulted) clear_fault(rc);
  const uint64_t r0 = call_jit(img.enter, native_body(j, entry), &j, top, args);
  if (s.obj.held != 0) [[unlikely]]
    interp::release_held_objects(s);
  rc.insn_budget = s.budget;
  loop.stopped = s.stop != interp::Stop::kRunning;
  return r0;
}

// A run of a program that keeps the state (JitImage::keeps_state) and never
// writes its stack after a run that did not stop: only the budget changes.
// Kept small: the host's repeat loop pays for every instruction here.
uint64_t jit_loop_run(RunLoop& loop, uint32_t entry, const uint64_t* args) {
  JitState& j = reinterpret_cast<JitLoop*>(loop.state)->j;
  const JitImage& img = *j.image;
  if (!img.keeps_state || img.writes_memory || loop.stopped) {
    return jit_loop_run_full(loop, entry, args);
  }
  j.s.budget = loop.rc->insn_budget;
  const uint64_t r0 = call_jit(img.enter, native_body(j, entry), &j,
                               reinterpret_cast<uintptr_t>(j.s.stack_top), args);
  loop.rc->insn_budget = j.s.budget;
  loop.stopped = j.s.stop != interp::Stop::kRunning;
  return r0;
}

Result<uint64_t> jit_loop_stop(RunLoop& loop, uint64_t r0) {
  return interp::run_result(reinterpret_cast<JitLoop*>(loop.state)->j.s, r0);
}

void jit_loop_end(RunLoop& loop) {
  JitLoop& l = *reinterpret_cast<JitLoop*>(loop.state);
  loop.rc->call_fn = l.saved_call_fn;
  loop.rc->engine_state = l.saved_state;
  l.~JitLoop();
}

std::mutex g_compile_lock;

}  // namespace

uint64_t jit_check_access(JitState* st, uint64_t addr, uint64_t packed) {
  interp::InterpState& s = st->s;
  sync_depth(st);
  const uint32_t pc = static_cast<uint32_t>(packed >> 8);
  const bool write = packed & 1;
  const bool atomic = packed & 2;
  const uint64_t size = uint64_t{1} << ((packed >> 2) & 3);
  if (interp::check_mem(s, addr, size, write) && (!atomic || addr % size == 0)) return 1;
  interp::fault_access(s, s.insns + pc, addr, size, write, atomic);
  return 0;
}

uint64_t jit_check_helper(JitState* st, const HelperProto* proto, const uint64_t* regs) {
  sync_depth(st);
  return interp::check_helper_args(st->s, *proto, regs) ? 1 : 0;
}

void jit_grant_return(JitState* st, const HelperProto* proto, const uint64_t* args, uint64_t r0) {
  interp::grant_return(st->s, *proto, args, r0);
}

void jit_grant_map_value(JitState* st, const maps::Map* map, uint64_t r0) {
  interp::grant_map_value(st->s, map, r0);
}

void jit_fault(JitState* st, uint32_t kind, uint32_t pc, uint64_t value) {
  interp::InterpState& s = st->s;
  const isa::Insn* at = s.insns + pc;
  switch (kind) {
    case kFaultBudget:
      interp::set_fault(s, ELOOP, at, 0, "instruction budget exhausted");
      break;
    case kFaultDepth:
      interp::set_fault(s, E2BIG, at, 0, "call stack deeper than %d frames", isa::kMaxCallFrames);
      break;
    default:
      interp::set_fault(s, EINVAL, at, 0, "invalid instruction (code 0x%02x)", at->code);
      break;
  }
  (void)value;
}

uint64_t jit_load_packet(JitState* st, int64_t off, uint64_t size) {
  const RunContext& rc = *st->s.rc;
  if (off >= 0 && rc.data != nullptr && rc.data_end > rc.data) {
    const uint64_t len = static_cast<uint64_t>(rc.data_end - rc.data);
    if (static_cast<uint64_t>(off) <= len && len - static_cast<uint64_t>(off) >= size) {
      const uint8_t* p = rc.data + off;
      uint64_t v = 0;
      for (uint64_t i = 0; i < size; ++i) v = (v << 8) | p[i];
      return v;
    }
  }
  if (st->s.stop == interp::Stop::kRunning) st->s.stop = interp::Stop::kAborted;
  return 0;
}

uint64_t jit_callx_target(JitState* st, uint64_t value, uint32_t pc) {
  interp::InterpState& s = st->s;
  if (!interp::is_callback_value(*s.prog, value)) {
    interp::set_fault(s, EFAULT, s.insns + pc, value, "callx r%d: 0x%" PRIx64 " is not a function",
                      s.insns[pc].dst, value);
    return 0;
  }
  return reinterpret_cast<uintptr_t>(native_entry(*st, static_cast<uint32_t>(value)));
}

}  // namespace jit

bool jit_supported() {
  return true;  // this file is the x86-64 backend
}

Status jit_compile(Program& prog, const JitOptions& opts) {
  if (!prog.prepared || prog.exec_insns.empty()) {
    return make_error(EINVAL, "program '%s' is not prepared", prog.name.c_str());
  }
  std::lock_guard<std::mutex> lock(jit::g_compile_lock);
  if (prog.jit.load(std::memory_order_acquire) != nullptr) {
    return make_error(EEXIST, "program '%s' is already compiled", prog.name.c_str());
  }
  // Timed whole, the emitter's clean-up included.
  const uint64_t t0 = jit::now_ns();
  Result<JitImage*> img = jit::compile_x86_64(prog, opts);
  if (!img.ok()) return img.take_error();
  img.value()->compile_ns = jit::now_ns() - t0;
  prog.jit_owner.reset(img.value());
  prog.jit.store(img.value(), std::memory_order_release);
  return Status::Ok();
}

Status ensure_jit(Program& prog) {
  if (prog.jit.load(std::memory_order_acquire) != nullptr) return Status::Ok();
  Status st = jit_compile(prog, JitOptions{});
  if (!st.ok() && st.error().code == EEXIST) return Status::Ok();  // raced with another thread
  return st;
}

Status begin_jit_loop(RunLoop& loop, Program& prog, RunContext& rc) {
  JitImage* img = prog.jit.load(std::memory_order_acquire);
  if (img == nullptr) return make_error(EINVAL, "program '%s' is not compiled", prog.name.c_str());
  jit::JitLoop& l = *new (loop.state) jit::JitLoop;
  jit::JitState& j = l.j;
  interp::InterpState& s = j.s;
  s.prog = &prog;
  s.rc = &rc;
  s.insns = prog.exec_insns.data();
  s.stack_top = l.stack + sizeof(l.stack);
  s.depth = 0;
  s.user_base_hi = interp::arena_user_base_hi(prog);
  const uintptr_t top = reinterpret_cast<uintptr_t>(s.stack_top);
  for (int k = 0; k < 4; ++k) j.top_minus[k] = top - (uintptr_t{1} << k);
  j.frame_limit = reinterpret_cast<uintptr_t>(l.stack) + 2 * jit::kFrame;
  j.entry_rsp = 0;
  j.zeroed_lo = top - jit::kFrame;
  j.cur_rbp = top;
  j.image = img;
  std::memset(l.stack + sizeof(l.stack) - jit::kFrame, 0, jit::kFrame);
  l.saved_call_fn = rc.call_fn;
  l.saved_state = rc.engine_state;
  rc.prog = &prog;
  rc.call_fn = &jit::call_callback;
  rc.engine_state = &j;
  if (current_run() != &rc) l.scope.emplace(rc);
  loop.prog = &prog;
  loop.rc = &rc;
  loop.entry_args[0] = reinterpret_cast<uintptr_t>(rc.ctx);
  loop.entry_args[1] = rc.r2;
  loop.run_fn = &jit::jit_loop_run;
  loop.stop_fn = &jit::jit_loop_stop;
  loop.end_fn = &jit::jit_loop_end;
  clear_fault(rc);
  return Status::Ok();
}

Result<uint64_t> jit_run(Program& prog, RunContext& rc) {
  RunLoop loop;
  USERBPF_TRY(begin_jit_loop(loop, prog, rc));
  return loop.run();
}

Result<uint64_t> jit_run_callback(Program& prog, RunContext& rc, uint64_t fn,
                                  const uint64_t (&args)[5]) {
  RunLoop loop;
  USERBPF_TRY(begin_jit_loop(loop, prog, rc));
  if (!interp::is_callback_value(prog, fn)) {
    return make_error(EINVAL, "program '%s': 0x%" PRIx64 " is not one of its functions",
                      prog.name.c_str(), fn);
  }
  return loop.run_at(static_cast<uint32_t>(fn), args);
}

Result<JitCode> jit_code(const Program& prog) {
  const JitImage* img = prog.jit.load(std::memory_order_acquire);
  if (img == nullptr) return make_error(EINVAL, "program '%s' is not compiled", prog.name.c_str());
  return JitCode{img->code, img->code_size, img->pc_offset};
}

uint32_t jit_checked_accesses(const Program& prog) {
  const JitImage* img = prog.jit.load(std::memory_order_acquire);
  return img != nullptr ? img->checked_accesses : 0;
}

JitLoopStats jit_loop_stats(const Program& prog) {
  const JitImage* img = prog.jit.load(std::memory_order_acquire);
  return img != nullptr ? img->loop_stats : JitLoopStats{};
}

uint64_t jit_compile_ns(const Program& prog) {
  const JitImage* img = prog.jit.load(std::memory_order_acquire);
  return img != nullptr ? img->compile_ns : 0;
}

}  // namespace userbpf::vm
