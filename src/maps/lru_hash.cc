// BPF_MAP_TYPE_LRU_HASH, and the LRU machinery both LRU hash types share
// (kernel/bpf/hashtab.c htab_lru_*): the LruList's callbacks into the table,
// taking an element for an insert (evicting when the map is full), and
// LRU_HASH's program lookup and update. LRU_PERCPU_HASH's values are handled
// in percpu_hash.cc; the ops tables sit with HASH's and PERCPU_HASH's. Design
// in hash_map_internal.h (the table) and lru_list.h (eviction).
//
// Contexts: htab_lru_pop_elem, the lookup and the update: any context
// (program, host, signal handler; -EBUSY/-ENOMEM where a re-entered lock
// cannot be had, never a wait for a lock this thread holds). The callbacks
// run inside LruList operations. htab_lru_init: host, at creation.
#include <cerrno>
#include <new>

#include "maps/hash_map_internal.h"
#include "maps/lru_list.h"
#include "maps/map_internal.h"

namespace userbpf::maps {
namespace {

// LruList::del_from_htab, under LRU locks (the kernel's
// htab_lru_map_delete_node): unlinks node's element if its bucket still
// holds it. The element may be one an insert has bound but not linked yet,
// whose hash is still its previous life's: the bucket that hash names does
// not hold it, so it is left alone. Only try-locks in a nested operation
// (a signal handler, or an operation started under another map lock): the
// holder of the bucket may be waiting for an LRU lock held here.
bool lru_del_from_htab(void* arg, LruNode* node) {
  auto* h = static_cast<HashMap*>(arg);
  HashElem* e = htab_lru_elem(h, node);
  const uint32_t bucket = htab_bucket_index(h, e->hash.load(std::memory_order_relaxed));
  const int err = LruList::in_nested_op()
                      ? map_lock_try_acquire(h->buckets[bucket].lock, h, bucket & h->lock_mask)
                      : htab_lock_bucket(h, bucket);
  if (err) return false;
  const bool found = htab_unlink_if_linked(h, bucket, e);
  htab_unlock_bucket(h, bucket);
  if (!found) return false;
  htab_release_value(h, e);
  h->count.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

// LruList::free_node: the node's element left the map for good; programs
// may still hold its value, so it is reused only after a grace period. The
// LRU runs inside the operation's section: its slot's cache takes it.
void lru_free_node(void* arg, LruNode* node) {
  auto* h = static_cast<HashMap*>(arg);
  h->pool.free_rcu(h->dom->slots.held_slot(), htab_lru_elem(h, node));
}

// Inside a section holding slot. op: BPF_ANY, BPF_NOEXIST or BPF_EXIST.
// Kernel htab_lru_map_update_elem: the element is taken and filled before
// the bucket lock; a replacement is marked used (it inherits the old key's
// recency) and links ahead of the element it replaces.
long lru_htab_update(HashMap* h, const void* key, const void* value, uint64_t op, int slot) {
  const uint32_t hash = htab_hash(h, key);
  HashElem* e = htab_lru_pop_elem(h, slot);
  if (!e) return -ENOMEM;
  htab_init_elem(h, e, key, value, hash);
  const uint32_t bucket = htab_bucket_index(h, hash);
  HashElem* old = nullptr;
  long err = htab_lock_bucket(h, bucket);
  if (!err) {
    old = htab_lookup_locked(h, bucket, key, hash);
    if (old && op == kBpfNoexist) {
      err = -EEXIST;
    } else if (!old && op == kBpfExist) {
      err = -ENOENT;
    } else {
      e->next.store(htab_first(h, bucket), std::memory_order_relaxed);
      h->buckets[bucket].head.store(reinterpret_cast<uintptr_t>(e), std::memory_order_release);
      if (old) {
        LruList::set_ref(htab_lru_node(h, e));
        htab_unlink_locked(h, bucket, old);
      }
    }
    htab_unlock_bucket(h, bucket);
  }
  if (err) {
    htab_free_elem(h, slot, e);
    return err;
  }
  if (old) htab_free_elem(h, slot, old);
  return 0;
}

[[gnu::noinline]] HashElem* lru_htab_find_generic(const HashMap* h, const void* key) {
  return htab_find<0>(h, key);
}

}  // namespace

Status htab_lru_init(HashMap* h) {
  h->lru.reset(new (std::nothrow) LruList());
  if (!h->lru) return make_error(ENOMEM, "map %s: no memory for its LRU", h->attr.name.c_str());
  Status st =
      h->lru->init((h->attr.map_flags & kBpfFNoCommonLru) != 0, h->attr.max_entries,
                   h->dom->slots.num_slots(), LruCallbacks{h, lru_del_from_htab, lru_free_node});
  if (!st.ok())
    return make_error(st.error().code, "map %s: %s", h->attr.name.c_str(),
                      st.error().message.c_str());
  if (!map_charge(h, sizeof(LruList) + h->lru->bytes()))
    return make_error(ENOMEM, "map %s: its LRU lists exceed memory_limit %llu",
                      h->attr.name.c_str(), static_cast<unsigned long long>(h->attr.memory_limit));
  return Status::Ok();
}

// The pool's element when it has one; the LRU's pop_free binds it to an
// entry (evicting to free one). With none ready (grace periods lag behind
// the churn) the LRU evicts one more element and hands its memory over at
// once: the kernel's reuse, which never fails an LRU insert for memory.
HashElem* htab_lru_pop_elem(HashMap* h, int slot) {
  auto* fresh = static_cast<HashElem*>(h->pool.alloc(slot));
  LruNode* n = h->lru->pop_free(slot, fresh ? htab_lru_node(h, fresh) : nullptr);
  if (!n) [[unlikely]] {
    if (fresh) h->pool.free(fresh);  // nobody saw it: reused at once
    return nullptr;
  }
  h->count.fetch_add(1, std::memory_order_relaxed);
  // Before the element is rewritten (seq_cst: a reader that sees the new
  // bytes sees the count).
  if (!fresh) [[unlikely]]
    h->lru_reused.fetch_add(1, std::memory_order_seq_cst);
  return htab_lru_elem(h, n);
}

// The kernel's htab_lru_map_lookup_elem: a program's lookup marks the
// element used (a plain store, only if not marked yet).
void* lru_htab_map_lookup_elem(Map* map, const void* key) {
  const HashMap* h = to_htab(map);
  HashElem* e;
  if (h->key_size == 4) [[likely]]
    e = htab_find<4>(h, key);
  else if (h->key_size == 8)
    e = htab_find<8>(h, key);
  else
    e = lru_htab_find_generic(h, key);
  if (!e) return nullptr;
  LruList::set_ref(htab_lru_node(h, e));
  return elem_value(h, e);
}

long lru_htab_map_update_elem(Map* map, const void* key, const void* value, uint64_t flags) {
  // Flags above BPF_EXIST are EINVAL, BPF_F_LOCK included: LRU values hold
  // no bpf_spin_lock.
  if (flags > kBpfExist) return -EINVAL;
  HashMap* h = to_htab(map);
  return htab_update_in_section(
      h, [&](int slot, bool) { return lru_htab_update(h, key, value, flags, slot); });
}

}  // namespace userbpf::maps
