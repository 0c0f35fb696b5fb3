// The interpreter: a computed-goto dispatch loop over the executable form,
// one label per opcode byte (the table is spelled from the opcode X-lists),
// with kernel semantics for every instruction and every memory access
// checked against the regions the run may touch.
//
// Errors interpret() returns (rc.fault has pc, address and what):
//   EFAULT  bad load/store/atomic, bad helper pointer argument, call through a
//           value that is not a callback
//   E2BIG   more than kMaxCallFrames nested frames
//   ELOOP   rc.insn_budget exhausted (runaway loop)
//   EINVAL  program not prepared, or an invalid instruction reached
//
// Speed: the stack check is inline (one compare: the current frame chain is
// one contiguous range), then a one-entry cache of the last other region hit,
// then interp_check.cc. The instruction budget is charged only on backward
// jumps (with the jump distance, the size of the loop body) and calls, so
// straight-line code and forward branches pay nothing. A helper or kfunc
// call pays only for what its proto needs: a slot_fn (the loader's
// bpf_obj_new / bpf_obj_drop, each from a call site and dispatch of its
// own) is called bare; otherwise one word of argument kinds (arg_kinds)
// says whether check_helper_args has anything to check and whether the
// call may move the packet, and a map value's grant reuses the map the
// check found. The program runs in the interpreter's form
// (Program::interp_insns, interp_form.cc): bpf_obj_new / bpf_obj_drop with
// the moves that set their arguments, and `add K` with the jump after it,
// are one dispatch each; loads and stores that the form's facts prove
// inside an object the run holds run unchecked (obj_* handlers), and a
// drop of an object the facts follow knows its class, and keeps the object
// for the run's next such new of the class (run_frames' kept), so a loop
// that allocates and drops does not go through the slot's list.
#include <cinttypes>
#include <cstring>
#include <optional>

#include "isa/decode.h"
#include "isa/opcodes.h"
#include "maps/bpf_obj_fast.h"
#include "vm/interp_state.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "le/be and the packet loads assume a little-endian host");

namespace userbpf::vm {
namespace interp {
namespace {

using isa::Insn;
using namespace isa;  // opcode constants in the dispatch table

constexpr uintptr_t kFrame = kStackSize;

inline uint64_t sdiv64(uint64_t a, uint64_t b) {
  if (b == 0) return 0;
  if (b == ~0ull) return 0 - a;  // INT64_MIN / -1 wraps to INT64_MIN, no SIGFPE
  return static_cast<uint64_t>(static_cast<int64_t>(a) / static_cast<int64_t>(b));
}
inline uint64_t smod64(uint64_t a, uint64_t b) {
  if (b == 0) return a;
  if (b == ~0ull) return 0;
  return static_cast<uint64_t>(static_cast<int64_t>(a) % static_cast<int64_t>(b));
}
inline uint32_t sdiv32(uint32_t a, uint32_t b) {
  if (b == 0) return 0;
  if (b == ~0u) return 0 - a;
  return static_cast<uint32_t>(static_cast<int32_t>(a) / static_cast<int32_t>(b));
}
inline uint32_t smod32(uint32_t a, uint32_t b) {
  if (b == 0) return a;
  if (b == ~0u) return 0;
  return static_cast<uint32_t>(static_cast<int32_t>(a) % static_cast<int32_t>(b));
}

// Legacy packet load: big-endian, from [data, data_end). False when out of range.
inline bool load_packet(const RunContext& rc, int64_t off, int size, uint64_t* out) {
  if (off < 0 || rc.data == nullptr || rc.data_end <= rc.data) return false;
  const uint64_t len = static_cast<uint64_t>(rc.data_end - rc.data);
  if (static_cast<uint64_t>(off) > len ||
      len - static_cast<uint64_t>(off) < static_cast<uint64_t>(size)) {
    return false;
  }
  const uint8_t* p = rc.data + off;
  uint64_t v = 0;
  for (int i = 0; i < size; ++i) v = (v << 8) | p[i];
  *out = v;
  return true;
}

// Pushes frame depth + 1 (the caller checked the limit); clears it the first
// time this run reaches that depth.
inline void enter_frame(InterpState& s) {
  ++s.depth;
  // (Out of line: a program that writes its stack clears a frame every run
  // anyway; the hint lays run_frames out better, measured on the loop
  // benchmarks: ARCHITECTURE.md.)
  if (s.depth >= s.zeroed) [[unlikely]] {
    std::memset(s.stack_top - (s.depth + 1) * kFrame, 0, kFrame);
    s.zeroed = s.depth + 1;
  }
}

// Object o, which the known drop f kept (run_frames), back on its list.
[[gnu::noinline]] void give_back_kept(const InterpState& s, const InterpObjCall& f, uintptr_t o) {
  maps::obj_give_back(f.lists, s.obj.slot, o,
                      [&](uintptr_t p) { maps::obj_free_class(*f.domain, s.obj.slot, f.cls, p); });
}

uint64_t run_frames(InterpState& s, uint32_t entry, const uint64_t* args);

// RunContext::call_fn: a helper calling back into the program.
uint64_t call_callback(RunContext* rc, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5) {
  InterpState& s = *static_cast<InterpState*>(rc->engine_state);
  if (s.stop != Stop::kRunning) return 0;
  if (!is_callback_value(*s.prog, fn)) {
    set_fault(s, EFAULT, s.call_pc, fn, "callback 0x%" PRIx64 " is not a function", fn);
    return 0;
  }
  if (s.budget == 0) {
    set_fault(s, ELOOP, s.call_pc, 0, "instruction budget exhausted");
    return 0;
  }
  --s.budget;
  if (s.depth + 1 >= kMaxCallFrames) {
    set_fault(s, E2BIG, s.call_pc, 0, "call stack deeper than %d frames", kMaxCallFrames);
    return 0;
  }
  const Insn* saved_call_pc = s.call_pc;
  const uint64_t args[5] = {a1, a2, a3, a4, a5};
  const uint64_t r0 = run_frames(s, static_cast<uint32_t>(fn), args);
  s.call_pc = saved_call_pc;
  return r0;
}

// Runs the function at entry on a new frame until it returns; r0 or 0 if the
// run stopped. Re-entered (recursively) for callbacks; the caller checked
// that one more frame fits (a run's first frame always does).
uint64_t run_frames(InterpState& s, uint32_t entry, const uint64_t* args) {
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wc99-designator"
#pragma clang diagnostic ignored "-Wgnu-designator"
#pragma clang diagnostic ignored "-Winitializer-overrides"
#pragma clang diagnostic ignored "-Wgnu-label-as-value"
  // clang-format off
#define USERBPF_ALU_ENTRY(name, op)                      \
  [kClassAlu64 | kSrcK | op] = &&alu64_##name##_k,       \
  [kClassAlu64 | kSrcX | op] = &&alu64_##name##_x,       \
  [kClassAlu | kSrcK | op] = &&alu32_##name##_k,         \
  [kClassAlu | kSrcX | op] = &&alu32_##name##_x,
#define USERBPF_JMP_ENTRY(name, op)                      \
  [kClassJmp | kSrcK | op] = &&jmp_##name##_k,           \
  [kClassJmp | kSrcX | op] = &&jmp_##name##_x,           \
  [kClassJmp32 | kSrcK | op] = &&jmp32_##name##_k,       \
  [kClassJmp32 | kSrcX | op] = &&jmp32_##name##_x,
#define USERBPF_FUSED_ENTRY(name, op)                                       \
  [fused_add_jump_code(false, kClassJmp | kSrcK | op)] = &&add64_jmp_##name##_k,     \
  [fused_add_jump_code(false, kClassJmp | kSrcX | op)] = &&add64_jmp_##name##_x,     \
  [fused_add_jump_code(false, kClassJmp32 | kSrcK | op)] = &&add64_jmp32_##name##_k, \
  [fused_add_jump_code(false, kClassJmp32 | kSrcX | op)] = &&add64_jmp32_##name##_x, \
  [fused_add_jump_code(true, kClassJmp | kSrcK | op)] = &&add32_jmp_##name##_k,      \
  [fused_add_jump_code(true, kClassJmp | kSrcX | op)] = &&add32_jmp_##name##_x,      \
  [fused_add_jump_code(true, kClassJmp32 | kSrcK | op)] = &&add32_jmp32_##name##_k,  \
  [fused_add_jump_code(true, kClassJmp32 | kSrcX | op)] = &&add32_jmp32_##name##_x,
#define USERBPF_MEM_ENTRY(name, size, bytes)                          \
  [kClassLdx | kModeMem | size] = &&ldx_##name,                       \
  [kClassSt | kModeMem | size] = &&st_##name,                         \
  [kClassStx | kModeMem | size] = &&stx_##name,                       \
  [obj_access_code(kClassLdx | kModeMem | size)] = &&obj_ldx_##name,  \
  [obj_access_code(kClassSt | kModeMem | size)] = &&obj_st_##name,    \
  [obj_access_code(kClassStx | kModeMem | size)] = &&obj_stx_##name,
  static const void* const kTable[256] = {
      [0 ... 255] = &&invalid,
      USERBPF_ALU_BINOPS(USERBPF_ALU_ENTRY)
      USERBPF_JMP_CONDS(USERBPF_JMP_ENTRY)
      USERBPF_MEM_SIZES(USERBPF_MEM_ENTRY)
      USERBPF_JMP_CONDS(USERBPF_FUSED_ENTRY)
      [fused_add_jump_code(false, kClassJmp | kJmpJa)] = &&add64_ja,
      [fused_add_jump_code(true, kClassJmp | kJmpJa)] = &&add32_ja,
      [kClassAlu64 | kAluNeg] = &&alu64_neg,
      [kClassAlu | kAluNeg] = &&alu32_neg,
      [kClassAlu | kSrcK | kAluEnd] = &&end_le,
      [kClassAlu | kSrcX | kAluEnd] = &&end_be,
      [kClassAlu64 | kSrcK | kAluEnd] = &&end_be,  // bswap: same as be on little-endian
      [kClassJmp | kJmpJa] = &&ja,
      [kClassJmp32 | kJmpJa] = &&gotol,
      [kClassJmp | kJmpJcond] = &&may_goto,
      [kExecMovsx64] = &&exec_movsx64,
      [kExecMovsx32] = &&exec_movsx32,
      [kExecAddrSpaceCast] = &&exec_addr_space_cast,
      [kExecObjNew] = &&exec_obj_new,
      [kExecObjDrop] = &&exec_obj_drop,
      [kExecObjNewKnown] = &&exec_obj_new_known,
      [kExecObjDropKnown] = &&exec_obj_drop_known,
      [kCall] = &&call,
      [kCallx] = &&callx,
      [kExit] = &&exit,
      [kLdImm64] = &&ld_imm64,
      [kClassLd | kModeAbs | kSizeB] = &&ld_abs_b,
      [kClassLd | kModeAbs | kSizeH] = &&ld_abs_h,
      [kClassLd | kModeAbs | kSizeW] = &&ld_abs_w,
      [kClassLd | kModeInd | kSizeB] = &&ld_ind_b,
      [kClassLd | kModeInd | kSizeH] = &&ld_ind_h,
      [kClassLd | kModeInd | kSizeW] = &&ld_ind_w,
      [kClassLdx | kModeMemsx | kSizeB] = &&ldxsx_b,
      [kClassLdx | kModeMemsx | kSizeH] = &&ldxsx_h,
      [kClassLdx | kModeMemsx | kSizeW] = &&ldxsx_w,
      [obj_access_code(kClassLdx | kModeMemsx | kSizeB)] = &&obj_ldxsx_b,
      [obj_access_code(kClassLdx | kModeMemsx | kSizeH)] = &&obj_ldxsx_h,
      [obj_access_code(kClassLdx | kModeMemsx | kSizeW)] = &&obj_ldxsx_w,
      [kClassStx | kModeAtomic | kSizeW] = &&atomic_w,
      [kClassStx | kModeAtomic | kSizeDw] = &&atomic_dw,
  };
#undef USERBPF_ALU_ENTRY
#undef USERBPF_JMP_ENTRY
#undef USERBPF_MEM_ENTRY
#undef USERBPF_FUSED_ENTRY
  // clang-format on

  enter_frame(s);
  const int base = s.depth;
  const Insn* const insns = s.insns;
  const Insn* pc = insns + entry;
  const Insn* target;
  uint64_t reg[kNumRegs] = {0, args[0], args[1], args[2], args[3], args[4]};
  const uintptr_t top = reinterpret_cast<uintptr_t>(s.stack_top);
  reg[10] = top - base * kFrame;
  // The current chain of frames: [stk_lo, stk_lo + stk_span).
  uintptr_t stk_lo = top - (base + 1) * kFrame;
  uintptr_t stk_span = (base + 1) * kFrame;
  uint64_t budget = s.budget;
  // The object the last known drop released (kExecObjDropKnown), kept for
  // the next known new of its class: the top of the slot's free list
  // (LIFO), held here so a loop's new and drop do not go through the list.
  // kept_class: its class (ClassLists::base; 0: none kept), kept_by: the
  // drop (its lists, domain, class). The next known drop gives it back
  // before keeping its own, and so do both ways out of this function.
  uintptr_t kept_class = 0;
  uintptr_t kept;                // set with kept_class
  const InterpObjCall* kept_by;  // set with kept_class
  uint64_t addr;
  uint64_t acc_size;
  bool acc_write;
  bool acc_atomic;

#define DST reg[pc->dst]
#define SRC reg[pc->src]
#define IMM64 static_cast<uint64_t>(static_cast<int64_t>(pc->imm))
#define IMM32 static_cast<uint32_t>(pc->imm)
#define DISPATCH() goto* kTable[pc->code]
#define NEXT()  \
  do {          \
    ++pc;       \
    DISPATCH(); \
  } while (0)
  // Backward jumps charge the budget with their distance: budget + o_ (o_
  // negative, as unsigned) carries exactly when budget >= -o_.
#define JUMP_BY(o)                                                                             \
  do {                                                                                         \
    const int64_t o_ = (o);                                                                    \
    if (o_ < 0) {                                                                              \
      uint64_t left_;                                                                          \
      if (!__builtin_add_overflow(budget, static_cast<uint64_t>(o_), &left_)) goto budget_out; \
      budget = left_;                                                                          \
    }                                                                                          \
    pc += o_ + 1;                                                                              \
    DISPATCH();                                                                                \
  } while (0)
#define CHECK_ACCESS(a, size, write, atomic)                         \
  do {                                                               \
    addr = (a);                                                      \
    if (__builtin_expect(addr - stk_lo > stk_span - (size), 0) &&    \
        !check_mem_nonstack(s, addr, size, write)) {                 \
      acc_size = (size), acc_write = (write), acc_atomic = (atomic); \
      goto bad_access;                                               \
    }                                                                \
  } while (0)

  DISPATCH();

  // ---- ALU ------------------------------------------------------------------
#define ALU_SIMPLE(name, OP)                                                                   \
  alu64_##name##_k : DST = DST OP IMM64;                                                       \
  NEXT();                                                                                      \
  alu64_##name##_x : DST = DST OP SRC;                                                         \
  NEXT();                                                                                      \
  alu32_##name##_k : DST = static_cast<uint32_t>(static_cast<uint32_t>(DST) OP IMM32);         \
  NEXT();                                                                                      \
  alu32_##name##_x                                                                             \
      : DST = static_cast<uint32_t>(static_cast<uint32_t>(DST) OP static_cast<uint32_t>(SRC)); \
  NEXT();
  ALU_SIMPLE(add, +)
  ALU_SIMPLE(sub, -)
  ALU_SIMPLE(mul, *)
  ALU_SIMPLE(or, |)
  ALU_SIMPLE(and, &)
  ALU_SIMPLE(xor, ^)
#undef ALU_SIMPLE

  // Shift counts are masked to the operand width, like every kernel JIT.
alu64_lsh_k:
  DST <<= pc->imm & 63;
  NEXT();
alu64_lsh_x:
  DST <<= SRC & 63;
  NEXT();
alu32_lsh_k:
  DST = static_cast<uint32_t>(static_cast<uint32_t>(DST) << (pc->imm & 31));
  NEXT();
alu32_lsh_x:
  DST = static_cast<uint32_t>(static_cast<uint32_t>(DST) << (SRC & 31));
  NEXT();
alu64_rsh_k:
  DST >>= pc->imm & 63;
  NEXT();
alu64_rsh_x:
  DST >>= SRC & 63;
  NEXT();
alu32_rsh_k:
  DST = static_cast<uint32_t>(DST) >> (pc->imm & 31);
  NEXT();
alu32_rsh_x:
  DST = static_cast<uint32_t>(DST) >> (SRC & 31);
  NEXT();
alu64_arsh_k:
  DST = static_cast<uint64_t>(static_cast<int64_t>(DST) >> (pc->imm & 63));
  NEXT();
alu64_arsh_x:
  DST = static_cast<uint64_t>(static_cast<int64_t>(DST) >> (SRC & 63));
  NEXT();
alu32_arsh_k:
  DST = static_cast<uint32_t>(static_cast<int32_t>(static_cast<uint32_t>(DST)) >> (pc->imm & 31));
  NEXT();
alu32_arsh_x:
  DST = static_cast<uint32_t>(static_cast<int32_t>(static_cast<uint32_t>(DST)) >> (SRC & 31));
  NEXT();

  // Division by zero gives 0; modulo by zero leaves dst (32-bit: zero-extended).
#define DIVMOD(name, SRC64, SRC32)                            \
  alu64_div_##name : {                                        \
    const uint64_t d = SRC64;                                 \
    DST = pc->off ? sdiv64(DST, d) : d ? DST / d : 0;         \
    NEXT();                                                   \
  }                                                           \
  alu64_mod_##name : {                                        \
    const uint64_t d = SRC64;                                 \
    DST = pc->off ? smod64(DST, d) : d ? DST % d : DST;       \
    NEXT();                                                   \
  }                                                           \
  alu32_div_##name : {                                        \
    const uint32_t d = SRC32, v = static_cast<uint32_t>(DST); \
    DST = pc->off ? sdiv32(v, d) : d ? v / d : 0;             \
    NEXT();                                                   \
  }                                                           \
  alu32_mod_##name : {                                        \
    const uint32_t d = SRC32, v = static_cast<uint32_t>(DST); \
    DST = pc->off ? smod32(v, d) : d ? v % d : v;             \
    NEXT();                                                   \
  }
  DIVMOD(k, IMM64, IMM32)
  DIVMOD(x, SRC, static_cast<uint32_t>(SRC))
#undef DIVMOD

alu64_mov_k:
  DST = IMM64;
  NEXT();
alu32_mov_k:
  DST = IMM32;
  NEXT();
alu64_mov_x:
  DST = SRC;
  NEXT();
alu32_mov_x:
  DST = static_cast<uint32_t>(SRC);
  NEXT();
exec_movsx64:
  switch (pc->off) {
    case 8:
      DST = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(SRC)));
      NEXT();
    case 16:
      DST = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int16_t>(SRC)));
      NEXT();
    default:  // 32 (prepare allowed only 8/16/32)
      DST = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(SRC)));
      NEXT();
  }
exec_movsx32:
  DST = pc->off == 8 ? static_cast<uint32_t>(static_cast<int32_t>(static_cast<int8_t>(SRC)))
                     : static_cast<uint32_t>(static_cast<int32_t>(static_cast<int16_t>(SRC)));
  NEXT();
exec_addr_space_cast: {  // prepare allowed only imm 1 or 1 << 16
  const uint32_t lo = static_cast<uint32_t>(SRC);
  if (pc->imm == kAddrSpaceCastToKern) {
    DST = lo;
  } else {
    DST = lo ? (s.user_base_hi << 32) | lo : 0;
  }
  NEXT();
}
alu64_neg:
  DST = 0 - DST;
  NEXT();
alu32_neg:
  DST = static_cast<uint32_t>(0 - static_cast<uint32_t>(DST));
  NEXT();
end_le:
  DST = pc->imm == 16   ? static_cast<uint16_t>(DST)
        : pc->imm == 32 ? static_cast<uint32_t>(DST)
                        : DST;
  NEXT();
end_be:
  DST = pc->imm == 16   ? __builtin_bswap16(static_cast<uint16_t>(DST))
        : pc->imm == 32 ? __builtin_bswap32(static_cast<uint32_t>(DST))
                        : __builtin_bswap64(DST);
  NEXT();

  // ---- jumps ----------------------------------------------------------------
#define JMP_COND(name, T64, T32, COND)                                                         \
  jmp_##name##_k : if (COND(static_cast<T64>(DST), static_cast<T64>(IMM64))) JUMP_BY(pc->off); \
  NEXT();                                                                                      \
  jmp_##name##_x : if (COND(static_cast<T64>(DST), static_cast<T64>(SRC))) JUMP_BY(pc->off);   \
  NEXT();                                                                                      \
  jmp32_##name##_k                                                                             \
      : if (COND(static_cast<T32>(static_cast<uint32_t>(DST)), static_cast<T32>(IMM32)))       \
            JUMP_BY(pc->off);                                                                  \
  NEXT();                                                                                      \
  jmp32_##name##_x : if (COND(static_cast<T32>(static_cast<uint32_t>(DST)),                    \
                              static_cast<T32>(static_cast<uint32_t>(SRC)))) JUMP_BY(pc->off); \
  NEXT();
#define EQ(a, b) ((a) == (b))
#define NE(a, b) ((a) != (b))
#define GT(a, b) ((a) > (b))
#define GE(a, b) ((a) >= (b))
#define LT(a, b) ((a) < (b))
#define LE(a, b) ((a) <= (b))
#define SET(a, b) (((a) & (b)) != 0)
#define JMP_CONDS(X)               \
  X(jeq, uint64_t, uint32_t, EQ)   \
  X(jne, uint64_t, uint32_t, NE)   \
  X(jgt, uint64_t, uint32_t, GT)   \
  X(jge, uint64_t, uint32_t, GE)   \
  X(jlt, uint64_t, uint32_t, LT)   \
  X(jle, uint64_t, uint32_t, LE)   \
  X(jset, uint64_t, uint32_t, SET) \
  X(jsgt, int64_t, int32_t, GT)    \
  X(jsge, int64_t, int32_t, GE)    \
  X(jslt, int64_t, int32_t, LT)    \
  X(jsle, int64_t, int32_t, LE)
  JMP_CONDS(JMP_COND)

  // `add K` fused with the jump after it (fused_add_jump_code): the add at
  // pc, then the jump at pc + 1 exactly as its own handler does it.
#define ADD64_K DST += IMM64
#define ADD32_K DST = static_cast<uint32_t>(static_cast<uint32_t>(DST) + IMM32)
#define FUSED_ADD_JMP(A, ADD, name, T64, T32, COND)                                \
  A##_jmp_##name##_k : ADD;                                                        \
  ++pc;                                                                            \
  if (COND(static_cast<T64>(DST), static_cast<T64>(IMM64))) JUMP_BY(pc->off);      \
  NEXT();                                                                          \
  A##_jmp_##name##_x : ADD;                                                        \
  ++pc;                                                                            \
  if (COND(static_cast<T64>(DST), static_cast<T64>(SRC))) JUMP_BY(pc->off);        \
  NEXT();                                                                          \
  A##_jmp32_##name##_k : ADD;                                                      \
  ++pc;                                                                            \
  if (COND(static_cast<T32>(static_cast<uint32_t>(DST)), static_cast<T32>(IMM32))) \
    JUMP_BY(pc->off);                                                              \
  NEXT();                                                                          \
  A##_jmp32_##name##_x : ADD;                                                      \
  ++pc;                                                                            \
  if (COND(static_cast<T32>(static_cast<uint32_t>(DST)),                           \
           static_cast<T32>(static_cast<uint32_t>(SRC))))                          \
    JUMP_BY(pc->off);                                                              \
  NEXT();
#define FUSED_ADD64_JMP(name, T64, T32, COND) FUSED_ADD_JMP(add64, ADD64_K, name, T64, T32, COND)
#define FUSED_ADD32_JMP(name, T64, T32, COND) FUSED_ADD_JMP(add32, ADD32_K, name, T64, T32, COND)
  JMP_CONDS(FUSED_ADD64_JMP)
  JMP_CONDS(FUSED_ADD32_JMP)
add64_ja:
  ADD64_K;
  ++pc;
  JUMP_BY(pc->off);
add32_ja:
  ADD32_K;
  ++pc;
  JUMP_BY(pc->off);
#undef FUSED_ADD64_JMP
#undef FUSED_ADD32_JMP
#undef FUSED_ADD_JMP
#undef ADD64_K
#undef ADD32_K
#undef JMP_CONDS
#undef EQ
#undef NE
#undef GT
#undef GE
#undef LT
#undef LE
#undef SET
#undef JMP_COND

ja:
  JUMP_BY(pc->off);
gotol:
  JUMP_BY(pc->imm);
may_goto:
  // Falls through while the run's loop budget lasts, jumps once it is spent.
  if (s.may_goto_left == 0) JUMP_BY(pc->off);
  --s.may_goto_left;
  NEXT();

  // ---- calls ----------------------------------------------------------------
call:
  if (pc->src == kPseudoCall) {
    target = pc + 1 + pc->imm;
    goto push_frame;
  }
  {
    const HelperProto& proto =
        pc->src == kPseudoCallHelper ? *s.prog->helpers[pc->imm] : *s.prog->kfuncs[pc->imm];
    s.budget = budget;
    s.call_pc = pc;
    // After the call: r1-r5 unreadable, a fault in the callee stops the
    // run, callbacks may have spent budget.
#define CALL_RETURNED()                                         \
  do {                                                          \
    reg[1] = reg[2] = reg[3] = reg[4] = reg[5] = kClobberedReg; \
    if (s.stop != Stop::kRunning) goto stopped;                 \
    budget = s.budget;                                          \
    NEXT();                                                     \
  } while (0)
    if (proto.slot_fn != nullptr) {
      // The loader's bpf_obj_new / bpf_obj_drop: nothing to check, no
      // packet moved, no grant (prepare_program holds protos with a
      // slot_fn to call_needs_nothing). New and drop get a call and a
      // dispatch each: a program alternates them, and one shared indirect
      // call and jump would alternate their targets too, which predicts
      // worse than two sites with one target each.
      if (proto.obj_call == HelperProto::ObjCall::kNew) {
        asm volatile("");  // keeps the two calls apart (no hoisting)
        reg[0] = proto.slot_fn(reg[1], reg[2], &s.obj);
        CALL_RETURNED();
      }
      reg[0] = proto.slot_fn(reg[1], reg[2], &s.obj);
      CALL_RETURNED();
    }
    const uint32_t kinds = arg_kinds(proto);
    // Protos whose arguments are all scalars (the time and id helpers, ...)
    // have nothing to check.
    const maps::Map* map = nullptr;
    if ((kinds & ~kUncheckedArgKinds) != 0 && !check_helper_args(s, proto, reg, &map)) goto stopped;
    reg[0] = proto.fn(reg[1], reg[2], reg[3], reg[4], reg[5]);
    if (call_may_move_packet(proto, kinds)) s.hit = Region{};
    // Granted returns also become the cached region: the next access is
    // likely there. A map value's map is the one the check found.
    if (returns_grant(proto)) {
      if (map != nullptr && proto.ret == RetKind::kMapValueOrNull) {
        grant_map_value(s, map, reg[0]);
      } else {
        grant_return(s, proto, reg + 1, reg[0]);
      }
    }
    CALL_RETURNED();
#undef CALL_RETURNED
  }
  // Fused obj calls (interp_form.cc): pc moves to the call, so a fault in
  // the call names it. The inline paths do what the call's fast path does
  // (maps/bpf_obj_fast.h) and read no argument they do not need; anything
  // they decline is the call, which decides (the run's slot not known yet,
  // an empty or busy list, an object not among the last new ones, faults).
  {
    const InterpObjCall* f;
#define OBJ_CALL_ARG(i) (f->arg_reg[i] == InterpObjCall::kArgConst ? f->arg[i] : reg[f->arg_reg[i]])
#define OBJ_CALL_SLOW()                                        \
  do {                                                         \
    const uint64_t a1 = OBJ_CALL_ARG(0), a2 = OBJ_CALL_ARG(1); \
    pc += f->call_off;                                         \
    s.budget = budget;                                         \
    s.call_pc = pc;                                            \
    reg[0] = f->slot_fn(a1, a2, &s.obj);                       \
    if (s.stop != Stop::kRunning) goto stopped;                \
    budget = s.budget;                                         \
  } while (0)
#define OBJ_CALL_CLOBBER()                                    \
  do {                                                        \
    if (f->clobber != 0) [[unlikely]] {                       \
      for (int r_ = 1; r_ <= 5; r_++)                         \
        if (f->clobber & (1u << r_)) reg[r_] = kClobberedReg; \
    }                                                         \
  } while (0)
#define OBJ_CALL_RETURNED()              \
  do {                                   \
    OBJ_CALL_CLOBBER();                  \
    if (f->null_branch) {                \
      ++pc;                              \
      if (reg[0] == 0) JUMP_BY(pc->off); \
    }                                    \
    NEXT();                              \
  } while (0)
    // A new that got its object: the null branch (if any) falls through.
#define OBJ_NEW_GOT(o)                       \
  do {                                       \
    ++s.obj.held;                            \
    reg[0] = reinterpret_cast<uintptr_t>(o); \
    pc += pc->off;                           \
    DISPATCH();                              \
  } while (0)
  exec_obj_new:
    f = &s.obj_calls[pc->imm];
    if (f->size != 0 && s.obj.slot >= 0) [[likely]] {
      if (void* o = maps::obj_new_fast(f->lists, f->owned, f->size, f->cls, s.obj.slot,
                                       &s.obj.memo)) [[likely]] {
        // The object's data is the region its first accesses hit (exactly
        // what obj_region gives, without asking it).
        s.hit = Region{reinterpret_cast<uintptr_t>(o), f->size, true};
        OBJ_CALL_CLOBBER();
        OBJ_NEW_GOT(o);
      }
    }
    OBJ_CALL_SLOW();
    OBJ_CALL_RETURNED();
  exec_obj_new_known:  // the inline path, no clobber; the facts follow the object to its drop
    f = &s.obj_calls[pc->imm];
    if (kept_class == f->lists.base) [[likely]] {  // a kept object of the class
      kept_class = 0;
      OBJ_NEW_GOT(maps::obj_renew(reinterpret_cast<char*>(kept), f->owned, f->size, s.obj.slot));
    }
    if (s.obj.slot >= 0) [[likely]] {
      if (void* o = maps::obj_new_fast(f->lists, f->owned, f->size, f->cls, s.obj.slot, nullptr))
          [[likely]]
        OBJ_NEW_GOT(o);
    }
    OBJ_CALL_SLOW();
    OBJ_CALL_RETURNED();
  exec_obj_drop:
    f = &s.obj_calls[pc->imm];
    if (f->domain != nullptr && s.obj.slot >= 0) [[likely]] {
      const uint64_t a1 = OBJ_CALL_ARG(0);
      if (a1 != 0 && maps::obj_drop_fast(*f->domain, f->owned, a1, s.obj.slot, s.obj.memo))
          [[likely]] {
        pc += f->call_off;
        --s.obj.held;
        reg[0] = 0;
        OBJ_CALL_RETURNED();
      }
    }
    OBJ_CALL_SLOW();
    OBJ_CALL_RETURNED();
  exec_obj_drop_known:  // the facts know the object (not null): its class, never published
    f = &s.obj_calls[pc->imm];
    // The run's slot is known: the object's new found it.
    if (const uintptr_t a = reg[f->arg_reg[0]];
        maps::obj_release_known(f->owned, f->freed, a, s.obj.slot)) [[likely]] {
      // Kept for the next new of its class; the object kept before goes back.
      if (kept_class != 0) [[unlikely]]
        give_back_kept(s, *kept_by, kept);
      kept_class = f->lists.base;
      kept = a - 8;
      kept_by = f;
      --s.obj.held;
      reg[0] = 0;
      pc += pc->off;  // no null branch, no clobber (interp_form.cc)
      DISPATCH();
    }
    OBJ_CALL_SLOW();
    OBJ_CALL_RETURNED();
#undef OBJ_CALL_ARG
#undef OBJ_CALL_SLOW
#undef OBJ_CALL_CLOBBER
#undef OBJ_CALL_RETURNED
#undef OBJ_NEW_GOT
  }
callx:
  if (!is_callback_value(*s.prog, DST)) {
    set_fault(s, EFAULT, pc, DST, "callx r%d: 0x%" PRIx64 " is not a function", pc->dst, DST);
    goto stopped;
  }
  target = insns + static_cast<uint32_t>(DST);
push_frame:
  if (s.depth + 1 >= kMaxCallFrames) {
    set_fault(s, E2BIG, pc, 0, "call stack deeper than %d frames", kMaxCallFrames);
    goto stopped;
  }
  if (budget == 0) goto budget_out;
  --budget;
  {
    CallFrame& f = s.frames[s.depth];
    f.ret = pc + 1;
    std::memcpy(f.callee_saved, &reg[6], sizeof(f.callee_saved));
  }
  enter_frame(s);
  reg[10] -= kFrame;
  stk_lo -= kFrame;
  stk_span += kFrame;
  pc = target;
  DISPATCH();
exit:
  if (s.depth == base) {
    --s.depth;
    s.budget = budget;
    if (kept_class != 0) give_back_kept(s, *kept_by, kept);
    return reg[0];
  }
  --s.depth;
  {
    const CallFrame& f = s.frames[s.depth];
    std::memcpy(&reg[6], f.callee_saved, sizeof(f.callee_saved));
    pc = f.ret;
  }
  reg[10] += kFrame;
  stk_lo += kFrame;
  stk_span -= kFrame;
  DISPATCH();

  // ---- loads and stores -----------------------------------------------------
ld_imm64:
  DST = static_cast<uint64_t>(static_cast<uint32_t>(pc[0].imm)) |
        (static_cast<uint64_t>(static_cast<uint32_t>(pc[1].imm)) << 32);
  pc += 2;
  DISPATCH();

  // Each load and store twice: checked, and as obj_* for accesses that the
  // facts prove inside an object the run holds (obj_access_code).
#define LDX(name, T)                                                               \
  ldx_##name : {                                                                   \
    CHECK_ACCESS(SRC + static_cast<int64_t>(pc->off), sizeof(T), false, false);    \
    T v;                                                                           \
    __builtin_memcpy(&v, reinterpret_cast<const void*>(addr), sizeof(T));          \
    DST = static_cast<uint64_t>(v);                                                \
    NEXT();                                                                        \
  }                                                                                \
  obj_ldx_##name : {                                                               \
    T v;                                                                           \
    __builtin_memcpy(&v, reinterpret_cast<const void*>(SRC + pc->off), sizeof(T)); \
    DST = static_cast<uint64_t>(v);                                                \
    NEXT();                                                                        \
  }
#define LDXSX(name, T)                                                             \
  ldxsx_##name : {                                                                 \
    CHECK_ACCESS(SRC + static_cast<int64_t>(pc->off), sizeof(T), false, false);    \
    T v;                                                                           \
    __builtin_memcpy(&v, reinterpret_cast<const void*>(addr), sizeof(T));          \
    DST = static_cast<uint64_t>(static_cast<int64_t>(v));                          \
    NEXT();                                                                        \
  }                                                                                \
  obj_ldxsx_##name : {                                                             \
    T v;                                                                           \
    __builtin_memcpy(&v, reinterpret_cast<const void*>(SRC + pc->off), sizeof(T)); \
    DST = static_cast<uint64_t>(static_cast<int64_t>(v));                          \
    NEXT();                                                                        \
  }
#define STORE(name, T, VALUE, KIND)                                            \
  KIND##_##name : {                                                            \
    CHECK_ACCESS(DST + static_cast<int64_t>(pc->off), sizeof(T), true, false); \
    const T v = static_cast<T>(VALUE);                                         \
    __builtin_memcpy(reinterpret_cast<void*>(addr), &v, sizeof(T));            \
    NEXT();                                                                    \
  }                                                                            \
  obj_##KIND##_##name : {                                                      \
    const T v = static_cast<T>(VALUE);                                         \
    __builtin_memcpy(reinterpret_cast<void*>(DST + pc->off), &v, sizeof(T));   \
    NEXT();                                                                    \
  }
  LDX(b, uint8_t)
  LDX(h, uint16_t)
  LDX(w, uint32_t)
  LDX(dw, uint64_t)
  LDXSX(b, int8_t)
  LDXSX(h, int16_t)
  LDXSX(w, int32_t)
  STORE(b, uint8_t, pc->imm, st)
  STORE(h, uint16_t, pc->imm, st)
  STORE(w, uint32_t, pc->imm, st)
  STORE(dw, uint64_t, static_cast<int64_t>(pc->imm), st)
  STORE(b, uint8_t, SRC, stx)
  STORE(h, uint16_t, SRC, stx)
  STORE(w, uint32_t, SRC, stx)
  STORE(dw, uint64_t, SRC, stx)
#undef LDX
#undef LDXSX
#undef STORE

  // Atomics use real atomic instructions: maps are shared between threads.
  // cmpxchg compares with r0 and leaves the old value in r0 either way.
#define ATOMIC(name, T)                                                                          \
  atomic_##name : {                                                                              \
    CHECK_ACCESS(DST + static_cast<int64_t>(pc->off), sizeof(T), true, true);                    \
    if (addr % sizeof(T) != 0) {                                                                 \
      acc_size = sizeof(T), acc_write = true, acc_atomic = true;                                 \
      goto bad_access;                                                                           \
    }                                                                                            \
    T* p = reinterpret_cast<T*>(addr);                                                           \
    const T v = static_cast<T>(SRC);                                                             \
    switch (pc->imm) {                                                                           \
      case kAtomicAdd:                                                                           \
        __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);                                              \
        break;                                                                                   \
      case kAtomicOr:                                                                            \
        __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);                                               \
        break;                                                                                   \
      case kAtomicAnd:                                                                           \
        __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST);                                              \
        break;                                                                                   \
      case kAtomicXor:                                                                           \
        __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST);                                              \
        break;                                                                                   \
      case kAtomicAdd | kAtomicFetch:                                                            \
        SRC = __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);                                        \
        break;                                                                                   \
      case kAtomicOr | kAtomicFetch:                                                             \
        SRC = __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);                                         \
        break;                                                                                   \
      case kAtomicAnd | kAtomicFetch:                                                            \
        SRC = __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST);                                        \
        break;                                                                                   \
      case kAtomicXor | kAtomicFetch:                                                            \
        SRC = __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST);                                        \
        break;                                                                                   \
      case kAtomicXchg:                                                                          \
        SRC = __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);                                       \
        break;                                                                                   \
      default: {                                                                                 \
        T expected = static_cast<T>(reg[0]);                                                     \
        __atomic_compare_exchange_n(p, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        reg[0] = expected;                                                                       \
        break;                                                                                   \
      }                                                                                          \
    }                                                                                            \
    NEXT();                                                                                      \
  }
  ATOMIC(w, uint32_t)
  ATOMIC(dw, uint64_t)
#undef ATOMIC

  // Legacy packet loads: out of range ends the program with r0 = 0, as the
  // kernel's generated code does.
#define LD_PKT(name, bytes, OFFSET)               \
  name: {                                         \
    uint64_t v;                                   \
    if (!load_packet(*s.rc, OFFSET, bytes, &v)) { \
      s.stop = Stop::kAborted;                    \
      goto stopped;                               \
    }                                             \
    reg[0] = v;                                   \
    NEXT();                                       \
  }
  LD_PKT(ld_abs_b, 1, pc->imm)
  LD_PKT(ld_abs_h, 2, pc->imm)
  LD_PKT(ld_abs_w, 4, pc->imm)
  LD_PKT(ld_ind_b, 1, static_cast<int32_t>(SRC + IMM64))
  LD_PKT(ld_ind_h, 2, static_cast<int32_t>(SRC + IMM64))
  LD_PKT(ld_ind_w, 4, static_cast<int32_t>(SRC + IMM64))
#undef LD_PKT

  // ---- stops ----------------------------------------------------------------
invalid:
  set_fault(s, EINVAL, pc, 0, "invalid instruction (code 0x%02x)", pc->code);
  goto stopped;
budget_out:
  set_fault(s, ELOOP, pc, 0, "instruction budget exhausted");
  goto stopped;
bad_access:
  fault_access(s, pc, addr, acc_size, acc_write, acc_atomic);
stopped:
  s.depth = base - 1;
  if (s.stop == Stop::kRunning) s.stop = Stop::kFaulted;
  if (kept_class != 0) give_back_kept(s, *kept_by, kept);
  return 0;

#undef DST
#undef SRC
#undef IMM64
#undef IMM32
#undef DISPATCH
#undef NEXT
#undef JUMP_BY
#undef CHECK_ACCESS
#pragma clang diagnostic pop
}

}  // namespace
}  // namespace interp

namespace {

// A RunLoop's interpreter state: set up once by begin_interp_loop, reset per
// run by interp_loop_run.
struct InterpLoop {
  interp::InterpState s;
  alignas(64) uint8_t stack[isa::kMaxCallFrames * isa::kStackSize];
  uint64_t (*saved_call_fn)(RunContext*, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                            uint64_t);
  void* saved_state;
  std::optional<RunScope> scope;
  // Runs so far, whether frame 0 stays zeroed across runs, and whether a run
  // leaves the state as it found it but for the budget (both decided at the
  // second run, so a single run never pays for the scan).
  uint64_t runs = 0;
  bool stack_stays_zeroed = false;
  bool keeps_state = false;
};
static_assert(sizeof(InterpLoop) <= RunLoop::kStateBytes);

// Whether a run of prog changes no InterpState field but the budget (and
// the stop, when it faults): no calls, memory instructions, may_goto or
// packet loads, which are what move frames, the region cache, grants and
// the may_goto budget.
bool run_keeps_state(const Program& prog) {
  const size_t n = prog.exec_insns.size();
  for (size_t pc = 0; pc < n; ++pc) {
    const isa::Insn& in = prog.exec_insns[pc];
    const uint8_t cls = isa::insn_class(in.code);
    if (in.code == isa::kLdImm64) {
      ++pc;
      continue;
    }
    if (cls == isa::kClassLd || cls == isa::kClassLdx || cls == isa::kClassSt ||
        cls == isa::kClassStx || in.code == isa::kCall || in.code == isa::kCallx ||
        in.code == (isa::kClassJmp | isa::kJmpJcond)) {
      return false;
    }
  }
  return true;
}

uint64_t interp_loop_run(RunLoop& loop, uint32_t entry, const uint64_t* args) {
  InterpLoop& l = *reinterpret_cast<InterpLoop*>(loop.state);
  interp::InterpState& s = l.s;
  RunContext& rc = *loop.rc;
  // What a run changes: frames, budgets, region cache and grants, the stop;
  // only the budget for programs that keep the state, unless the last run
  // stopped.
  if (l.keeps_state && !loop.stopped) {
    s.budget = rc.insn_budget;
  } else {
    if (l.runs++ == 1) {
      l.stack_stays_zeroed = !may_write_memory(*loop.prog);
      l.keeps_state = run_keeps_state(*loop.prog);
    }
    s.depth = -1;
    s.zeroed = l.stack_stays_zeroed ? 1 : 0;
    s.budget = rc.insn_budget;
    s.may_goto_left = interp::kMayGotoBudget;
    s.obj = ObjRunState{};
    s.call_pc = nullptr;
    s.hit.span = 0;
    s.hit_map = nullptr;
    s.num_grants = 0;
    s.stop = interp::Stop::kRunning;
    if (rc.faulted) clear_fault(rc);
  }
  const uint64_t r0 = interp::run_frames(s, entry, args);
  if (s.obj.held != 0) [[unlikely]]
    interp::release_held_objects(s);
  rc.insn_budget = s.budget;
  loop.stopped = s.stop != interp::Stop::kRunning;
  return r0;
}

Result<uint64_t> interp_loop_stop(RunLoop& loop, uint64_t r0) {
  return interp::run_result(reinterpret_cast<InterpLoop*>(loop.state)->s, r0);
}

void interp_loop_end(RunLoop& loop) {
  InterpLoop& l = *reinterpret_cast<InterpLoop*>(loop.state);
  loop.rc->call_fn = l.saved_call_fn;
  loop.rc->engine_state = l.saved_state;
  l.~InterpLoop();
}

}  // namespace

bool may_write_memory(const Program& prog) {
  const size_t n = prog.exec_insns.size();
  for (size_t pc = 0; pc < n; ++pc) {
    const isa::Insn& in = prog.exec_insns[pc];
    const uint8_t cls = isa::insn_class(in.code);
    if (cls == isa::kClassSt || cls == isa::kClassStx ||
        (in.code == isa::kCall && in.src != isa::kPseudoCall)) {
      return true;
    }
    if (in.code == isa::kLdImm64) ++pc;
  }
  return false;
}

Status begin_interp_loop(RunLoop& loop, Program& prog, RunContext& rc) {
  if (!prog.prepared || prog.exec_insns.empty()) {
    return make_error(EINVAL, "program '%s' is not prepared", prog.name.c_str());
  }
  InterpLoop& l = *new (loop.state) InterpLoop;
  interp::InterpState& s = l.s;
  s.prog = &prog;
  s.rc = &rc;
  s.insns = prog.interp_insns.data();
  s.obj_calls = prog.interp_obj_calls.data();
  s.stack_top = l.stack + sizeof(l.stack);
  s.user_base_hi = interp::arena_user_base_hi(prog);
  l.saved_call_fn = rc.call_fn;
  l.saved_state = rc.engine_state;
  rc.prog = &prog;
  rc.call_fn = &interp::call_callback;
  rc.engine_state = &s;
  if (current_run() != &rc) l.scope.emplace(rc);
  loop.prog = &prog;
  loop.rc = &rc;
  loop.entry_args[0] = reinterpret_cast<uintptr_t>(rc.ctx);
  loop.entry_args[1] = rc.r2;
  loop.run_fn = &interp_loop_run;
  loop.stop_fn = &interp_loop_stop;
  loop.end_fn = &interp_loop_end;
  clear_fault(rc);
  return Status::Ok();
}

Result<uint64_t> interpret(Program& prog, RunContext& rc) {
  RunLoop loop;
  USERBPF_TRY(begin_interp_loop(loop, prog, rc));
  return loop.run();
}

Result<uint64_t> interpret_callback(Program& prog, RunContext& rc, uint64_t fn,
                                    const uint64_t (&args)[5]) {
  RunLoop loop;
  USERBPF_TRY(begin_interp_loop(loop, prog, rc));
  if (!interp::is_callback_value(prog, fn)) {
    return make_error(EINVAL, "program '%s': 0x%" PRIx64 " is not one of its functions",
                      prog.name.c_str(), fn);
  }
  return loop.run_at(static_cast<uint32_t>(fn), args);
}

}  // namespace userbpf::vm
