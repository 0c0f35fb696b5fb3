// Copies between host buffers and map values skip special fields.
#include "maps/special_fields.h"

#include <gtest/gtest.h>

#include <cstring>

namespace userbpf::maps {
namespace {

void set_fields(Map& m, std::vector<SpecialField> fields) {
  auto ft = std::make_shared<FieldTable>();
  ft->fields = std::move(fields);
  m.attr.fields = ft;
}

TEST(SpecialFields, CopyInLeavesFieldsAndCopiesTheRest) {
  // value: u64 a | kptr | u32 b | spin lock (4) | u64 c  = 32 bytes
  Map m;
  set_fields(m, {{FieldKind::kKptr, 8, 8}, {FieldKind::kSpinLock, 20, 4}});
  alignas(8) unsigned char val[32];
  std::memset(val, 0xee, sizeof(val));
  unsigned char src[32];
  for (int i = 0; i < 32; i++) src[i] = static_cast<unsigned char>(i);
  copy_map_value_in(&m, val, src, sizeof(src));
  for (int i = 0; i < 32; i++) {
    bool field = (i >= 8 && i < 16) || (i >= 20 && i < 24);
    EXPECT_EQ(val[i], field ? 0xee : i) << "byte " << i;
  }
}

TEST(SpecialFields, CopyOutZeroesFields) {
  Map m;
  set_fields(m, {{FieldKind::kKptr, 8, 8}, {FieldKind::kSpinLock, 20, 4}});
  alignas(8) unsigned char val[32];
  for (int i = 0; i < 32; i++) val[i] = static_cast<unsigned char>(0x80 + i);
  unsigned char dst[33];
  std::memset(dst, 0x55, sizeof(dst));
  copy_map_value_out(&m, dst + 1, val, sizeof(val));  // unaligned destination
  EXPECT_EQ(dst[0], 0x55);
  for (int i = 0; i < 32; i++) {
    bool field = (i >= 8 && i < 16) || (i >= 20 && i < 24);
    EXPECT_EQ(dst[1 + i], field ? 0 : 0x80 + i) << "byte " << i;
  }
}

TEST(SpecialFields, NoTableCopiesEverything) {
  Map m;
  alignas(8) unsigned char val[12] = {};
  unsigned char src[12];
  for (int i = 0; i < 12; i++) src[i] = static_cast<unsigned char>(i + 1);
  copy_map_value_in(&m, val, src, sizeof(src));
  EXPECT_EQ(std::memcmp(val, src, sizeof(src)), 0);
  unsigned char out[12] = {};
  copy_map_value_out(&m, out, val, sizeof(val));
  EXPECT_EQ(std::memcmp(out, src, sizeof(src)), 0);
}

TEST(SpecialFields, ReleaseClearsFieldsButNotTheSpinLock) {
  // A spin lock holds nothing to release, and zeroing it would free a lock
  // a program holds (the kernel's bpf_obj_free_fields leaves it too).
  Map m;
  set_fields(m, {{FieldKind::kSpinLock, 4, 4}, {FieldKind::kTimer, 8, 16}});
  alignas(8) unsigned char val[32];
  std::memset(val, 0xff, sizeof(val));
  map_release_fields(&m, val);
  for (int i = 0; i < 32; i++) EXPECT_EQ(val[i], (i >= 8 && i < 24) ? 0 : 0xff) << i;
}

}  // namespace
}  // namespace userbpf::maps
