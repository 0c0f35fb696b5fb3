// Special fields of a map value found in its BTF (the kernel's
// btf_parse_fields): kptrs are pointers whose pointee carries the type tag
// "kptr" or "percpu_kptr"; bpf_spin_lock, bpf_timer and bpf_wq are structs
// known by name. Nested structs and arrays are searched too.
#include <algorithm>
#include <cinttypes>
#include <string>

#include "loader/open_internal.h"
#include "maps/special_fields.h"

namespace userbpf::loader {
namespace {

constexpr size_t kMaxFields = 64;
constexpr int kMaxNesting = 16;

struct Walker {
  const Btf& btf;
  const std::string& map;
  std::vector<maps::SpecialField> out;

  Status add(maps::FieldKind kind, uint64_t off, uint32_t size, uint32_t align, const char* what,
             uint32_t obj_size = 0) {
    if (off % align != 0)
      return make_error(EINVAL,
                        ".maps: map '%s': %s at value offset %" PRIu64 " is not %u-byte aligned",
                        map.c_str(), what, off, align);
    if (out.size() == kMaxFields)
      return make_error(E2BIG, ".maps: map '%s': more than %zu special fields in the value",
                        map.c_str(), kMaxFields);
    out.push_back({kind, static_cast<uint32_t>(off), size, obj_size});
    return Status::Ok();
  }

  // A pointer member: a kptr if a type tag "kptr"/"percpu_kptr" sits between
  // the pointer and its struct.
  Status pointer(const BtfType& ptr, uint64_t off) {
    uint32_t id = ptr.size_or_type;
    const char* tag = nullptr;
    for (int i = 0; i < kMaxResolveDepth; i++) {
      const BtfType* t = btf.type_by_id(id);
      if (t == nullptr) return Status::Ok();
      if (t->kind == BtfKind::kTypeTag) {
        std::string_view name = btf.str(t->name_off);
        if (name == "kptr" || name == "percpu_kptr") {
          tag = name == "kptr" ? "kptr" : "percpu_kptr";
        } else if (name == "kptr_untrusted" || name == "kptr_ref") {
          return make_error(ENOTSUP,
                            ".maps: map '%s': %.*s field at value offset %" PRIu64
                            ": kptrs to kernel types are not supported (only __kptr and "
                            "__percpu_kptr to program types)",
                            map.c_str(), static_cast<int>(name.size()), name.data(), off);
        }
      } else if (t->kind != BtfKind::kConst && t->kind != BtfKind::kVolatile &&
                 t->kind != BtfKind::kRestrict && t->kind != BtfKind::kTypedef) {
        if (tag == nullptr) return Status::Ok();
        if (t->kind != BtfKind::kStruct)
          return make_error(EINVAL,
                            ".maps: map '%s': %s field at value offset %" PRIu64
                            " points to %s, expected a struct",
                            map.c_str(), tag, off, btf_kind_name(t->kind));
        const bool percpu = tag[0] == 'p';
        return add(percpu ? maps::FieldKind::kPercpuKptr : maps::FieldKind::kKptr, off, 8, 8, tag,
                   t->size_or_type);
      }
      id = t->size_or_type;
    }
    return make_error(EINVAL,
                      ".maps: map '%s': pointer type chain at value offset %" PRIu64 " too deep",
                      map.c_str(), off);
  }

  Status walk(uint32_t type_id, uint64_t off, int depth) {
    if (depth > kMaxNesting)
      return make_error(EINVAL, ".maps: map '%s': value type nested too deep", map.c_str());
    auto id = btf.skip_mods_and_typedefs(type_id);
    if (!id.ok()) return id.take_error();
    const BtfType* t = btf.type_by_id(*id);
    if (t == nullptr) return Status::Ok();
    switch (t->kind) {
      case BtfKind::kPtr:
        return pointer(*t, off);
      case BtfKind::kArray: {
        BtfArray a = btf.array(*t);
        Walker one{btf, map, {}};
        USERBPF_TRY(one.walk(a.type, 0, depth + 1));
        if (one.out.empty() || a.nelems == 0) return Status::Ok();
        auto esz = btf.resolve_size(a.type);
        if (!esz.ok()) return esz.take_error();
        for (uint32_t i = 0; i < a.nelems; i++) {
          for (const maps::SpecialField& f : one.out) {
            if (out.size() == kMaxFields)
              return make_error(E2BIG, ".maps: map '%s': more than %zu special fields in the value",
                                map.c_str(), kMaxFields);
            maps::SpecialField g = f;
            g.offset = static_cast<uint32_t>(off + i * *esz + f.offset);
            out.push_back(g);
          }
        }
        return Status::Ok();
      }
      case BtfKind::kStruct:
      case BtfKind::kUnion: {
        std::string_view name = btf.type_name(*id);
        if (name == "bpf_spin_lock")
          return add(maps::FieldKind::kSpinLock, off, 4, 4, "bpf_spin_lock");
        if (name == "bpf_timer") return add(maps::FieldKind::kTimer, off, 16, 8, "bpf_timer");
        if (name == "bpf_wq") return add(maps::FieldKind::kWorkqueue, off, 16, 8, "bpf_wq");
        if (name == "bpf_list_head" || name == "bpf_list_node" || name == "bpf_rb_root" ||
            name == "bpf_rb_node" || name == "bpf_refcount")
          return make_error(ENOTSUP, ".maps: map '%s': %.*s fields are not supported", map.c_str(),
                            static_cast<int>(name.size()), name.data());
        for (const BtfMember& m : btf.members(*t)) {
          const uint32_t bit = t->kflag ? (m.offset & 0xffffff) : m.offset;
          if (t->kflag && (m.offset >> 24) != 0) continue;  // a bitfield: never special
          if (bit % 8 != 0) continue;
          USERBPF_TRY(walk(m.type, off + bit / 8, depth + 1));
        }
        return Status::Ok();
      }
      default:
        return Status::Ok();
    }
  }
};

}  // namespace

Result<std::shared_ptr<const maps::FieldTable>> find_special_fields(const Btf& btf,
                                                                    uint32_t value_type_id,
                                                                    uint32_t value_size,
                                                                    const std::string& map) {
  Walker w{btf, map, {}};
  USERBPF_TRY(w.walk(value_type_id, 0, 0));
  if (w.out.empty()) return std::shared_ptr<const maps::FieldTable>();
  std::sort(
      w.out.begin(), w.out.end(),
      [](const maps::SpecialField& a, const maps::SpecialField& b) { return a.offset < b.offset; });
  int locks = 0, timers = 0, wqs = 0;
  for (size_t i = 0; i < w.out.size(); i++) {
    const maps::SpecialField& f = w.out[i];
    if (uint64_t{f.offset} + f.size > value_size)
      return make_error(EINVAL,
                        ".maps: map '%s': special field at offset %u past the %u-byte value",
                        map.c_str(), f.offset, value_size);
    if (i > 0 && w.out[i - 1].offset + w.out[i - 1].size > f.offset)
      return make_error(EINVAL, ".maps: map '%s': special fields overlap at offset %u", map.c_str(),
                        f.offset);
    locks += f.kind == maps::FieldKind::kSpinLock;
    timers += f.kind == maps::FieldKind::kTimer;
    wqs += f.kind == maps::FieldKind::kWorkqueue;
  }
  if (locks > 1 || timers > 1 || wqs > 1)
    return make_error(EINVAL,
                      ".maps: map '%s': a value may hold one bpf_spin_lock, one "
                      "bpf_timer and one bpf_wq (found %d, %d, %d)",
                      map.c_str(), locks, timers, wqs);
  auto ft = std::make_shared<maps::FieldTable>();
  ft->fields = std::move(w.out);
  return std::shared_ptr<const maps::FieldTable>(std::move(ft));
}

}  // namespace userbpf::loader
