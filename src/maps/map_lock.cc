// The per-thread record of map spin locks held (see map_lock.h).
#include "maps/map_lock.h"

namespace userbpf::maps {

thread_local constinit HeldMapLocks t_held_map_locks __attribute__((tls_model("initial-exec")));

}  // namespace userbpf::maps
