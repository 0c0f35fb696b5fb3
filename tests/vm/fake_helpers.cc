// Fake helper protos for the VM tests: small native functions with the
// argument kinds real helpers use, so the engine's checks can be exercised.
#include <cstring>

#include "vm/run_context.h"
#include "vm_test_util.h"

namespace userbpf::test {
namespace {

using vm::ArgKind;
using vm::HelperProto;
using vm::RetKind;

uint64_t h_lookup(uint64_t map, uint64_t key, uint64_t, uint64_t, uint64_t) {
  auto* m = reinterpret_cast<maps::Map*>(map);
  return reinterpret_cast<uintptr_t>(m->ops->lookup_elem(m, reinterpret_cast<const void*>(key)));
}
uint64_t h_update(uint64_t map, uint64_t key, uint64_t value, uint64_t, uint64_t) {
  auto* m = reinterpret_cast<maps::Map*>(map);
  void* dst = m->ops->lookup_elem(m, reinterpret_cast<const void*>(key));
  if (dst == nullptr) return static_cast<uint64_t>(-E2BIG);
  std::memcpy(dst, reinterpret_cast<const void*>(value), m->attr.value_size);
  return 0;
}
uint64_t h_sum5(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e) {
  return a + b + c + d + e;
}
uint64_t h_fill(uint64_t p, uint64_t n, uint64_t, uint64_t, uint64_t) {
  std::memset(reinterpret_cast<void*>(p), 0xab, n);
  return n;
}
uint64_t h_strlen(uint64_t s, uint64_t, uint64_t, uint64_t, uint64_t) {
  return std::strlen(reinterpret_cast<const char*>(s));
}
uint64_t h_loop(uint64_t nr, uint64_t fn, uint64_t ctx, uint64_t, uint64_t) {
  vm::RunContext* rc = vm::current_run();
  uint64_t sum = 0;
  for (uint64_t i = 0; i < nr; ++i) {
    sum += rc->call_fn(rc, fn, i, ctx, 0, 0, 0);
  }
  return sum;
}
uint64_t h_recurse(uint64_t fn, uint64_t arg, uint64_t, uint64_t, uint64_t) {
  vm::RunContext* rc = vm::current_run();
  return rc->call_fn(rc, fn, arg, 0, 0, 0, 0);
}
uint64_t h_ctx(uint64_t ctx, uint64_t, uint64_t, uint64_t, uint64_t) {
  return *reinterpret_cast<const uint8_t*>(ctx);
}
alignas(16) uint8_t g_scratch[16];
uint64_t h_scratch(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t) {
  return reinterpret_cast<uintptr_t>(g_scratch);
}
uint64_t h_fixed(uint64_t p, uint64_t, uint64_t, uint64_t, uint64_t) {
  const uint64_t v = 0x1122334455667788ull;
  std::memcpy(reinterpret_cast<void*>(p), &v, 8);
  return 0;
}
uint64_t h_read_mem(uint64_t p, uint64_t n, uint64_t, uint64_t, uint64_t) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < n; ++i) sum += reinterpret_cast<const uint8_t*>(p)[i];
  return sum;
}
uint64_t kf_add(uint64_t a, uint64_t b, uint64_t, uint64_t, uint64_t) {
  return a + b;
}

const HelperProto kLookup{
    "fake_lookup", h_lookup, {ArgKind::kConstMapPtr, ArgKind::kMapKey}, RetKind::kMapValueOrNull};
const HelperProto kUpdate{
    "fake_update",
    h_update,
    {ArgKind::kConstMapPtr, ArgKind::kMapKey, ArgKind::kMapValue, ArgKind::kAnything}};
const HelperProto kSum5{"fake_sum5",
                        h_sum5,
                        {ArgKind::kAnything, ArgKind::kAnything, ArgKind::kAnything,
                         ArgKind::kAnything, ArgKind::kAnything}};
const HelperProto kFill{"fake_fill", h_fill, {ArgKind::kUninitMem, ArgKind::kConstSize}};
const HelperProto kStrlen{"fake_strlen", h_strlen, {ArgKind::kConstStr}};
const HelperProto kLoop{
    "fake_loop", h_loop, {ArgKind::kAnything, ArgKind::kFunc, ArgKind::kAnything}};
const HelperProto kRecurse{"fake_recurse", h_recurse, {ArgKind::kFunc, ArgKind::kAnything}};
const HelperProto kCtx{"fake_ctx", h_ctx, {ArgKind::kCtx}};
HelperProto make_scratch() {
  HelperProto p{"fake_scratch", h_scratch, {}, RetKind::kMemOrNull};
  p.ret_size = sizeof(g_scratch);
  return p;
}
const HelperProto kScratch = make_scratch();
HelperProto make_fixed() {
  HelperProto p{"fake_fixed", h_fixed, {ArgKind::kFixedSizeMem}};
  p.arg_size[0] = 8;
  return p;
}
const HelperProto kFixed = make_fixed();
const HelperProto kSleepy{"fake_sleepy", h_sum5, {}, RetKind::kInteger, true};
const HelperProto kReadMem{"fake_read_mem", h_read_mem, {ArgKind::kMem, ArgKind::kConstSizeOrZero}};

struct Table {
  const HelperProto* t[vm::kMaxHelperId] = {};
  Table() {
    t[kHelperLookup] = &kLookup;
    t[kHelperSum5] = &kSum5;
    t[kHelperFill] = &kFill;
    t[kHelperStrlen] = &kStrlen;
    t[kHelperLoop] = &kLoop;
    t[kHelperCtx] = &kCtx;
    t[kHelperScratch] = &kScratch;
    t[kHelperFixed] = &kFixed;
    t[kHelperSleepy] = &kSleepy;
    t[kHelperReadMem] = &kReadMem;
    t[kHelperUpdate] = &kUpdate;
    t[kHelperRecurse] = &kRecurse;
  }
};

}  // namespace

const vm::HelperProto kFakeKfuncAdd{
    "fake_kf_add", kf_add, {ArgKind::kAnything, ArgKind::kAnything}};

const vm::HelperProto* const* fake_helper_table() {
  static const Table table;
  return table.t;
}

uint8_t* fake_scratch() {
  return g_scratch;
}

}  // namespace userbpf::test
