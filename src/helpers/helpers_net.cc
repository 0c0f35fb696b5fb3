// Packet helpers for XDP and tc programs: moving the XDP packet bounds
// (adjust_head/meta/tail), reading and writing __sk_buff packet bytes, and
// checksum arithmetic (csum_diff, l3/l4_csum_replace).
//
// The packet lives in a buffer the runtime maps below 4 GiB, so the u32
// data/data_meta/data_end fields of xdp_md and __sk_buff hold real addresses.
// RunContext::data_meta/data/data_end are the truth; the XDP helpers move
// them within [pkt_buf_start + sizeof(xdp_frame), pkt_buf_end] and write the
// new bounds back into the program's xdp_md.
//
// Checksum state: the runtime's skbs are CHECKSUM_NONE (as in the kernel's
// BPF_PROG_TEST_RUN), so BPF_F_RECOMPUTE_CSUM and BPF_F_PSEUDO_HDR have
// nothing to update beyond the checksum field itself.
#include <linux/bpf.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>

#include "helpers/csum.h"
#include "helpers/helper_fns.h"
#include "vm/run_context.h"

namespace userbpf::helpers {
namespace {

u64 neg(int err) {
  return static_cast<u64>(-static_cast<int64_t>(err));
}
void* vptr(u64 v) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(v));
}
uint32_t addr32(const void* p) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p));
}
intptr_t iaddr(const void* p) {
  return static_cast<intptr_t>(reinterpret_cast<uintptr_t>(p));
}

bool has_packet(const vm::RunContext* rc) {
  return rc && rc->data && rc->data_end;
}

// Whether the run's context is an xdp_md (the kernel offers these helpers
// to XDP programs only); runs without a Program (tests) go by size.
bool xdp_ctx(const vm::RunContext* rc) {
  if (!has_packet(rc) || !rc->pkt_buf_start || !rc->pkt_buf_end || !rc->ctx) return false;
  if (rc->prog) return rc->prog->type == vm::ProgType::kXDP;
  return rc->ctx_size == sizeof(xdp_md);
}

bool skb_ctx(const vm::RunContext* rc) {
  if (!rc || !rc->ctx) return false;
  if (rc->prog) return rc->prog->type != vm::ProgType::kXDP && rc->ctx_size == sizeof(__sk_buff);
  return rc->ctx_size == sizeof(__sk_buff);
}

void sync_xdp_md(vm::RunContext* rc) {
  auto* md = static_cast<xdp_md*>(rc->ctx);
  md->data = addr32(rc->data);
  md->data_meta = addr32(rc->data_meta);
  md->data_end = addr32(rc->data_end);
}

size_t packet_len(const vm::RunContext* rc) {
  return static_cast<size_t>(rc->data_end - rc->data);
}

// bpf_try_make_writable: the bytes [0, end) must lie inside the packet.
bool packet_has(const vm::RunContext* rc, uint64_t end) {
  return end <= packet_len(rc);
}

uint16_t load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void store16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}

}  // namespace

u64 bpf_xdp_adjust_head(u64, u64 offset, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (!xdp_ctx(rc)) return neg(EOPNOTSUPP);
  const int off = static_cast<int>(static_cast<uint32_t>(offset));
  const intptr_t frame_end = iaddr(rc->pkt_buf_start) + static_cast<intptr_t>(kXdpFrameSize);
  const intptr_t metalen = rc->data - rc->data_meta;
  const intptr_t data = iaddr(rc->data) + off;
  if (data < frame_end + metalen || data > iaddr(rc->data_end) - static_cast<intptr_t>(kEthHlen))
    return neg(EINVAL);
  if (metalen) std::memmove(rc->data_meta + off, rc->data_meta, static_cast<size_t>(metalen));
  rc->data_meta += off;
  rc->data += off;
  sync_xdp_md(rc);
  return 0;
}

u64 bpf_xdp_adjust_meta(u64, u64 offset, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (!xdp_ctx(rc)) return neg(EOPNOTSUPP);
  const int off = static_cast<int>(static_cast<uint32_t>(offset));
  const intptr_t frame_end = iaddr(rc->pkt_buf_start) + static_cast<intptr_t>(kXdpFrameSize);
  const intptr_t meta = iaddr(rc->data_meta) + off;
  if (meta < frame_end || meta > iaddr(rc->data)) return neg(EINVAL);
  const intptr_t metalen = iaddr(rc->data) - meta;
  if ((metalen & 3) || metalen > static_cast<intptr_t>(kXdpMetaMax)) return neg(EACCES);
  rc->data_meta += off;
  sync_xdp_md(rc);
  return 0;
}

u64 bpf_xdp_adjust_tail(u64, u64 offset, u64, u64, u64) {
  vm::RunContext* rc = vm::current_run();
  if (!xdp_ctx(rc)) return neg(EOPNOTSUPP);
  const int off = static_cast<int>(static_cast<uint32_t>(offset));
  const intptr_t data_end = iaddr(rc->data_end) + off;
  if (data_end > iaddr(rc->pkt_buf_end)) return neg(EINVAL);
  if (data_end < iaddr(rc->data) + static_cast<intptr_t>(kEthHlen)) return neg(EINVAL);
  // Growth exposes buffer bytes the program has not seen: clear them.
  if (off > 0) std::memset(rc->data_end, 0, static_cast<size_t>(off));
  rc->data_end += off;
  sync_xdp_md(rc);
  return 0;
}

// One's-complement sum of ~from[] and to[] (32-bit words) onto seed: the
// kernel's scratchpad holds at most 512 bytes.
u64 bpf_csum_diff(u64 from, u64 from_size, u64 to, u64 to_size, u64 seed) {
  const auto fsz = static_cast<uint32_t>(from_size);
  const auto tsz = static_cast<uint32_t>(to_size);
  uint32_t diff[512 / sizeof(uint32_t)];
  const uint64_t diff_size = uint64_t{fsz} + tsz;
  if (((fsz | tsz) & 3) || diff_size > sizeof(diff)) return neg(EINVAL);
  size_t j = 0;
  const auto* f = static_cast<const uint8_t*>(vptr(from));
  const auto* t = static_cast<const uint8_t*>(vptr(to));
  for (uint32_t i = 0; i < fsz / 4; i++, j++) {
    uint32_t w;
    std::memcpy(&w, f + 4 * i, 4);
    diff[j] = ~w;
  }
  for (uint32_t i = 0; i < tsz / 4; i++, j++) std::memcpy(&diff[j], t + 4 * i, 4);
  return csum::partial(diff, static_cast<size_t>(diff_size), static_cast<uint32_t>(seed));
}

u64 bpf_skb_load_bytes(u64, u64 offset, u64 to, u64 len, u64) {
  vm::RunContext* rc = vm::current_run();
  const auto off = static_cast<uint32_t>(offset);
  const auto n = static_cast<uint32_t>(len);
  if (off > INT_MAX || !has_packet(rc) || !packet_has(rc, uint64_t{off} + n)) {
    std::memset(vptr(to), 0, n);
    return neg(EFAULT);
  }
  std::memcpy(vptr(to), rc->data + off, n);
  return 0;
}

u64 bpf_skb_store_bytes(u64, u64 offset, u64 from, u64 len, u64 flags) {
  vm::RunContext* rc = vm::current_run();
  const auto off = static_cast<uint32_t>(offset);
  const auto n = static_cast<uint32_t>(len);
  if (flags & ~static_cast<u64>(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH)) return neg(EINVAL);
  if (off > INT_MAX) return neg(EFAULT);
  if (!has_packet(rc) || !packet_has(rc, uint64_t{off} + n)) return neg(EFAULT);
  // from may point into the packet itself.
  std::memmove(rc->data + off, vptr(from), n);
  if ((flags & BPF_F_INVALIDATE_HASH) && skb_ctx(rc)) static_cast<__sk_buff*>(rc->ctx)->hash = 0;
  return 0;
}

u64 bpf_l3_csum_replace(u64, u64 offset, u64 from, u64 to, u64 flags) {
  vm::RunContext* rc = vm::current_run();
  const auto off = static_cast<uint32_t>(offset);
  if (flags & ~static_cast<u64>(BPF_F_HDR_FIELD_MASK)) return neg(EINVAL);
  if (off > 0xffff || (off & 1)) return neg(EFAULT);
  if (!has_packet(rc) || !packet_has(rc, uint64_t{off} + 2)) return neg(EFAULT);
  uint8_t* field = rc->data + off;
  const uint16_t sum = load16(field);
  switch (flags & BPF_F_HDR_FIELD_MASK) {
    case 0:
      if (from != 0) return neg(EINVAL);
      store16(field, csum::replace_by_diff(sum, static_cast<uint32_t>(to)));
      break;
    case 2:
      store16(field, csum::replace2(sum, static_cast<uint16_t>(from), static_cast<uint16_t>(to)));
      break;
    case 4:
      store16(field, csum::replace4(sum, static_cast<uint32_t>(from), static_cast<uint32_t>(to)));
      break;
    default:
      return neg(EINVAL);
  }
  return 0;
}

u64 bpf_l4_csum_replace(u64, u64 offset, u64 from, u64 to, u64 flags) {
  vm::RunContext* rc = vm::current_run();
  const auto off = static_cast<uint32_t>(offset);
  const bool mangled_0 = flags & BPF_F_MARK_MANGLED_0;
  const bool enforce = flags & BPF_F_MARK_ENFORCE;
  // BPF_F_IPV6 (1 << 7, in 6.12 stable) only matters for CHECKSUM_COMPLETE skbs.
  constexpr u64 kIpv6 = 1ull << 7;
  if (flags & ~static_cast<u64>(BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR |
                                BPF_F_HDR_FIELD_MASK | kIpv6))
    return neg(EINVAL);
  if (off > 0xffff || (off & 1)) return neg(EFAULT);
  if (!has_packet(rc) || !packet_has(rc, uint64_t{off} + 2)) return neg(EFAULT);
  uint8_t* field = rc->data + off;
  uint16_t sum = load16(field);
  // A zero UDP checksum means "none": leave it unless told to enforce.
  if (mangled_0 && !enforce && !sum) return 0;
  switch (flags & BPF_F_HDR_FIELD_MASK) {
    case 0:
      if (from != 0) return neg(EINVAL);
      sum = csum::replace_by_diff(sum, static_cast<uint32_t>(to));
      break;
    case 2:  // inet_proto_csum_replace2 widens the 16-bit values to 32 bits
      sum = csum::replace4(sum, static_cast<uint16_t>(from), static_cast<uint16_t>(to));
      break;
    case 4:
      sum = csum::replace4(sum, static_cast<uint32_t>(from), static_cast<uint32_t>(to));
      break;
    default:
      return neg(EINVAL);
  }
  if (mangled_0 && !sum) sum = 0xffff;  // CSUM_MANGLED_0
  store16(field, sum);
  return 0;
}

}  // namespace userbpf::helpers
