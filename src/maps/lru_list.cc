// LRU lists of LRU_HASH and LRU_PERCPU_HASH: aging, eviction, per-slot free
// entries and stealing (design in lru_list.h).
#include "maps/lru_list.h"

#include <algorithm>
#include <new>
#include <set>

#include "base/assert.h"

namespace userbpf::maps {
namespace {

void list_init(LruLink* head) {
  head->prev = head;
  head->next = head;
}
bool list_empty(const LruLink* head) {
  return head->next == head;
}
void list_del(LruLink* n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
}
void list_add_head(LruLink* head, LruLink* n) {
  n->next = head->next;
  n->prev = head;
  head->next->prev = n;
  head->next = n;
}
LruNode* as_node(LruLink* l) {
  return static_cast<LruNode*>(l);
}
bool is_ref(const LruNode* n) {
  return n->ref.load(std::memory_order_relaxed) != 0;
}
void clear_ref(LruNode* n) {
  n->ref.store(0, std::memory_order_relaxed);
}
// Acquire: the map's writes before push_free (releasing the element's
// fields) happen before whoever sees the flag hands the node to free_node.
bool is_pending_free(const LruNode* n) {
  return n->pending_free.load(std::memory_order_acquire) != 0;
}
LruNodeType type_of(const LruNode* n) {
  return n->type.load(std::memory_order_relaxed);
}
void set_type(LruNode* n, LruNodeType t) {
  n->type.store(t, std::memory_order_relaxed);
}

// Records whether the running pop_free is nested, for del_from_htab.
class NestedScope {
 public:
  NestedScope(bool& flag, bool nested) : flag_(flag), saved_(flag) { flag_ = nested; }
  ~NestedScope() { flag_ = saved_; }

 private:
  bool& flag_;
  bool saved_;
};

}  // namespace

LruList::~LruList() = default;

void LruList::init_list(List& l) {
  list_init(&l.active);
  list_init(&l.inactive);
  l.rotation = &l.inactive;
  l.n_active = 0;
  l.n_inactive = 0;
  l.free = 0;
  l.lock.store(0, std::memory_order_relaxed);
}

Status LruList::init(bool percpu, uint32_t entries, uint32_t ncpus, const LruCallbacks& cb) {
  if (entries == 0 || ncpus == 0 || ncpus > 0xffff || !cb.del_from_htab || !cb.free_node)
    return make_error(EINVAL, "LRU list: bad parameters (entries %u, cpus %u)", entries, ncpus);
  cb_ = cb;
  percpu_ = percpu;
  entries_ = entries;
  ncpus_ = ncpus;
  if (percpu) {
    lists_.reset(new (std::nothrow) List[ncpus]);
    if (!lists_) return make_error(ENOMEM, "LRU list: no memory for %u per-CPU lists", ncpus);
    for (uint32_t s = 0; s < ncpus; s++) {
      init_list(lists_[s]);
      lists_[s].free = entries / ncpus + (s < entries % ncpus ? 1 : 0);
    }
    nr_scans_ = kPercpuNrScans;
    target_free_ = kPercpuFreeTarget;
    return Status::Ok();
  }
  local_.reset(new (std::nothrow) Local[ncpus]);
  if (!local_) return make_error(ENOMEM, "LRU list: no memory for %u local lists", ncpus);
  for (uint32_t s = 0; s < ncpus; s++) {
    Local& loc = local_[s];
    list_init(&loc.pending);
    loc.free = 0;
    loc.returned.store(0, std::memory_order_relaxed);
    loc.next_steal.store(s, std::memory_order_relaxed);
    loc.lock.store(0, std::memory_order_relaxed);
  }
  init_list(global_);
  global_.free = entries;
  nr_scans_ = kLocalNrScans;
  target_free_ = std::clamp(entries / ncpus / 2, 1u, kLocalFreeTarget);
  return Status::Ok();
}

uint64_t LruList::bytes() const {
  return static_cast<uint64_t>(ncpus_) * (percpu_ ? sizeof(List) : sizeof(Local));
}

void LruList::release(Evicted& ev) {
  if (!ev.head) return;
  if (cb_.free_nodes) {
    cb_.free_nodes(cb_.arg, ev.head);
  } else {
    for (LruNode* n = ev.head; n;) {
      LruNode* next = as_node(n->next);
      cb_.free_node(cb_.arg, n);
      n = next;
    }
  }
  ev.head = nullptr;
}

// ---- List operations (under the list's lock) ----

void LruList::move(List& l, LruNode* n, LruNodeType to) {
  LruNodeType from = type_of(n);
  USERBPF_DEBUG_ASSERT(from == LruNodeType::kActive || from == LruNodeType::kInactive);
  if (from != to) {
    if (from == LruNodeType::kActive) {
      l.n_active--;
      l.n_inactive++;
    } else {
      l.n_inactive--;
      l.n_active++;
    }
    set_type(n, to);
  }
  clear_ref(n);
  // The rotation hand must not follow its node onto another list.
  if (l.rotation == n) l.rotation = n->prev;
  list_del(n);
  list_add_head(to == LruNodeType::kActive ? &l.active : &l.inactive, n);
}

void LruList::move_in(List& l, LruNode* n, LruNodeType to) {
  if (to == LruNodeType::kActive)
    l.n_active++;
  else
    l.n_inactive++;
  set_type(n, to);
  clear_ref(n);
  // pending_free stays: a push_free that failed to lock may set it at any
  // moment, and clearing it here would lose the node (the kernel's move_in
  // clears it).
  list_add_head(to == LruNodeType::kActive ? &l.active : &l.inactive, n);
}

void LruList::remove(List& l, LruNode* n) {
  USERBPF_DEBUG_ASSERT(type_of(n) == LruNodeType::kActive || type_of(n) == LruNodeType::kInactive);
  if (type_of(n) == LruNodeType::kActive)
    l.n_active--;
  else
    l.n_inactive--;
  if (l.rotation == n) l.rotation = n->prev;
  list_del(n);
  set_type(n, LruNodeType::kFree);
}

void LruList::evict(List& l, LruNode* n, uint32_t* free, Evicted& ev) {
  remove(l, n);
  ev.push(n);
  (*free)++;
}

uint32_t LruList::del_batch(LruNode** nodes, uint32_t n) {
  if (n == 0) return 0;
  if (cb_.del_batch) return cb_.del_batch(cb_.arg, nodes, n);
  uint32_t k = 0;
  for (uint32_t j = 0; j < n; j++)
    if (del(nodes[j])) nodes[k++] = nodes[j];
  return k;
}

// From the active tail towards its head, at most nr_scans nodes and never
// past the node that was first when we started: referenced nodes get another
// round on the active list, the others go to the inactive head.
void LruList::rotate_active(List& l) {
  LruLink* head = &l.active;
  if (list_empty(head)) return;
  LruLink* first = head->next;
  uint32_t i = 0;
  for (LruLink* cur = head->prev; cur != head;) {
    LruLink* older_done = cur->prev;
    LruNode* n = as_node(cur);
    move(l, n, is_ref(n) ? LruNodeType::kActive : LruNodeType::kInactive);
    if (++i == nr_scans_ || cur == first) break;
    cur = older_done;
  }
}

// The hand sweeps the inactive list from its tail towards its head, wrapping
// around, nr_scans nodes per call: referenced nodes go to the active head,
// the others stay where they are for shrink to find.
void LruList::rotate_inactive(List& l) {
  LruLink* head = &l.inactive;
  if (list_empty(head)) return;
  // Stop once the sweep is back where it started.
  LruLink* last = l.rotation->next;
  if (last == head) last = last->next;
  LruLink* cur = l.rotation;
  LruLink* next = head;
  for (uint32_t i = 0; i < nr_scans_;) {
    if (cur == head) {
      cur = cur->prev;
      continue;
    }
    LruNode* n = as_node(cur);
    next = cur->prev;
    if (is_ref(n)) move(l, n, LruNodeType::kActive);
    if (cur == last) break;
    cur = next;
    i++;
  }
  l.rotation = next;
}

// From the inactive tail (the oldest): referenced nodes move to the active
// head, unreferenced ones are evicted (their entries added to *free) until
// target are or nr_scans nodes were looked at. The candidates go to
// del_from_htab in batches (del_batch), each no larger than what is still
// missing from target: the nodes looked at and the ones evicted are those of
// one del_from_htab after the other, only the order of the calls changes.
uint32_t LruList::shrink_inactive(List& l, uint32_t target, uint32_t* free, Evicted& ev) {
  LruLink* head = &l.inactive;
  LruLink* cur = head->prev;
  uint32_t freed = 0;
  uint32_t i = 0;
  const uint32_t scans = nr_scans_;
  LruNode* batch[kDelBatch];
  while (freed < target && i < scans && cur != head) {
    // Candidates for this batch: at most what target still misses.
    uint32_t m = 0;
    uint32_t room = std::min(target - freed, kDelBatch);
    while (i < scans && cur != head) {
      LruLink* older = cur->prev;
      LruNode* n = as_node(cur);
      i++;
      if (is_pending_free(n)) [[unlikely]] {
        evict(l, n, free, ev);
        freed++;
        room = std::min(target - freed, kDelBatch);
      } else if (is_ref(n)) {
        move(l, n, LruNodeType::kActive);
      } else {
        batch[m++] = n;
      }
      cur = older;
      if (m >= room) break;
    }
    // evict() for each, knowing they are inactive; the counts once.
    const uint32_t k = del_batch(batch, m);
    for (uint32_t j = 0; j < k; j++) {
      LruNode* n = batch[j];
      USERBPF_DEBUG_ASSERT(type_of(n) == LruNodeType::kInactive);
      if (l.rotation == n) l.rotation = n->prev;
      list_del(n);
      set_type(n, LruNodeType::kFree);
      ev.push(n);
    }
    l.n_inactive -= k;
    *free += k;
    freed += k;
  }
  return freed;
}

// shrink_inactive, and if that freed nothing, the oldest node that can be
// unlinked at all (inactive list first, else active), referenced or not.
uint32_t LruList::shrink(List& l, uint32_t target, uint32_t* free, Evicted& ev) {
  uint32_t freed = shrink_inactive(l, target, free, ev);
  if (freed) return freed;
  LruLink* head = list_empty(&l.inactive) ? &l.active : &l.inactive;
  for (LruLink* cur = head->prev; cur != head; cur = cur->prev) {
    LruNode* n = as_node(cur);
    if (is_pending_free(n) || del(n)) {
      evict(l, n, free, ev);
      return 1;
    }
  }
  return 0;
}

// ---- Common mode ----

// Oldest first: referenced nodes go to the active head, nodes a failed
// push_free flagged are freed; the others keep their order and go to the
// inactive head in one splice (as if moved there oldest first).
void LruList::flush_pending(Local& loc, Evicted& ev) {
  LruLink* head = &loc.pending;
  uint32_t n_inactive = 0;
  for (LruLink* cur = head->prev; cur != head;) {
    LruLink* older_done = cur->prev;
    LruNode* n = as_node(cur);
    if (is_pending_free(n)) {
      list_del(cur);
      set_type(n, LruNodeType::kFree);
      global_.free++;
      ev.push(n);
    } else if (is_ref(n)) {
      list_del(cur);
      move_in(global_, n, LruNodeType::kActive);
    } else {
      set_type(n, LruNodeType::kInactive);
      n_inactive++;
    }
    cur = older_done;
  }
  if (n_inactive) {
    LruLink* to = &global_.inactive;
    head->prev->next = to->next;
    to->next->prev = head->prev;
    to->next = head->next;
    head->next->prev = to;
    global_.n_inactive += n_inactive;
  }
  list_init(head);
}

void LruList::refill_local(Local& loc, bool nested, Evicted& ev) {
  if (lock(global_.lock, nested) != 0) return;
  flush_pending(loc, ev);
  rotate(global_);
  uint32_t take = std::min(global_.free, target_free_);
  global_.free -= take;
  loc.free += take;
  if (take < target_free_) shrink(global_, target_free_ - take, &loc.free, ev);
  unlock(global_.lock);
}

bool LruList::steal_pending(Local& v, Evicted& ev) {
  LruLink* head = &v.pending;
  for (int force = 0; force < 2; force++) {
    for (LruLink* cur = head->prev; cur != head; cur = cur->prev) {
      LruNode* n = as_node(cur);
      if ((force || !is_ref(n)) && (is_pending_free(n) || del(n))) {
        list_del(cur);
        set_type(n, LruNodeType::kFree);
        ev.push(n);
        return true;
      }
    }
  }
  return false;
}

// Under loc.lock, holding a free entry but no node (the map had no element
// ready): evicts one more element, from the global list or else loc's own
// pending list, and hands over its memory; its entry joins loc's.
LruNode* LruList::evict_for_reuse(Local& loc, bool nested, Evicted& ev) {
  if (!ev.head && lock(global_.lock, nested) == 0) {
    shrink(global_, 1, &loc.free, ev);
    unlock(global_.lock);
  }
  if (!ev.head && steal_pending(loc, ev)) loc.free++;
  return ev.pop();
}

LruNode* LruList::common_pop_free(uint32_t s, LruNode* fresh, bool nested) {
  if (lock(local_[s].lock, nested) != 0) return nullptr;
  return common_pop_free_locked(s, fresh, nested);
}

LruNode* LruList::common_pop_free_locked(uint32_t s, LruNode* fresh, bool nested) {
  NestedScope scope(t_nested, nested);  // for del_from_htab
  Local& loc = local_[s];
  Evicted ev;
  LruNode* node = nullptr;
  bool got = take_local(loc);
  if (!got) {
    refill_local(loc, nested, ev);
    got = take_local(loc);
  }
  if (got) {
    node = fresh ? fresh : evict_for_reuse(loc, nested, ev);
    if (node)
      add_pending(loc, s, node);
    else
      loc.free++;
  }
  unlock(loc.lock);
  release(ev);
  if (node) return node;

  // Nothing left globally: take a free entry, else the oldest pending
  // element, from each slot's Local in turn (our own included). Without a
  // fresh node only an eviction will do: it brings memory along.
  uint32_t first = loc.next_steal.load(std::memory_order_relaxed);
  uint32_t v = first;
  do {
    Local& victim = local_[v];
    if (lock(victim.lock, nested) == 0) {
      got = (fresh && take_local(victim)) || steal_pending(victim, ev);
      unlock(victim.lock);
    }
    v = v + 1 == ncpus_ ? 0 : v + 1;
  } while (!got && v != first);
  loc.next_steal.store(v, std::memory_order_relaxed);
  node = got ? (fresh ? fresh : ev.pop()) : nullptr;
  release(ev);
  if (!node) return nullptr;
  if (lock(loc.lock, nested) != 0) {
    // Busy now (nested try-lock): the entry stays with this slot, an
    // evicted node goes the way of all evicted nodes.
    loc.returned.fetch_add(1, std::memory_order_relaxed);
    if (node != fresh) cb_.free_node(cb_.arg, node);
    return nullptr;
  }
  add_pending(loc, s, node);
  unlock(loc.lock);
  return node;
}

void LruList::common_push_free(LruNode* node, bool nested) {
  LruNodeType t = type_of(node);
  USERBPF_DEBUG_ASSERT(t != LruNodeType::kFree);
  if (t == LruNodeType::kPending) {
    // A flush may move the node to the global list meanwhile (never back):
    // check again under the lock.
    uint32_t s = node->cpu;
    Local& loc = local_[s];
    if (lock(loc.lock, nested) != 0) {
      node->pending_free.store(1, std::memory_order_release);
      return;
    }
    if (type_of(node) == LruNodeType::kPending) {
      list_del(node);
      set_type(node, LruNodeType::kFree);
      loc.free++;
      unlock(loc.lock);
      cb_.free_node(cb_.arg, node);
      return;
    }
    unlock(loc.lock);
  }
  if (lock(global_.lock, nested) != 0) {
    node->pending_free.store(1, std::memory_order_release);
    return;
  }
  remove(global_, node);
  global_.free++;
  unlock(global_.lock);
  cb_.free_node(cb_.arg, node);
}

// ---- Per-CPU mode ----

LruNode* LruList::percpu_pop_free(uint32_t s, LruNode* fresh, bool nested) {
  NestedScope scope(t_nested, nested);  // for del_from_htab
  List& l = lists_[s];
  Evicted ev;
  if (lock(l.lock, nested) != 0) return nullptr;
  rotate(l);
  if (l.free == 0) shrink(l, kPercpuFreeTarget, &l.free, ev);
  // No element ready: evict one even if entries are free, for its memory.
  if (!fresh && !ev.head) shrink(l, 1, &l.free, ev);
  LruNode* node = nullptr;
  if (l.free != 0) node = fresh ? fresh : ev.pop();
  if (node) {
    l.free--;
    init_node(node, s);
    move_in(l, node, LruNodeType::kInactive);
  }
  unlock(l.lock);
  release(ev);
  return node;
}

void LruList::percpu_push_free(LruNode* node, bool nested) {
  USERBPF_DEBUG_ASSERT(type_of(node) != LruNodeType::kFree);
  uint32_t s = node->cpu;
  List& l = lists_[s];
  if (lock(l.lock, nested) != 0) {
    node->pending_free.store(1, std::memory_order_release);
    return;
  }
  remove(l, node);
  l.free++;
  unlock(l.lock);
  cb_.free_node(cb_.arg, node);
}

// ---- Entry points ----

LruNode* LruList::pop_free_slow(int slot, LruNode* fresh) {
  USERBPF_DEBUG_ASSERT(slot >= 0);
  const bool nested = map_lock_thread_busy();
  const uint32_t s = slot_index(slot);
  return percpu_ ? percpu_pop_free(s, fresh, nested) : common_pop_free(s, fresh, nested);
}

void LruList::push_free(LruNode* node) {
  bool nested = map_lock_thread_busy();
  if (percpu_)
    percpu_push_free(node, nested);
  else
    common_push_free(node, nested);
}

// ---- Introspection (host, at rest) ----

uint32_t LruList::global_free() const {
  return percpu_ ? 0 : global_.free;
}

uint32_t LruList::local_free(uint32_t slot) const {
  if (slot >= ncpus_) return 0;
  if (percpu_) return lists_[slot].free;
  return local_[slot].free + local_[slot].returned.load(std::memory_order_relaxed);
}

bool LruList::check(LruCounts* counts, const std::function<void(LruNode*)>& visit,
                    std::string* why) const {
  LruCounts c;
  std::set<const LruLink*> seen;
  auto fail = [&](const char* what, uint32_t where) {
    if (why) *why = std::string(what) + " (list " + std::to_string(where) + ")";
    return false;
  };
  // Walks one list: links both ways, node types and cpu fields; returns the
  // node count or -1.
  auto walk = [&](const LruLink* head, LruNodeType type, uint32_t where, bool check_cpu,
                  uint64_t* n) {
    uint64_t cnt = 0;
    for (const LruLink* cur = head->next; cur != head; cur = cur->next) {
      if (cur->next->prev != cur || cur->prev->next != cur) return fail("broken links", where);
      if (!seen.insert(cur).second) return fail("node on two lists or twice", where);
      auto* node = static_cast<const LruNode*>(cur);
      if (type_of(node) != type) return fail("node type does not match its list", where);
      if (check_cpu && node->cpu != where) return fail("node cpu does not match its list", where);
      if (is_pending_free(node)) c.flagged++;
      if (visit) visit(const_cast<LruNode*>(node));
      cnt++;
    }
    *n += cnt;
    return true;
  };
  auto walk_list = [&](const List& l, uint32_t where, bool check_cpu) {
    uint64_t a = 0, i = 0;
    if (!walk(&l.active, LruNodeType::kActive, where, check_cpu, &a)) return false;
    if (!walk(&l.inactive, LruNodeType::kInactive, where, check_cpu, &i)) return false;
    if (a != l.n_active || i != l.n_inactive) return fail("active/inactive counts wrong", where);
    if (l.rotation != &l.inactive && !seen.count(l.rotation))
      return fail("rotation hand off the inactive list", where);
    if (l.rotation != &l.inactive &&
        type_of(static_cast<const LruNode*>(l.rotation)) != LruNodeType::kInactive)
      return fail("rotation hand off the inactive list", where);
    c.active += a;
    c.inactive += i;
    c.free += l.free;
    return true;
  };
  if (percpu_) {
    for (uint32_t s = 0; s < ncpus_; s++)
      if (!walk_list(lists_[s], s, true)) return false;
  } else {
    if (!walk_list(global_, ncpus_, false)) return false;
    for (uint32_t s = 0; s < ncpus_; s++) {
      if (!walk(&local_[s].pending, LruNodeType::kPending, s, true, &c.pending)) return false;
      c.free += local_[s].free + local_[s].returned.load(std::memory_order_relaxed);
    }
  }
  if (c.free + c.nodes() != entries_) return fail("free entries + nodes != entries", ncpus_);
  if (counts) *counts = c;
  return true;
}

}  // namespace userbpf::maps
