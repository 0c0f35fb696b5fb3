// BPF_PROG_TEST_RUN in user space. Packets live in a buffer mapped below
// 4 GiB (MAP_32BIT) so the u32 data/data_end/data_meta fields of xdp_md and
// __sk_buff hold real addresses: programs load them with 32-bit loads exactly
// as compiled for the kernel, with no context rewriting.
#include "api/test_run.h"

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "vm/jit/jit.h"

namespace userbpf::internal {
namespace {

constexpr size_t kHeadroom = 256;  // XDP_PACKET_HEADROOM
constexpr size_t kTailroom = 256;  // room for bpf_xdp_adjust_tail growth
// The kernel's XDP test frame: one page, less the headroom and the
// skb_shared_info tailroom (SKB_DATA_ALIGN: 320 bytes on x86-64), is what a
// linear frame may grow to (bpf_prog_test_run_xdp, bpf_xdp_adjust_tail).
constexpr size_t kXdpMaxLinear = 4096 - kHeadroom - 320;
constexpr size_t kMaxPacket = 64 * 1024;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// size bytes mapped below 4 GiB, or MAP_FAILED. MAP_32BIT exists on x86-64
// only; elsewhere a hint address below 4 GiB, checked.
void* map_low(size_t size) {
#ifdef MAP_32BIT
  return mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1,
              0);
#else
  void* p = mmap(reinterpret_cast<void*>(uintptr_t{1} << 28), size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED && reinterpret_cast<uintptr_t>(p) + size > (uintptr_t{1} << 32)) {
    munmap(p, size);
    return MAP_FAILED;
  }
  return p;
#endif
}

// A packet buffer addressable with 32 bits: [start | headroom | packet | tailroom].
// Mappings are kept per thread and reused across runs (a run per packet of a
// capture must not pay for mmap); a nested run on the same thread gets its own.
class PacketBuffer {
 public:
  PacketBuffer() {
    if (!t_cache_in_use_) {
      t_cache_in_use_ = true;
      cached_ = true;
      start_ = t_cache_start_;
      cap_ = t_cache_cap_;
    }
  }
  ~PacketBuffer() {
    if (cached_) {
      t_cache_start_ = start_;
      t_cache_cap_ = cap_;
      t_cache_in_use_ = false;
    } else if (start_) {
      munmap(start_, cap_);
    }
  }
  // tailroom: how far bpf_xdp_adjust_tail may grow the packet.
  Status init(const void* packet, size_t len, size_t tailroom) {
    tailroom_ = tailroom;
    size_t need = kHeadroom + len + tailroom;
    if (need > cap_) {
      if (start_) munmap(start_, cap_);
      start_ = nullptr;
      cap_ = 0;
      size_t size = (need + 4095) & ~size_t{4095};
      void* p = map_low(size);
      if (p == MAP_FAILED)
        return make_error(ENOMEM, "cannot map a %zu-byte packet buffer below 4 GiB", size);
      start_ = static_cast<uint8_t*>(p);
      cap_ = size;
    }
    std::memset(start_, 0, kHeadroom);
    if (len) std::memcpy(start_ + kHeadroom, packet, len);
    // (bpf_xdp_adjust_tail clears what it grows into; the skb helpers may
    // expose up to kTailroom bytes)
    std::memset(start_ + kHeadroom + len, 0, std::min(tailroom, kTailroom));
    len_ = len;
    return Status::Ok();
  }
  uint8_t* start() const { return start_; }
  uint8_t* end() const { return start_ + kHeadroom + len_ + tailroom_; }
  uint8_t* data() const { return start_ + kHeadroom; }
  size_t len() const { return len_; }

 private:
  static thread_local uint8_t* t_cache_start_;
  static thread_local size_t t_cache_cap_;
  static thread_local bool t_cache_in_use_;
  uint8_t* start_ = nullptr;
  size_t cap_ = 0;
  size_t len_ = 0;
  size_t tailroom_ = 0;
  bool cached_ = false;
};

thread_local uint8_t* PacketBuffer::t_cache_start_ = nullptr;
thread_local size_t PacketBuffer::t_cache_cap_ = 0;
thread_local bool PacketBuffer::t_cache_in_use_ = false;

uint32_t addr32(const void* p) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
}

bool is_skb_type(vm::ProgType t) {
  switch (t) {
    case vm::ProgType::kSCHED_CLS:
    case vm::ProgType::kSCHED_ACT:
    case vm::ProgType::kSOCKET_FILTER:
    case vm::ProgType::kCGROUP_SKB:
    case vm::ProgType::kLWT_IN:
    case vm::ProgType::kLWT_OUT:
    case vm::ProgType::kLWT_XMIT:
    case vm::ProgType::kSK_SKB:
      return true;
    default:
      return false;
  }
}

}  // namespace

Result<RunResult> test_run(RuntimeImpl& rt, vm::Program& prog, const RunOptions& opts) {
  if (opts.struct_size > sizeof(RunOptions))
    return make_error(EINVAL, "RunOptions from a newer userbpf (size %zu > %zu)", opts.struct_size,
                      sizeof(RunOptions));
  // Engine: the JIT where supported (x86-64) unless the interpreter is asked for.
  const bool use_jit = opts.engine != Engine::kInterpreter && vm::jit_supported();
  if (opts.engine == Engine::kJit && !use_jit)
    return make_error(ENOTSUP, "program %s: no JIT for this machine", prog.name.c_str());
  if (use_jit) USERBPF_TRY(vm::ensure_jit(prog));
  if (opts.packet_size > kMaxPacket)
    return make_error(EINVAL, "packet of %zu bytes is larger than %zu", opts.packet_size,
                      kMaxPacket);

  const bool xdp = prog.type == vm::ProgType::kXDP;
  const bool skb = is_skb_type(prog.type);
  PacketBuffer pkt;
  xdp_md xdp_ctx{};
  __sk_buff skb_ctx{};
  std::vector<uint8_t> blob;

  vm::RunContext proto;
  proto.prog = &prog;
  proto.num_cpus = rt.num_cpus;
  proto.cpu = current_cpu(rt);
  proto.print = rt.print;
  if (opts.insn_budget) proto.insn_budget = opts.insn_budget;

  if (xdp || skb) {
    if (opts.ctx_size)
      return make_error(EINVAL, "program %s (%s): pass a packet, not a context blob",
                        prog.name.c_str(), vm::prog_type_name(prog.type));
    // XDP: the kernel's linear frame (larger packets, which the kernel
    // splits into fragments, keep kTailroom); skb programs: kTailroom.
    const size_t tailroom =
        xdp && opts.packet_size <= kXdpMaxLinear ? kXdpMaxLinear - opts.packet_size : kTailroom;
    USERBPF_TRY(pkt.init(opts.packet, opts.packet_size, tailroom));
    uint8_t* data = pkt.data();
    uint8_t* data_end = data + pkt.len();
    proto.data_meta = data;
    proto.data = data;
    proto.data_end = data_end;
    proto.pkt_buf_start = pkt.start();
    proto.pkt_buf_end = pkt.end();
    if (xdp) {
      xdp_ctx.data = addr32(data);
      xdp_ctx.data_end = addr32(data_end);
      xdp_ctx.data_meta = addr32(data);
      xdp_ctx.ingress_ifindex = 1;
      proto.ctx = &xdp_ctx;
      proto.ctx_size = sizeof(xdp_ctx);
      proto.ctx_writable = false;
    } else {
      skb_ctx.len = static_cast<uint32_t>(pkt.len());
      skb_ctx.wire_len = skb_ctx.len;
      if (pkt.len() >= 14) {
        uint16_t proto_be;
        std::memcpy(&proto_be, data + 12, 2);
        skb_ctx.protocol = proto_be;
      }
      skb_ctx.ifindex = 1;
      skb_ctx.ingress_ifindex = 1;
      skb_ctx.data = addr32(data);
      skb_ctx.data_end = addr32(data_end);
      skb_ctx.data_meta = addr32(data);
      skb_ctx.gso_segs = 1;
      proto.ctx = &skb_ctx;
      proto.ctx_size = sizeof(skb_ctx);
      proto.ctx_writable = true;
    }
  } else {
    if (opts.packet_size)
      return make_error(EINVAL, "program %s (%s) takes a context blob, not a packet",
                        prog.name.c_str(), vm::prog_type_name(prog.type));
    if (opts.ctx_size) {
      blob.assign(static_cast<const uint8_t*>(opts.ctx),
                  static_cast<const uint8_t*>(opts.ctx) + opts.ctx_size);
      proto.ctx = blob.data();
      proto.ctx_size = blob.size();
    }
  }

  const uint32_t repeat = opts.repeat ? opts.repeat : 1;
  // One RunContext for every run: what a run changes in it is reset below
  // (budget, CPU); packet bounds a helper moved (adjust_head/meta/tail) carry
  // over to the next run, as the packet's bytes do.
  vm::RunContext& rc = proto;
  const uint64_t budget = rc.insn_budget;
  vm::RunLoop loop;
  USERBPF_TRY(use_jit ? vm::begin_jit_loop(loop, prog, rc) : vm::begin_interp_loop(loop, prog, rc));
  const uint32_t num_slots = rt.mem->slots.num_slots();
  // Each run holds a CPU slot (src/mem/cpu_slots.h): bpf_get_smp_processor_id
  // and per-CPU data are the slot's, and the run is a read-side section of
  // the runtime's RCU domain. Like the kernel's repeat loop, the runs keep one
  // slot and section while nobody waits for them (RcuReadHold). Sleepable
  // runs use their own pool; a nested run (signal handler) that finds no
  // free slot is a miss.
  mem::RcuReadHold hold(rt.mem->rcu, prog.sleepable && !mem::SlotTable::thread_in_slot());
  uint64_t retval = 0;
  uint64_t t0 = now_ns();
  for (uint32_t i = 0; i < repeat; i++) {
    if (!hold.fresh()) [[unlikely]] {
      const int slot = hold.reclaim();
      if (slot < 0) {
        prog.stats.misses.fetch_add(1, std::memory_order_relaxed);
        return make_error(EBUSY,
                          "program %s: no free CPU slot for a nested run (counted as a miss)",
                          prog.name.c_str());
      }
      // Normal slots are [0, N); sleepable ones [N, N + M) report slot % N.
      const uint32_t uslot = static_cast<uint32_t>(slot);
      rc.cpu = uslot < num_slots ? uslot : uslot % num_slots;
    }
    rc.insn_budget = budget;
    auto r = loop.run();
    if (!r.ok()) [[unlikely]] {
      prog.stats.faults.fetch_add(1, std::memory_order_relaxed);
      return r.take_error();
    }
    retval = r.value();
  }
  hold.release();
  uint64_t total = now_ns() - t0;
  prog.stats.run_cnt.fetch_add(repeat, std::memory_order_relaxed);
  prog.stats.run_time_ns.fetch_add(total, std::memory_order_relaxed);

  RunResult res;
  res.retval = retval;
  res.duration_ns = total / repeat;
  if (xdp || skb) res.packet_out.assign(proto.data, proto.data_end);
  if (!blob.empty()) res.ctx_out = std::move(blob);
  return res;
}

}  // namespace userbpf::internal
