// The real helpers called from BPF code in the interpreter: the registry's
// argument kinds pass the engine's checks, callbacks go through call_fn, and
// packet helpers see the run's context.
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>
#include <vector>

#include "helper_test_util.h"
#include "helpers/helper_fns.h"
#include "helpers/registry.h"
#include "isa/asm.h"
#include "vm/program.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

using isa::kAluAdd;
using isa::kAluMul;
using isa::kAluSub;
using isa::kSizeDw;
using isa::kSizeW;
using test::Asm;
using testing::CapturedPrint;

struct Ran {
  bool ok = false;
  uint64_t r0 = 0;
  std::string error;
};

Ran run(const Asm& a, vm::RunContext& rc, vm::ProgType type = vm::ProgType::kSYSCALL) {
  vm::Program prog;
  prog.name = "helpers";
  prog.type = type;
  prog.insns = a.build();
  prog.helpers = helper_table();
  Status st = vm::prepare_program(prog);
  if (!st.ok()) return {false, 0, st.error().message};
  Result<uint64_t> r = vm::interpret(prog, rc);
  if (!r.ok()) return {false, 0, r.error().message};
  return {true, r.value(), ""};
}

TEST(InterpHelpers, TracePrintkFromTheStack) {
  Asm a;
  a.ld_imm64(1, 0x0000006425206968ull)  // "hi %d\0\0\0"
      .stx(kSizeDw, 10, 1, -8)
      .mov64_reg(1, 10)
      .alu64_imm(kAluAdd, 1, -8)
      .mov64_imm(2, 6)
      .mov64_imm(3, 42)
      .call_helper(BPF_FUNC_trace_printk)
      .exit();
  vm::RunContext rc;
  CapturedPrint printed;
  rc.print = vm::PrintSink{&CapturedPrint::write, &printed};
  Ran r = run(a, rc);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.r0, 5u);
  ASSERT_EQ(printed.lines.size(), 1u);
  EXPECT_EQ(printed.lines[0], "hi 42\n");
}

TEST(InterpHelpers, BpfLoopRunsTheCallback) {
  Asm a;
  a.mov64_imm(6, 0)
      .stx(kSizeDw, 10, 6, -8)  // counter on the stack
      .mov64_imm(1, 10)
      .ld_func(2, "cb")
      .mov64_reg(3, 10)
      .alu64_imm(kAluAdd, 3, -8)
      .mov64_imm(4, 0)
      .call_helper(BPF_FUNC_loop)
      .ldx(kSizeDw, 1, 10, -8)
      .alu64_imm(kAluMul, 0, 1000)
      .alu64_reg(kAluAdd, 0, 1)
      .exit()
      .label("cb")  // (index, ctx): *ctx += index
      .ldx(kSizeDw, 3, 2, 0)
      .alu64_reg(kAluAdd, 3, 1)
      .stx(kSizeDw, 2, 3, 0)
      .mov64_imm(0, 0)
      .exit();
  vm::RunContext rc;
  Ran r = run(a, rc);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.r0, 10u * 1000 + 45);  // 10 iterations, sum of 0..9
}

TEST(InterpHelpers, ErrnoResultsReachTheProgram) {
  Asm a;
  a.mov64_reg(1, 10)
      .alu64_imm(kAluAdd, 1, -8)
      .mov64_imm(2, 8)
      .mov64_imm(3, 0)
      .call_helper(BPF_FUNC_probe_read_kernel)  // from NULL
      .mov64_reg(6, 0)
      .mov64_imm(1, 1)
      .ld_func(2, "cb")
      .mov64_imm(3, 0)
      .mov64_imm(4, 1)  // bad flags
      .call_helper(BPF_FUNC_loop)
      .alu64_imm(kAluMul, 0, 100)
      .alu64_reg(kAluAdd, 0, 6)
      .exit()
      .label("cb")
      .mov64_imm(0, 1)
      .exit();
  vm::RunContext rc;
  Ran r = run(a, rc);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(static_cast<int64_t>(r.r0), -EINVAL * 100 + -EFAULT);
}

TEST(InterpHelpers, XdpAdjustHeadMovesTheContextFields) {
  const size_t size = kXdpPacketHeadroom + 64 + 256;
  void* mem =
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* buf = static_cast<uint8_t*>(mem);
  uint8_t* data = buf + kXdpPacketHeadroom;
  xdp_md md{};
  md.data = md.data_meta = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data));
  md.data_end = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data + 64));
  vm::RunContext rc;
  rc.ctx = &md;
  rc.ctx_size = sizeof(md);
  rc.ctx_writable = false;
  rc.data_meta = rc.data = data;
  rc.data_end = data + 64;
  rc.pkt_buf_start = buf;
  rc.pkt_buf_end = buf + size;

  Asm a;
  a.mov64_reg(6, 1)
      .mov64_imm(2, -14)
      .call_helper(BPF_FUNC_xdp_adjust_head)
      .jmp_imm(isa::kJmpJne, 0, 0, "out")
      .ldx(kSizeW, 2, 6, 0)  // data
      .ldx(kSizeW, 3, 6, 4)  // data_end
      .mov64_reg(0, 3)
      .alu64_reg(kAluSub, 0, 2)
      .label("out")
      .exit();
  Ran r = run(a, rc, vm::ProgType::kXDP);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.r0, 78u);
  EXPECT_EQ(rc.data, data - 14);
  munmap(mem, size);
}

}  // namespace
}  // namespace userbpf::helpers
