// The x86-64 code generator's shared declarations: the Emitter (one per
// compile, an X86Asm: xbyak with direct encodings of the common forms) and
// the JitState offsets generated code uses.
// Its members are defined by concern: emit.cc (driver, entry, labels, jumps),
// emit_alu.cc, emit_mem.cc (loads, stores, atomics, region checks) and
// emit_call.cc (helpers, kfuncs, bpf-to-bpf calls, map lookup inlining).
//
// Memory safety at speed (the interpreter's promise: a bad access stops the
// run with an error naming pc and address, the host never faults):
//   - r10 + constant offset inside the current frame: no check (the frame is
//     always mapped and belongs to the run).
//   - any other access: inline check against the last-hit region cache
//     (InterpState::hit: packet, context, map values); on a miss the cold
//     stub checks the current frame chain [rbp - 512, stack_top - size], then
//     calls the interpreter's region logic (check_mem_slow via
//     jit_check_access). Atomics check the frame chain inline, then C.
//   - helper pointer arguments: check_helper_args before every call whose
//     proto has pointer arguments, except map helpers whose r1 is a constant
//     map of the program and whose key/value pointers lie in the frame chain
//     (checked inline); returned map values and memory become regions
//     (grant_return), exactly as in the interpreter.
//   - bpf_map_lookup_elem of a constant map with MapOps::gen_lookup (arrays)
//     is inlined: bounds check and address; the value becomes the hit region
//     only if an access through it is not proven (array values take no grant
//     slot on either engine), and an `if r0 == 0` right after it branches
//     from the lookup's outcomes directly.
//   - register writes nobody reads are not emitted (emit_live.cc).
//   - runaway loops: the budget (in r9) is charged on backward jumps with the
//     jump distance and on calls.
//   - probe (PROBE_MEM32) accesses are unchecked and covered by the exception
//     table instead (extable.cc).
#pragma once

#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory_resource>
#include <vector>

#include <sys/ucontext.h>

#include "isa/opcodes.h"
#include "vm/jit/x86_64/jit_internal.h"
#include "vm/jit/x86_64/x86_asm.h"

namespace userbpf::vm::jit {

using namespace Xbyak;
using namespace Xbyak::util;
using isa::Insn;
using namespace isa;  // opcode constants

constexpr int32_t kFrame = kStackSize;

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winvalid-offsetof"
constexpr int32_t kOffBudget = offsetof(JitState, s) + offsetof(interp::InterpState, budget);
constexpr int32_t kOffCpu = offsetof(JitState, cpu);
constexpr int32_t kOffObjRun = offsetof(JitState, s) + offsetof(interp::InterpState, obj);
constexpr int32_t kOffObjSlot =
    offsetof(JitState, s) + offsetof(interp::InterpState, obj) + offsetof(ObjRunState, slot);
constexpr int32_t kOffObjHeld =
    offsetof(JitState, s) + offsetof(interp::InterpState, obj) + offsetof(ObjRunState, held);
constexpr int32_t kOffMayGoto =
    offsetof(JitState, s) + offsetof(interp::InterpState, may_goto_left);
constexpr int32_t kOffUserBaseHi =
    offsetof(JitState, s) + offsetof(interp::InterpState, user_base_hi);
constexpr int32_t kOffCallPc = offsetof(JitState, s) + offsetof(interp::InterpState, call_pc);
constexpr int32_t kOffHitLo =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, lo);
constexpr int32_t kOffHitSpan =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, span);
constexpr int32_t kOffHitWritable =
    offsetof(JitState, s) + offsetof(interp::InterpState, hit) + offsetof(interp::Region, writable);
constexpr int32_t kOffStackTop = offsetof(JitState, s) + offsetof(interp::InterpState, stack_top);
constexpr int32_t kOffGrants = offsetof(JitState, s) + offsetof(interp::InterpState, grants);
constexpr int32_t kOffNumGrants = offsetof(JitState, s) + offsetof(interp::InterpState, num_grants);
constexpr int32_t kOffStop = offsetof(JitState, s) + offsetof(interp::InterpState, stop);
constexpr int32_t kOffRc = offsetof(JitState, s) + offsetof(interp::InterpState, rc);
constexpr int32_t kOffTopMinus = offsetof(JitState, top_minus);
constexpr int32_t kOffFrameLimit = offsetof(JitState, frame_limit);
constexpr int32_t kOffZeroedLo = offsetof(JitState, zeroed_lo);
constexpr int32_t kOffEntryRsp = offsetof(JitState, entry_rsp);
constexpr int32_t kOffCurRbp = offsetof(JitState, cur_rbp);
#pragma clang diagnostic pop
static_assert(sizeof(interp::Stop) == 1);
static_assert(sizeof(interp::InterpState::num_grants) == 4);
static_assert(sizeof(std::atomic<bool>) == 1);
static_assert((interp::kMaxGrants & (interp::kMaxGrants - 1)) == 0);
constexpr int32_t kRegionSize = sizeof(interp::Region);
constexpr int32_t kRegionSpan = offsetof(interp::Region, span);
constexpr int32_t kRegionWritable = offsetof(interp::Region, writable);

// Helper ids (the kernel's) the JIT emits inline.
constexpr int32_t kHelperMapLookupElem = 1;
constexpr int32_t kHelperLoop = 181;
constexpr uint32_t kBpfMaxLoops = 1u << 23;  // bpf_loop's nr_loops limit (BPF_MAX_LOOPS)

// BPF register -> x86 register, and -> mcontext gregs index (exception table).
inline const Reg64 kReg[kNumRegs] = {rax, rdi, rsi, rdx, rcx, r8, rbx, r13, r14, r15, rbp};
constexpr int kGreg[kNumRegs] = {REG_RAX, REG_RDI, REG_RSI, REG_RDX, REG_RCX, REG_R8,
                                 REG_RBX, REG_R13, REG_R14, REG_R15, REG_RBP};

enum class Cond { kEq, kNe, kA, kAe, kB, kBe, kG, kGe, kL, kLe, kNz, kZ };
inline int log2_size(int bytes) {
  return bytes == 1 ? 0 : bytes == 2 ? 1 : bytes == 4 ? 2 : 3;
}

// A code label: an index into Emitter::lbl_pos_.
using Lbl = uint32_t;
using Bits = std::pmr::vector<bool>;

// The layout of m's program lookup if it is array indexing (plain arrays:
// MapOps::gen_lookup; per-CPU arrays: gen_lookup_percpu, whose copy for the
// run's CPU slot is cpu_stride * RunContext::cpu further).
bool array_layout(const maps::Map* m, maps::ArrayLayout* lay);

class Emitter : public X86Asm {
 public:
  // Every vector of the compile comes from mem (compile_mem.h).
  Emitter(size_t cap, void* buf, const Program& prog, const JitOptions& opts,
          std::pmr::memory_resource* mem)
      : X86Asm(cap, buf),
        prog_(prog),
        insns_(prog.exec_insns.data()),
        n_(prog.exec_insns.size()),
        buf_(static_cast<uint8_t*>(buf)),
        mem_(mem),
        lbl_pos_(2 * n_, -1, mem),
        pc_offset_(n_, UINT32_MAX),
        probe_(n_, false, mem),
        probe_base_(opts.probe_base),
        avx2_(!opts.no_avx2 && __builtin_cpu_supports("avx2")) {
    for (uint32_t pc : opts.probe_pcs) {
      if (pc < n_) probe_[pc] = true;
    }
    fixups_.reserve(n_ * 2);
    lbl_pos_.reserve(n_ * 4);
    unwind_ = new_label();
    fault_exit_ = new_label();
    fault_exit_synced_ = new_label();
    mem_thunk_ = new_label();
    target_ = jump_targets();
    const Bits& target = target_;
    find_const_r1_maps(target);
    // Facts need liveness where they are dropped; the emitter then needs it
    // knowing which lookups are inlined with a known key (they read no
    // argument register).
    compute_liveness(false);
    find_counted_loops();
    find_safe_accesses(target);
    compute_liveness(true);
    find_folded_adds();
    may_goto_reg_ = find_may_goto_reg();
    find_loop_plans();
  }

  // Emits the whole image; false if xbyak reported an error (buffer too small).
  bool emit_all();

  std::vector<uint32_t> take_pc_offset() { return std::move(pc_offset_); }
  // JitImage::keeps_state for this program (emit_facts.cc).
  bool run_keeps_state() const;
  std::vector<ExtableEntry> take_extable() { return std::move(extable_); }
  uint32_t checked_accesses() const { return checked_accesses_; }
  JitLoopStats loop_stats() const {
    JitLoopStats st;
    for (const CountedLoop& l : loops_) {
      st.hoisted_consts += l.num_hoists;
      st.charged_at_entry += l.charge != 0 ? 1 : 0;
      st.vectorized += l.reduce ? 1 : 0;
    }
    return st;
  }

 private:
  void emit_entry();
  void emit_prologue();
  void emit_insn(size_t pc, bool func_entry);
  void emit_alu(const Insn& in);
  bool emit_reassociated(size_t pc);
  void emit_shift(const Insn& in, bool is64);
  void emit_divmod(const Insn& in, bool is64, bool is_div);
  void emit_end(const Insn& in);
  void emit_jmp(size_t pc, const Insn& in);
  void emit_branch(size_t pc, int64_t off, const Cond* cond);
  void charge_budget(size_t pc, uint64_t n);
  void budget_sub(uint64_t n);
  void budget_add(uint64_t n);
  void emit_call(size_t pc, const Insn& in);
  void emit_frame_push(size_t pc);
  // Zeroes the kFrame bytes from r10 up and records r10 as the new lowest
  // zeroed address; clobbers rax, keeps every other register.
  void emit_zero_frame();
  void emit_helper_call(size_t pc, const HelperProto& proto);
  bool emit_inline_lookup(size_t pc, const HelperProto& proto);
  bool emit_hash_lookup(size_t pc);
  bool emit_inline_loop(size_t pc, const HelperProto& proto);
  void emit_slot_call(size_t pc, const HelperProto& proto);
  void emit_slot_fn_call(size_t pc, const HelperProto& proto);
  // emit_obj.cc: bpf_obj_new / bpf_obj_drop inlined (false: not inlined).
  bool can_inline_obj(uint32_t size) const;
  void emit_obj_cache(uint32_t cls, Lbl slow);
  void emit_obj_slow(size_t pc, const HelperProto& proto, Lbl busy, Lbl slow, Lbl back,
                     bool can_fault);
  bool emit_obj_new(size_t pc, const HelperProto& proto);
  bool emit_obj_drop(size_t pc, const HelperProto& proto);
  void emit_add_grant(uint32_t span, const Reg64& lo);
  void emit_set_hit(uint32_t span, const Reg64& lo);
  // r1-r5 after a call: kClobberedReg in those of live (a live_out_ mask).
  void emit_clobber(uint16_t live);
  void emit_known_map_grant(const maps::Map* m);
  // Static facts (emit_facts.cc).
  Bits jump_targets() const;
  void find_const_r1_maps(const Bits& target);
  void find_safe_accesses(const Bits& target);
  // Simple loops: a loop whose head is entered only by falling through
  // from the instruction before it or by one jump from before it, and by
  // one back edge, whose body (head to back edge) is straight-line code
  // left only by forward jumps. Counted (the shape clang gives `for (i = a;
  // i < n; i += c)`): its counter is written once per iteration, by `reg +=
  // step` (step > 0), and tested against a constant before the back edge is
  // taken. The facts bound a counted loop's counter at the head
  // (find_safe_accesses); only the test and the add are trusted, each at
  // its width. find_loop_plans then decides how each loop is emitted.
  struct CountedLoop {
    enum Test : uint8_t { kNe, kLt, kLe } test;  // the condition to go round again
    uint8_t reg;
    bool add32;   // the add is 32-bit (zero-extends)
    bool test32;  // the test is JMP32 (compares the low halves)
    bool counted;
    bool init_known;  // the counter enters with exactly init (find_safe_accesses)
    uint64_t step, end, init;
    uint32_t entry_jump;  // the jump that enters it (UINT32_MAX: it is fallen into)
    uint32_t head, back;  // the head and the back edge
    uint32_t test_pc;     // the exit test: back, or the `if` before a `goto head`
    // The plan (find_loop_plans): constants kept in free registers for the
    // whole loop (hoist_), and the budget every back edge of the run would
    // charge, charged once at entry (0: charged per back edge).
    uint8_t num_hoists;
    uint8_t hoist_reg[6];
    uint64_t hoist_k[6];
    uint64_t charge;
    uint64_t trips;  // the iterations of a run (charge != 0)
    // A loop that sums an array (find_reduction): rA += SZ-byte elements
    // from red_start on, emitted as SSE2 code (emit_reduction).
    bool reduce;
    bool red_acc32;  // the sum's add is 32-bit
    bool red_tmp_live;
    bool red_sub;           // rA -= each element
    uint64_t red_per_trip;  // rA += this per iteration too
    uint8_t red_size, red_acc, red_tmp;
    uint64_t red_start;
    uint32_t red_exit;  // where the loop goes when done
    Lbl pre;            // the entry: hoisted constants set, budget charged
    Lbl slow_head;      // the copy charged per back edge (budget too short)
    bool planned() const { return num_hoists != 0 || charge != 0; }
  };
  void find_counted_loops();
  // Constants hoisted out of simple loops into registers nobody uses in the
  // loop, and the budget of counted loops charged at their entry.
  void find_loop_plans();
  void emit_loop_entry(CountedLoop& l);
  void emit_loop_copy(int32_t loop);
  void find_reduction(CountedLoop& l);
  void emit_reduction(const CountedLoop& l);
  bool is_array_lookup(size_t pc, const maps::Map** map) const;
  // Whether bpf_map_lookup_elem of a constant map whose values the region
  // logic finds by address (MapOps::value_at: hash maps) is called directly
  // with its key proven in the frame (emit_hash_lookup).
  bool is_hash_lookup(size_t pc, const maps::Map** map) const;
  // Register liveness (emit_live.cc). Registers as bit masks (bit r: rR).
  struct UseDef {
    uint16_t use;  // registers the instruction (or a callee) may read
    uint16_t def;  // registers it surely overwrites
  };
  UseDef use_def(size_t pc, bool refined) const;
  // Every register pc may write (use_def's defs leave out the side effects
  // of calls and atomics, which liveness treats as uses).
  uint16_t written_regs(size_t pc) const;
  // Whether pc only writes its dst register (ALU, ld_imm64): dropped when
  // nobody reads the result.
  bool is_pure(size_t pc) const;
  // Fills live_in_/live_out_; refined: with inlined lookups' real reads.
  void compute_liveness(bool refined);
  // Whether the call at pc is an inlined array lookup with its key at a
  // known stack offset (it reads no argument register).
  bool inline_lookup_known_key(size_t pc) const { return key_off_[pc] != kNoKeyOff; }
  bool in_is_lookup(size_t pc) const {
    return insns_[pc].code == kCall && insns_[pc].src == kPseudoCallHelper &&
           insns_[pc].imm == kHelperMapLookupElem;
  }
  // `rX += rY` right before a proven load or store through rX, with rX
  // dead after it (or the load's destination): no add, the access
  // addresses [rX + rY + off] (emit_facts.cc).
  void find_folded_adds();
  bool add_folded_into(size_t access_pc) const {
    return !folded_add_.empty() && access_pc > 0 && folded_add_[access_pc - 1];
  }
  void emit_mem(size_t pc, const Insn& in);
  void emit_probe_mem(const Insn& in);
  void emit_atomic(size_t pc, const Insn& in);
  void emit_ld_packet(size_t pc, const Insn& in);
  // Checks [base + off, +size) and returns the operand to access it through.
  RegExp checked_addr(size_t pc, int base, int16_t off, int size, bool write, bool atomic);
  void fault_stub(Lbl at, uint32_t kind, size_t pc, const Reg64* value);
  void call_abs(const void* fn);
  // Labels are indexes: pc labels [0, n), function entry labels [n, 2n),
  // then the rest. xbyak's Label keeps hash tables per label, which cost
  // more than the rest of a compile; ours are an offset array and a list of
  // rel32 fixups patched once at the end.
  Lbl new_label() {
    lbl_pos_.push_back(-1);
    return static_cast<Lbl>(lbl_pos_.size() - 1);
  }
  Lbl pc_lbl(size_t pc) const { return static_cast<Lbl>(pc); }
  Lbl func_lbl(size_t pc) const { return static_cast<Lbl>(n_ + pc); }
  void bind(Lbl l) { lbl_pos_[l] = static_cast<int64_t>(getSize()); }
  // A jump or call (opcode b0, then b1 unless negative) with a rel32 to l,
  // patched when the image is complete (patch_fixups).
  void op_rel32(uint8_t b0, int b1, Lbl l) {
    if (room()) {
      uint8_t* p = at();
      *p++ = b0;
      if (b1 >= 0) *p++ = static_cast<uint8_t>(b1);
      done(put32(p, 0));
    } else {  // xbyak's bounds checks (and error) near the end of the buffer
      db(b0);
      if (b1 >= 0) db(b1);
      dd(0);
    }
    fixups_.push_back(Fixup{static_cast<uint32_t>(getSize()), l});
  }
  void jcc(Cond c, Lbl l);
  void jmp_to(Lbl l) { op_rel32(0xe9, -1, l); }
  void call_to(Lbl l) { op_rel32(0xe8, -1, l); }
  bool patch_fixups();

  const Program& prog_;
  const Insn* insns_;
  size_t n_;
  uint8_t* buf_;
  std::pmr::memory_resource* mem_;
  // Label offsets (-1: not bound). The pc label is after any prologue (jump
  // targets), the function label at the prologue (call targets).
  std::pmr::vector<int64_t> lbl_pos_;
  struct Fixup {
    uint32_t end;  // code offset just after the rel32 field
    Lbl to;
  };
  std::pmr::vector<Fixup> fixups_{mem_};
  std::pmr::vector<std::function<void()>> cold_{mem_};
  std::vector<uint32_t> pc_offset_;
  Bits probe_;
  std::pmr::vector<const maps::Map*> r1_map_{
      mem_};  // per call pc: the map r1 surely holds, or null
  // Per load/store pc: an access proven inside the current frame, or inside
  // a value of an ARRAY map, or inside one if the index register idx is at
  // most limit (unsigned), a value plus a register (kValueIndexed).
  struct AccessFact {
    enum Kind : uint8_t { kChecked, kStack, kValue, kValueIndexed, kObject } kind = kChecked;
    const maps::Map* map = nullptr;
    uint8_t idx = 0;
    uint32_t limit = 0;
  };
  std::pmr::vector<AccessFact> access_{mem_};
  // Per inlined array lookup pc: the key's offset from r10 when r2 surely
  // points into the current frame (kNoKeyOff: not known).
  static constexpr int32_t kNoKeyOff = INT32_MIN;
  std::pmr::vector<int32_t> key_off_{mem_};
  // Per call pc: r2-r5's offsets from r10 when they surely point into the
  // current frame (kNoKeyOff: not known).
  std::pmr::vector<std::array<int32_t, 4>> arg_stack_off_{mem_};
  // Per bpf_obj_drop call pc: the size of the object r1 surely holds (or
  // null), fresh from a bpf_obj_new of this straight-line code; 0: unknown.
  std::pmr::vector<uint32_t> drop_obj_size_{mem_};
  // Per bpf_loop call pc: the function r2 surely names (its pc), or -1.
  std::pmr::vector<int32_t> loop_callback_{mem_};
  // Per inlined array lookup pc: whether its value reaches an access the
  // facts do not prove, so the lookup caches it as the hit region (else
  // nothing is recorded at all).
  Bits lookup_caches_value_ = Bits(mem_);
  // Per pc: the registers some later instruction may read, before it and
  // after it (emit_live.cc).
  std::pmr::vector<uint16_t> live_in_{mem_};
  std::pmr::vector<uint16_t> live_out_{mem_};
  // use_def(pc, false) and written_regs(pc) of every pc, and the liveness
  // pass's view of each, filled by compute_liveness(false) (second slots of
  // ld_imm64: every register used and written).
  struct LiveNode {
    uint16_t use, def;
    // The instruction reads use only if the registers live after it meet
    // this mask: def if it is pure, else kNotReg (always live there).
    uint16_t needed_if;
    uint32_t next, to;  // successors; n_: none
  };
  std::pmr::vector<LiveNode> node_{mem_};
  bool has_back_edge_ = false;  // some jump goes to itself or backwards
  std::pmr::vector<CountedLoop> loops_{mem_};
  // Per pc: the index in loops_ of the loop it heads, or -1 (empty if no
  // loop was found).
  std::pmr::vector<int32_t> loop_at_{mem_};
  Bits folded_add_ = Bits(mem_);  // per add pc: find_folded_adds (empty: none)
  // Per pc (empty: none): for an ld_imm64 whose constant a loop keeps in a
  // register, that BPF register (the ld_imm64 emits nothing); for the
  // access its value (plus a folded add) addresses, the same register as
  // the access's base. -1 elsewhere.
  std::pmr::vector<int8_t> hoist_{mem_};
  // While emitting a planned loop's body: the loop charged at entry (its
  // back edge charges nothing), or the loop whose per-back-edge copy is
  // being emitted (its pcs' labels are the first copy's). -1: none.
  int32_t fast_loop_ = -1;
  int32_t copy_loop_ = -1;
  std::pmr::vector<UseDef> ud_{mem_};
  std::pmr::vector<uint16_t> written_{mem_};
  Bits target_ = Bits(mem_);    // jump targets and function entries
  bool has_bpf_calls_ = false;  // any bpf-to-bpf call or callx
  // A conditional jump folded into the inlined lookup before it: no code.
  size_t skip_pc_ = SIZE_MAX;
  uint64_t probe_base_;
  bool avx2_;  // emit_reduction may use AVX2
  std::vector<ExtableEntry> extable_;
  Lbl unwind_, fault_exit_, fault_exit_synced_, mem_thunk_;
  bool prologue_size_ok_ = true;  // every prologue is kPrologueBytes long
  uint32_t checked_accesses_ = 0;
  // The run's may_goto budget lives in r15 instead of s.may_goto_left (a
  // memory counter would chain every can_loop iteration through a store and
  // a load): the program has may_goto and never names BPF r9, so r15 is free
  // in every function. emit.cc (emit_entry) says how it is kept.
  bool may_goto_reg_ = false;
  bool find_may_goto_reg() const;
  // s.may_goto_left <-> r15 around C code that may run program code.
  void sync_may_goto_out() {
    if (may_goto_reg_) mov(ptr[r12 + kOffMayGoto], r15);
  }
  void sync_may_goto_in() {
    if (may_goto_reg_) mov(r15, ptr[r12 + kOffMayGoto]);
  }
};

}  // namespace userbpf::vm::jit
