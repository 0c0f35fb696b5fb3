// After a helper that moves the packet bounds (bpf_xdp_adjust_head/tail),
// both engines must forget the packet region they cached: an access to bytes
// the packet no longer holds faults. After other helpers the cache stays
// (HelperProto::moves_packet, call_may_move_packet).
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sys/mman.h>

#include "helpers/registry.h"
#include "isa/asm.h"
#include "isa/opcodes.h"
#include "vm/jit/jit.h"
#include "vm/program.h"
#include "vm/run_context.h"

namespace userbpf::test {
namespace {

using namespace isa;

constexpr size_t kHeadroom = 256;
constexpr size_t kPacket = 64;

// An XDP run's packet (kPacket bytes after kHeadroom) and its context.
struct Packet {
  uint8_t* buf = nullptr;
  size_t size = kHeadroom + kPacket + 256;
  xdp_md md{};
  vm::RunContext rc;

  Packet() {
    void* mem =
        mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    EXPECT_NE(mem, MAP_FAILED);
    buf = static_cast<uint8_t*>(mem);
    uint8_t* data = buf + kHeadroom;
    md.data = md.data_meta = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data));
    md.data_end = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data + kPacket));
    rc.ctx = &md;
    rc.ctx_size = sizeof(md);
    rc.ctx_writable = false;
    rc.data_meta = rc.data = data;
    rc.data_end = data + kPacket;
    rc.pkt_buf_start = buf;
    rc.pkt_buf_end = buf + size;
  }
  ~Packet() { munmap(buf, size); }
};

// Runs a as an XDP program on a fresh packet with the engine; ok and r0.
std::pair<bool, uint64_t> run(const Asm& a, bool jit) {
  vm::Program prog;
  prog.name = "packet_move";
  prog.type = vm::ProgType::kXDP;
  prog.insns = a.build();
  prog.helpers = helpers::helper_table();
  EXPECT_TRUE(vm::prepare_program(prog).ok());
  if (jit) EXPECT_TRUE(vm::ensure_jit(prog).ok());
  Packet p;
  Result<uint64_t> r = jit ? vm::jit_run(prog, p.rc) : vm::interpret(prog, p.rc);
  return {r.ok(), r.ok() ? r.value() : 0};
}

// r6 = the first packet byte's address (the read caches the packet region),
// then helper(ctx, delta), then a load of the byte at r6 + off.
Asm load_after(int32_t helper, int32_t delta, int16_t off) {
  Asm a;
  a.mov64_reg(7, 1).ldx(kSizeW, 6, 1, 0);  // data
  a.ldx(kSizeB, 0, 6, 0).mov64_reg(1, 7).mov64_imm(2, delta).call_helper(helper);
  a.jmp_imm(kJmpJne, 0, 0, "out").ldx(kSizeB, 0, 6, off).mov64_imm(0, 7);
  a.label("out").exit();
  return a;
}

class PacketMove : public testing::TestWithParam<bool> {};

TEST_P(PacketMove, BytesLeftBehindAreNoLongerReachable) {
  if (GetParam() && !vm::jit_supported()) GTEST_SKIP() << "no JIT here";
  // The packet starts 14 bytes later: its old first byte is gone.
  EXPECT_FALSE(run(load_after(BPF_FUNC_xdp_adjust_head, 14, 0), GetParam()).first);
  EXPECT_EQ(run(load_after(BPF_FUNC_xdp_adjust_head, 14, 14), GetParam()),
            std::make_pair(true, uint64_t{7}));
  // The packet ends 10 bytes earlier: its old last byte is gone.
  EXPECT_FALSE(run(load_after(BPF_FUNC_xdp_adjust_tail, -10, kPacket - 1), GetParam()).first);
  EXPECT_EQ(run(load_after(BPF_FUNC_xdp_adjust_tail, -10, kPacket - 11), GetParam()),
            std::make_pair(true, uint64_t{7}));
}

INSTANTIATE_TEST_SUITE_P(Engines, PacketMove, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Jit") : std::string("Interp");
                         });

}  // namespace
}  // namespace userbpf::test
