// Map: the host's view of a map, through its MapOps host entries, with errno
// turned into Errors that name the map and the operation.
#include <cstring>
#include <string>

#include "api/internal.h"
#include "maps/host_access.h"
#include "maps/map_internal.h"

namespace userbpf {
namespace {

using maps::kEnotsupp;

Status op_status(const maps::Map* m, const char* op, long rc, uint64_t flags = 0) {
  if (rc >= 0) return Status::Ok();
  int err = static_cast<int>(-rc);
  if (err == ERANGE && (flags & maps::kBpfFCpu))
    return make_error(err, "map %s: %s: BPF_F_CPU names CPU %llu, the map has %u",
                      m->attr.name.c_str(), op, static_cast<unsigned long long>(flags >> 32),
                      maps::map_num_cpus(m));
  if (err == ENOMEM && m->attr.memory_limit != 0)
    return make_error(err, "map %s: %s: out of memory: memory_limit %llu bytes reached (%llu used)",
                      m->attr.name.c_str(), op,
                      static_cast<unsigned long long>(m->attr.memory_limit),
                      static_cast<unsigned long long>(m->memory_used.load()));
  return make_error(
      err, "map %s: %s: %s", m->attr.name.c_str(), op,
      err == kEnotsupp ? "not supported by this map type (ENOTSUPP)" : std::strerror(err));
}

// The host's permission for an op that reads and/or writes the map:
// BPF_F_RDONLY / BPF_F_WRONLY at creation, frozen after load (.rodata).
Status host_access(const maps::Map* m, const char* op, bool read, bool write) {
  if (maps::map_host_access(m, read, write) == 0) return Status::Ok();
  return make_error(EPERM, "map %s: %s: the map is %s to the host", m->attr.name.c_str(), op,
                    read && (m->attr.map_flags & maps::kBpfFWronly) ? "write-only" : "read-only");
}

Status unsupported(const maps::Map* m, const char* op) {
  return make_error(EOPNOTSUPP, "map %s (%s): %s is not supported", m->attr.name.c_str(),
                    maps::map_type_name(m->attr.type), op);
}

Result<BatchResult> batch_result(const maps::Map* m, const char* op, int rc,
                                 const maps::BatchArgs& args) {
  if (rc == -ENOENT) return BatchResult{args.count, true};
  if (rc < 0) return op_status(m, op, rc, args.elem_flags).take_error();
  return BatchResult{args.count, false};
}

constexpr const char* kNotFoundOpNames[Map::Handle::kNotFoundOps] = {"lookup", "delete",
                                                                     "get_next_key"};

// op_status of op, with the Error prebuilt for ENOENT.
Status op_status(const Map::Handle& h, Map::Handle::NotFound op, long rc, uint64_t flags = 0) {
  if (rc == -ENOENT) return h.not_found[op];
  return op_status(h.map, kNotFoundOpNames[op], rc, flags);
}

}  // namespace

Map::Handle::Handle(maps::Map* m, internal::RuntimeImpl* r) : map(m), rt(r) {
  for (int op = 0; op < kNotFoundOps; op++)
    not_found[op] = op_status(m, kNotFoundOpNames[op], -ENOENT).take_error();
}

const std::string& Map::name() const {
  return h_->map->attr.name;
}
uint32_t Map::type() const {
  return h_->map->attr.type;
}
const char* Map::type_name() const {
  return maps::map_type_name(h_->map->attr.type);
}
uint32_t Map::key_size() const {
  return h_->map->attr.key_size;
}
uint32_t Map::value_size() const {
  return h_->map->attr.value_size;
}
uint32_t Map::max_entries() const {
  return h_->map->attr.max_entries;
}
uint32_t Map::map_flags() const {
  return h_->map->attr.map_flags;
}
uint64_t Map::memory_used() const {
  return h_->map->memory_used.load(std::memory_order_relaxed);
}

uint64_t Map::memory_limit() const {
  return h_->map->attr.memory_limit;
}

uint32_t Map::value_buffer_size() const {
  const maps::Map* m = h_->map;
  return m->ops->host_value_size ? m->ops->host_value_size(m) : m->attr.value_size;
}

bool Map::is_percpu() const {
  return maps::map_type_is_percpu(h_->map->attr.type);
}

uint32_t Map::num_cpus() const {
  return maps::map_num_cpus(h_->map);
}

Status Map::lookup(const void* key, void* value, uint64_t flags) const {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "lookup", true, false));
  if (!m->ops->lookup_elem_copy) return unsupported(m, "lookup");
  return op_status(*h_, Handle::kLookup, m->ops->lookup_elem_copy(m, key, value, flags), flags);
}

Status Map::update(const void* key, const void* value, uint64_t flags) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "update", false, true));
  // bpf(2) refuses BPF_F_LOCK without a lock before the map type's own
  // checks (which programs' updates see in the type's order).
  if ((flags & maps::kBpfFLock) && !maps::map_has_spin_lock(m))
    return op_status(m, "update", -EINVAL, flags);
  // Maps whose host value differs from a program's (per-CPU) have a host
  // entry of their own.
  auto update = m->ops->update_elem_copy ? m->ops->update_elem_copy : m->ops->update_elem;
  if (!update) return unsupported(m, "update");
  return op_status(m, "update", update(m, key, value, flags), flags);
}

Status Map::erase(const void* key) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "delete", false, true));
  if (!m->ops->delete_elem) return unsupported(m, "delete");
  return op_status(*h_, Handle::kDelete, m->ops->delete_elem(m, key));
}

Status Map::lookup_and_delete(const void* key, void* value, uint64_t flags) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "lookup_and_delete", true, true));
  if (!m->ops->lookup_and_delete_elem) return unsupported(m, "lookup_and_delete");
  return op_status(m, "lookup_and_delete", m->ops->lookup_and_delete_elem(m, key, value, flags));
}

Status Map::get_next_key(const void* key, void* next_key) const {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "get_next_key", true, false));
  if (!m->ops->get_next_key) return unsupported(m, "get_next_key");
  return op_status(*h_, Handle::kNextKey, m->ops->get_next_key(m, key, next_key));
}

Result<BatchResult> Map::lookup_batch(const void* in_batch, void* out_batch, void* keys,
                                      void* values, uint32_t count, uint64_t elem_flags,
                                      uint64_t flags) const {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "lookup_batch", true, false));
  if (!m->ops->lookup_batch) return unsupported(m, "lookup_batch").take_error();
  maps::BatchArgs a{in_batch, out_batch, keys, values, count, elem_flags, flags};
  return batch_result(m, "lookup_batch", m->ops->lookup_batch(m, a), a);
}

Result<BatchResult> Map::lookup_and_delete_batch(const void* in_batch, void* out_batch, void* keys,
                                                 void* values, uint32_t count, uint64_t elem_flags,
                                                 uint64_t flags) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "lookup_and_delete_batch", true, true));
  if (!m->ops->lookup_and_delete_batch)
    return unsupported(m, "lookup_and_delete_batch").take_error();
  maps::BatchArgs a{in_batch, out_batch, keys, values, count, elem_flags, flags};
  return batch_result(m, "lookup_and_delete_batch", m->ops->lookup_and_delete_batch(m, a), a);
}

Result<BatchResult> Map::update_batch(const void* keys, const void* values, uint32_t count,
                                      uint64_t elem_flags, uint64_t flags) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "update_batch", false, true));
  if (!m->ops->update_batch) return unsupported(m, "update_batch").take_error();
  maps::BatchArgs a{nullptr,    nullptr, const_cast<void*>(keys), const_cast<void*>(values), count,
                    elem_flags, flags};
  int rc = m->ops->update_batch(m, a);
  if (rc < 0) {  // the kernel reports how many elements were done before the error
    Error e = op_status(m, "update_batch", rc, elem_flags).take_error();
    e.message +=
        " (after " + std::to_string(a.count) + " of " + std::to_string(count) + " elements)";
    return e;
  }
  return BatchResult{a.count, true};
}

Result<BatchResult> Map::delete_batch(const void* keys, uint32_t count, uint64_t elem_flags,
                                      uint64_t flags) {
  maps::Map* m = h_->map;
  USERBPF_TRY(host_access(m, "delete_batch", false, true));
  if (!m->ops->delete_batch) return unsupported(m, "delete_batch").take_error();
  maps::BatchArgs a{nullptr, nullptr, const_cast<void*>(keys), nullptr, count, elem_flags, flags};
  int rc = m->ops->delete_batch(m, a);
  if (rc < 0) {  // the kernel reports how many elements were done before the error
    Error e = op_status(m, "delete_batch", rc).take_error();
    e.message +=
        " (after " + std::to_string(a.count) + " of " + std::to_string(count) + " elements)";
    return e;
  }
  return BatchResult{a.count, true};
}

}  // namespace userbpf
