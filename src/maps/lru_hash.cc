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
//
// Chains run oldest first (LRU_HASH; the kernel and HASH link new elements
// at the head): an insert appends its element where its search for the key
// ended, at the chain's last link, and a replacement takes the old
// element's place in one store. The LRU evicts the oldest elements, so a
// victim mostly leads its chain and is unlinked from the bucket head, whose
// line eviction fetched ahead; linked at the head it was mostly last, and
// the walk to it waited for each element before it (the largest stall of
// eviction). Nothing observable depends on the order within a chain (a
// walk's order across buckets already differs from the kernel's).
//
// Speed (bench/progs/lru_hash_update.bpf.c: every insert evicts). The path
// runs at about 3 instructions per cycle, so what it executes is what
// counts: the update is one function per key size with the hash, the
// pool's and the LRU's fast paths inlined; eviction unlinks its victims a
// batch at a time, their buckets fetched first, and frees them as one chain;
// LRU maps keep no element count. 720 -> 500 instructions and 72 -> 58 ns
// per insert. Then 537 -> 432 instructions (callgrind: all of an insert's,
// its share of eviction included) and 58 -> about 45 ns: the LRU's locks
// record nothing per acquisition (untracked, lru_list.h), a batch of
// evictions keeps one record entry for all its bucket locks (MapLockSeq),
// chains run oldest first (above; the largest part), the update reads its
// bucket's head once, and the eviction loops keep their counts and the
// pool's fields in registers. Tried without effect: dropping the count or
// prefetching alone (before the instruction count fell, the stalls only
// moved), fetching each chain's first element ahead (insert; eviction
// before chains ran oldest first), fetching the pool's next free element
// ahead (nothing here, HASH inserts 4% slower). Measured, not done: the
// Local lock's exchange costs about 1.3 ns of an insert; an owner-only
// Local would need every other thread's push_free to defer its entry.
#include <cerrno>
#include <new>

#include "maps/hash_map_internal.h"
#include "maps/lru_list.h"
#include "maps/map_internal.h"

namespace userbpf::maps {
namespace {

// Unlinks e from bucket if the bucket still holds it (LruList's
// del_from_htab, under LRU locks; the kernel's htab_lru_map_delete_node).
// e may be an element an insert has bound but not linked yet, whose hash is
// still its previous life's: the bucket that hash names does not hold it,
// so it is left alone. nested (LruList::in_nested_op(): a signal handler,
// or an operation started under another map lock): only try-locks, since
// the holder of the bucket may be waiting for an LRU lock held here.
[[gnu::always_inline]] inline bool lru_unlink(HashMap* h, HashElem* e, uint32_t bucket,
                                              bool nested) {
  const int err = nested ? map_lock_try_acquire(h->buckets[bucket].lock, h, bucket & h->lock_mask)
                         : htab_lock_bucket(h, bucket);
  if (err) return false;
  const bool found = htab_unlink_if_linked(h, bucket, e);
  htab_unlock_bucket(h, bucket);
  if (!found) return false;
  if (map_fields(h)) htab_release_value(h, e);
  return true;
}

uint32_t lru_bucket_of(const HashMap* h, LruNode* node) {
  return htab_bucket_index(h, htab_lru_elem(h, node)->hash.load(std::memory_order_relaxed));
}

bool lru_del_from_htab(void* arg, LruNode* node) {
  auto* h = static_cast<HashMap*>(arg);
  return lru_unlink(h, htab_lru_elem(h, node), lru_bucket_of(h, node), LruList::in_nested_op());
}

// LruList::del_batch: the buckets are fetched for all nodes first (the
// LRU has just read the nodes, so their hashes are in the cache), each
// bucket lock's exchange then waits for no cache miss of its own.
uint32_t lru_del_batch(void* arg, LruNode** nodes, uint32_t n) {
  auto* h = static_cast<HashMap*>(arg);
  uint32_t buckets[LruList::kDelBatch];
  for (uint32_t j = 0; j < n; j++) {
    buckets[j] = lru_bucket_of(h, nodes[j]);
    __builtin_prefetch(&h->buckets[buckets[j]], 1);
  }
  uint32_t k = 0;
  // Not nested: the thread holds no bucket lock of this map (LRU locks are
  // untracked), so one record entry serves the whole batch. Values with
  // special fields go one lock at a time (lru_unlink): their release, after
  // each unlock, may take long, and the entry would keep the group busy.
  MapLockSeq seq;
  if (n && !LruList::in_nested_op() && !map_fields(h) && seq.begin(h, buckets[0] & h->lock_mask)) {
    for (uint32_t j = 0; j < n; j++) {
      std::atomic<uint32_t>& lock = h->buckets[buckets[j]].lock;
      seq.acquire(lock, buckets[j] & h->lock_mask);
      const bool found = htab_unlink_if_linked(h, buckets[j], htab_lru_elem(h, nodes[j]));
      MapLockSeq::release(lock);
      if (found) nodes[k++] = nodes[j];
    }
    seq.end();
    return k;
  }
  const bool nested = LruList::in_nested_op();
  for (uint32_t j = 0; j < n; j++)
    if (lru_unlink(h, htab_lru_elem(h, nodes[j]), buckets[j], nested)) nodes[k++] = nodes[j];
  return k;
}

// LruList::free_node: the node's element left the map for good; programs
// may still hold its value, so it is reused only after a grace period. The
// LRU runs inside the operation's section: its slot's cache takes it.
void lru_free_node(void* arg, LruNode* node) {
  auto* h = static_cast<HashMap*>(arg);
  h->pool.free_rcu(h->dom->slots.held_slot(), htab_lru_elem(h, node));
}

// LruList::free_nodes: the same for a chain of nodes.
void lru_free_nodes(void* arg, LruNode* chain) {
  auto* h = static_cast<HashMap*>(arg);
  const uint32_t off = h->lru_offset;
  h->pool.free_rcu_chain(h->dom->slots.held_slot(), htab_lru_elem(h, chain), [off](void* e) {
    // node->next, as an element (htab_lru_node/htab_lru_elem with the
    // offset in a register).
    LruLink* next = reinterpret_cast<LruLink*>(static_cast<char*>(e) + off)->next;
    return next ? static_cast<void*>(reinterpret_cast<char*>(next) - off) : nullptr;
  });
}

// The pool's element when it has one; the LRU's pop_free binds it to an
// entry (evicting to free one). With none ready (grace periods lag behind
// the churn) the LRU evicts one more element and hands its memory over at
// once: the kernel's reuse, which never fails an LRU insert for memory.
[[gnu::always_inline]] inline HashElem* lru_pop_elem(HashMap* h, int slot) {
  auto* fresh = static_cast<HashElem*>(h->pool.alloc(slot));
  LruNode* n = h->lru->pop_free(slot, fresh ? htab_lru_node(h, fresh) : nullptr);
  if (!n) [[unlikely]] {
    if (fresh) h->pool.free(fresh);  // nobody saw it: reused at once
    return nullptr;
  }
  // Counted before the element is rewritten (seq_cst: a reader that sees
  // the new bytes sees the count).
  if (!fresh) [[unlikely]]
    h->lru_reused.fetch_add(1, std::memory_order_seq_cst);
  return htab_lru_elem(h, n);
}

// Inside a section holding slot. op: BPF_ANY, BPF_NOEXIST or BPF_EXIST.
// kSize: the key size when known at compile time (4, 8), else 0.
// Kernel htab_lru_map_update_elem: the element is taken and filled before
// the bucket lock; a replacement is marked used (it inherits the old key's
// recency) and takes the place of the element it replaces (the kernel links
// it at the head, then unlinks the old one).
template <uint32_t kSize>
[[gnu::always_inline]] inline long lru_htab_update(HashMap* h, const void* key, const void* value,
                                                   uint64_t op, int slot) {
  const uint32_t hash = hash_key(key, kSize ? kSize : h->key_size, h->secret);
  const uint32_t bucket = htab_bucket_index(h, hash);
  HashBucket* const b = &h->buckets[bucket];
  // The bucket is fetched while the LRU works.
  __builtin_prefetch(b, 1);
  HashElem* e = lru_pop_elem(h, slot);
  if (!e) return -ENOMEM;
  htab_init_elem_sized<kSize>(h, e, key, value, hash);
  HashElem* old = nullptr;
  long err = map_lock_acquire(b->lock, h, bucket & h->lock_mask);
  if (!err) {
    // The search ends on old's link or on the chain's last one, where e
    // goes: chains run oldest first (see the top of this file).
    std::atomic<uintptr_t>* link = &b->head;
    uintptr_t p = link->load(std::memory_order_relaxed);
    if (!p) p = nulls_marker(bucket);
    while (!is_nulls(p)) {
      auto* c = reinterpret_cast<HashElem*>(p);
      if (c->hash.load(std::memory_order_relaxed) == hash &&
          equal_padded(elem_key(c), key, kSize ? kSize : h->key_size)) {
        old = c;
        break;
      }
      link = &c->next;
      p = link->load(std::memory_order_relaxed);
    }
    if (old && op == kBpfNoexist) {
      err = -EEXIST;
    } else if (!old && op == kBpfExist) {
      err = -ENOENT;
    } else {
      if (old) {
        // e takes old's place in one store: a reader finds one or the
        // other; one standing on old goes on from old's next.
        LruList::set_ref(htab_lru_node(h, e));
        p = old->next.load(std::memory_order_relaxed);
      }
      e->next.store(p, std::memory_order_relaxed);
      link->store(reinterpret_cast<uintptr_t>(e), std::memory_order_release);
    }
    map_lock_release(b->lock);
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
  Status st = h->lru->init(
      (h->attr.map_flags & kBpfFNoCommonLru) != 0, h->attr.max_entries, h->dom->slots.num_slots(),
      LruCallbacks{h, lru_del_from_htab, lru_free_node, lru_free_nodes, lru_del_batch});
  if (!st.ok())
    return make_error(st.error().code, "map %s: %s", h->attr.name.c_str(),
                      st.error().message.c_str());
  if (!map_charge(h, sizeof(LruList) + h->lru->bytes()))
    return make_error(ENOMEM, "map %s: its LRU lists exceed memory_limit %llu",
                      h->attr.name.c_str(), static_cast<unsigned long long>(h->attr.memory_limit));
  return Status::Ok();
}

HashElem* htab_lru_pop_elem(HashMap* h, int slot) {
  return lru_pop_elem(h, slot);
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
  // By value: the captures stay in registers on the path that does not retry.
  if (h->key_size == 4) [[likely]]
    return htab_update_in_section(h, [=](int slot, bool) __attribute__((always_inline)) {
      return lru_htab_update<4>(h, key, value, flags, slot);
    });
  if (h->key_size == 8)
    return htab_update_in_section(h, [=](int slot, bool) __attribute__((always_inline)) {
      return lru_htab_update<8>(h, key, value, flags, slot);
    });
  return htab_update_in_section(
      h, [=](int slot, bool) { return lru_htab_update<0>(h, key, value, flags, slot); });
}

}  // namespace userbpf::maps
