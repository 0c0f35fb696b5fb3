// Map: the host's view of a map, through its MapOps host entries, with errno
// turned into Errors that name the map and the operation.
#include <cstring>

#include "api/internal.h"

namespace userbpf {
namespace {

Status op_status(const maps::Map* m, const char* op, long rc) {
  if (rc >= 0) return Status::Ok();
  int err = static_cast<int>(-rc);
  return make_error(err, "map %s: %s: %s", m->attr.name.c_str(), op, std::strerror(err));
}

Status unsupported(const maps::Map* m, const char* op) {
  return make_error(EOPNOTSUPP, "map %s (%s): %s is not supported", m->attr.name.c_str(),
                    maps::map_type_name(m->attr.type), op);
}

Result<BatchResult> batch_result(const maps::Map* m, const char* op, int rc,
                                 const maps::BatchArgs& args) {
  if (rc == -ENOENT) return BatchResult{args.count, true};
  if (rc < 0) return op_status(m, op, rc).take_error();
  return BatchResult{args.count, false};
}

}  // namespace

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

uint32_t Map::value_buffer_size() const {
  const maps::Map* m = h_->map;
  return m->ops->host_value_size ? m->ops->host_value_size(m) : m->attr.value_size;
}

Status Map::lookup(const void* key, void* value, uint64_t flags) const {
  maps::Map* m = h_->map;
  if (!m->ops->lookup_elem_copy) return unsupported(m, "lookup");
  return op_status(m, "lookup", m->ops->lookup_elem_copy(m, key, value, flags));
}

Status Map::update(const void* key, const void* value, uint64_t flags) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->update_elem) return unsupported(m, "update");
  return op_status(m, "update", m->ops->update_elem(m, key, value, flags));
}

Status Map::erase(const void* key) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->delete_elem) return unsupported(m, "delete");
  return op_status(m, "delete", m->ops->delete_elem(m, key));
}

Status Map::lookup_and_delete(const void* key, void* value, uint64_t flags) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->lookup_and_delete_elem) return unsupported(m, "lookup_and_delete");
  return op_status(m, "lookup_and_delete", m->ops->lookup_and_delete_elem(m, key, value, flags));
}

Status Map::get_next_key(const void* key, void* next_key) const {
  maps::Map* m = h_->map;
  if (!m->ops->get_next_key) return unsupported(m, "get_next_key");
  return op_status(m, "get_next_key", m->ops->get_next_key(m, key, next_key));
}

Result<BatchResult> Map::lookup_batch(const void* in_batch, void* out_batch, void* keys,
                                      void* values, uint32_t count, uint64_t elem_flags,
                                      uint64_t flags) const {
  maps::Map* m = h_->map;
  if (!m->ops->lookup_batch) return unsupported(m, "lookup_batch").take_error();
  maps::BatchArgs a{in_batch, out_batch, keys, values, count, elem_flags, flags};
  return batch_result(m, "lookup_batch", m->ops->lookup_batch(m, a), a);
}

Result<BatchResult> Map::lookup_and_delete_batch(const void* in_batch, void* out_batch, void* keys,
                                                 void* values, uint32_t count, uint64_t elem_flags,
                                                 uint64_t flags) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->lookup_and_delete_batch)
    return unsupported(m, "lookup_and_delete_batch").take_error();
  maps::BatchArgs a{in_batch, out_batch, keys, values, count, elem_flags, flags};
  return batch_result(m, "lookup_and_delete_batch", m->ops->lookup_and_delete_batch(m, a), a);
}

Result<BatchResult> Map::update_batch(const void* keys, const void* values, uint32_t count,
                                      uint64_t elem_flags, uint64_t flags) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->update_batch) return unsupported(m, "update_batch").take_error();
  maps::BatchArgs a{nullptr,    nullptr, const_cast<void*>(keys), const_cast<void*>(values), count,
                    elem_flags, flags};
  int rc = m->ops->update_batch(m, a);
  if (rc < 0) return op_status(m, "update_batch", rc).take_error();
  return BatchResult{a.count, true};
}

Result<BatchResult> Map::delete_batch(const void* keys, uint32_t count, uint64_t elem_flags,
                                      uint64_t flags) {
  maps::Map* m = h_->map;
  if (m->frozen.load(std::memory_order_acquire))
    return make_error(EPERM, "map %s is frozen (read-only to the host)", m->attr.name.c_str());
  if (!m->ops->delete_batch) return unsupported(m, "delete_batch").take_error();
  maps::BatchArgs a{nullptr, nullptr, const_cast<void*>(keys), nullptr, count, elem_flags, flags};
  int rc = m->ops->delete_batch(m, a);
  if (rc < 0) return op_status(m, "delete_batch", rc).take_error();
  return BatchResult{a.count, true};
}

}  // namespace userbpf
