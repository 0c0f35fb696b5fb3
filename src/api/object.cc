// Object: a BPF ELF file opened into specs, then loaded (maps created,
// programs linked and prepared); owns its programs and maps.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "api/internal.h"

namespace userbpf {
namespace {

Result<std::vector<uint8_t>> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(errno, "cannot open %s: %s", path.c_str(), std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(EINVAL, "%s is not a regular file", path.c_str());
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      return make_error(err, "cannot read %s: %s", path.c_str(), std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

// "dir/flows.bpf.o" -> "flows", like libbpf's object name.
std::string object_name(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  for (const char* ext : {".bpf.o", ".o"}) {
    size_t n = std::strlen(ext);
    if (base.size() > n && base.compare(base.size() - n, n, ext) == 0)
      return base.substr(0, base.size() - n);
  }
  return base;
}

}  // namespace

Object::Object() : impl_(std::make_unique<internal::ObjectImpl>()) {}
Object::~Object() = default;

Result<std::unique_ptr<Object>> Object::open(Runtime& rt, const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.take_error();
  auto obj = open_memory(rt, bytes->data(), bytes->size(), object_name(path));
  if (!obj.ok()) {
    Error e = obj.take_error();
    e.message = path + ": " + e.message;
    return e;
  }
  return obj;
}

Result<std::unique_ptr<Object>> Object::open_memory(Runtime& rt, const void* data, size_t size,
                                                    const std::string& name) {
  auto spec = loader::open_object(data, size, name);
  if (!spec.ok()) return spec.take_error();
  std::unique_ptr<Object> obj(new Object());
  obj->impl_->rt = rt.impl();
  obj->impl_->spec = std::move(spec.value());
  return obj;
}

Status Object::load() {
  auto& o = *impl_;
  if (o.loaded) return make_error(EBUSY, "object %s is already loaded", o.spec.name.c_str());
  auto loaded = loader::load_object(o.spec, o.rt->mem.get());
  if (!loaded.ok()) return loaded.take_error();
  o.loaded = std::move(loaded.value());
  for (auto& m : o.loaded->maps) o.map_handles.emplace_back(m.get(), o.rt);
  for (auto& p : o.loaded->programs) o.prog_handles.push_back(Program::Handle{p.get(), o.rt});
  return Status::Ok();
}

bool Object::loaded() const {
  return impl_->loaded != nullptr;
}
const std::string& Object::name() const {
  return impl_->spec.name;
}
const std::string& Object::license() const {
  return impl_->spec.license;
}

std::vector<Program> Object::programs() const {
  std::vector<Program> out;
  for (auto& h : impl_->prog_handles) out.emplace_back(&h);
  return out;
}

std::vector<Map> Object::maps() const {
  std::vector<Map> out;
  for (auto& h : impl_->map_handles) out.emplace_back(&h);
  return out;
}

Result<Program> Object::find_program(const std::string& name) const {
  if (!loaded()) return make_error(EINVAL, "object %s is not loaded", impl_->spec.name.c_str());
  for (auto& h : impl_->prog_handles)
    if (h.prog->name == name) return Program(&h);
  for (auto& h : impl_->prog_handles)
    if (h.prog->section == name) return Program(&h);
  return make_error(ENOENT, "object %s has no program named %s", impl_->spec.name.c_str(),
                    name.c_str());
}

Result<Map> Object::find_map(const std::string& name) const {
  if (!loaded()) return make_error(EINVAL, "object %s is not loaded", impl_->spec.name.c_str());
  for (auto& h : impl_->map_handles)
    if (h.map->attr.name == name) return Map(&h);
  return make_error(ENOENT, "object %s has no map named %s", impl_->spec.name.c_str(),
                    name.c_str());
}

Result<std::vector<uint8_t>> Object::read_global(const std::string& name) const {
  const auto& o = *impl_;
  for (size_t i = 0; i < o.spec.maps.size(); i++) {
    const loader::MapSpec& m = o.spec.maps[i];
    if (!m.is_global_data) continue;
    for (const loader::GlobalVarSpec& v : m.vars) {
      if (v.name != name) continue;
      if (!o.loaded)
        return std::vector<uint8_t>(m.init.begin() + v.offset, m.init.begin() + v.offset + v.size);
      std::vector<uint8_t> value(m.attr.value_size);
      const uint32_t key = 0;
      USERBPF_TRY(Map(const_cast<Map::Handle*>(&o.map_handles[i])).lookup(&key, value.data()));
      return std::vector<uint8_t>(value.begin() + v.offset, value.begin() + v.offset + v.size);
    }
  }
  return make_error(ENOENT, "object %s has no global variable named %s", o.spec.name.c_str(),
                    name.c_str());
}

Status Object::set_map_max_entries(const std::string& map_name, uint32_t max_entries) {
  if (loaded())
    return make_error(EBUSY, "map %s: max_entries can only change before load", map_name.c_str());
  for (auto& m : impl_->spec.maps) {
    if (m.attr.name != map_name) continue;
    if (m.is_global_data)
      return make_error(EINVAL, "map %s is global data: max_entries is fixed", map_name.c_str());
    m.attr.max_entries = max_entries;
    return Status::Ok();
  }
  return make_error(ENOENT, "object %s has no map named %s", impl_->spec.name.c_str(),
                    map_name.c_str());
}

Status Object::set_map_memory_limit(const std::string& map_name, uint64_t bytes) {
  if (loaded())
    return make_error(EBUSY, "map %s: the memory limit can only change before load",
                      map_name.c_str());
  for (auto& m : impl_->spec.maps) {
    if (m.attr.name != map_name) continue;
    m.attr.memory_limit = bytes;
    return Status::Ok();
  }
  return make_error(ENOENT, "object %s has no map named %s", impl_->spec.name.c_str(),
                    map_name.c_str());
}

}  // namespace userbpf
