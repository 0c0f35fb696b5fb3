// Tests of the LRU lists (maps/lru_list.h) on a small fake hash table wired
// the way the LRU hash maps use them: elements from an ElemPool, pop_free
// before the bucket lock, push_free after it, del_from_htab under the bucket
// lock, free_node -> ElemPool::free_rcu.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "maps/elem_pool.h"
#include "signal_kicker.h"
#include "maps/lru_list.h"
#include "maps/map_lock.h"
#include "mem/domain.h"

namespace userbpf::maps {
namespace {

struct FakeElem {
  LruNode node;                     // first: node <-> element by a cast
  std::atomic<uint32_t> key;        // 24
  std::atomic<uint32_t> pool_link;  // 28: the ElemPool's word while not live
  std::atomic<FakeElem*> next;      // bucket chain
  std::atomic<uint32_t> owned;      // 1 from the pool's alloc until free_node
  std::atomic<uint32_t> pinned;     // del_from_htab refuses it
};
static_assert(sizeof(FakeElem) == 48);
constexpr uint32_t kPoolLink = 28;

FakeElem* elem_of(LruNode* n) {
  return reinterpret_cast<FakeElem*>(n);
}

constexpr uint32_t kBuckets = 64;

// A hash table of u32 keys with the LRU hash map's update/delete/evict paths.
// batched: the LRU also gets del_batch and free_nodes, as the LRU hash maps
// give it (each calls the one-node callback for every node, in order).
class FakeTable {
 public:
  FakeTable(bool percpu, uint32_t entries, uint32_t ncpus, uint64_t capacity,
            mem::RcuDomain* rcu = nullptr, bool batched = false) {
    Status st = pool.init(&owner, sizeof(FakeElem), kPoolLink, capacity, capacity);
    EXPECT_TRUE(st.ok());
    if (rcu) pool.set_rcu(rcu, mem::RcuFlavor::kNormal);
    LruCallbacks cb{this, &FakeTable::del_cb, &FakeTable::free_cb};
    if (batched) {
      cb.del_batch = &FakeTable::del_batch_cb;
      cb.free_nodes = &FakeTable::free_nodes_cb;
    }
    st = lru.init(percpu, entries, ncpus, cb);
    EXPECT_TRUE(st.ok());
  }

  // Insert or replace key from slot: 0, -ENOMEM (no entry could be had),
  // -EBUSY (bucket lock re-entered). With no element ready in the pool, the
  // LRU hands back an evicted one for immediate reuse.
  long update(int slot, uint32_t key, bool pin = false) {
    auto* fresh = static_cast<FakeElem*>(pool.alloc());
    if (fresh) {
      uint32_t zero = 0;
      if (!fresh->owned.compare_exchange_strong(zero, 1)) errors++;
    } else {
      pool_dry.fetch_add(1, std::memory_order_relaxed);
    }
    LruNode* n = lru.pop_free(slot, fresh ? &fresh->node : nullptr);
    if (!n) {
      if (fresh) {
        fresh->owned.store(0);
        pool.free(fresh);
      }
      return -ENOMEM;
    }
    FakeElem* e = elem_of(n);
    if (!fresh) {
      if (e->owned.load() != 1) errors++;
      reused.fetch_add(1);  // before the key changes (readers check)
    }
    e->key.store(key, std::memory_order_release);
    e->pinned.store(pin ? 1 : 0, std::memory_order_relaxed);
    uint32_t b = key % kBuckets;
    if (lock_bucket(b) != 0) {
      lru.push_free(&e->node);
      return -EBUSY;
    }
    if (on_locked) on_locked(this);
    FakeElem* old = find(b, key);
    e->next.store(heads[b].load(std::memory_order_relaxed), std::memory_order_relaxed);
    heads[b].store(e, std::memory_order_release);
    if (old) {
      LruList::set_ref(&e->node);
      unlink(b, old);
    }
    map_lock_release(locks[b]);
    if (old) lru.push_free(&old->node);
    return 0;
  }

  long remove(uint32_t key) {
    uint32_t b = key % kBuckets;
    if (lock_bucket(b) != 0) return -EBUSY;
    FakeElem* e = find(b, key);
    if (e) unlink(b, e);
    map_lock_release(locks[b]);
    if (!e) return -ENOENT;
    lru.push_free(&e->node);
    return 0;
  }

  // Lock-free, like a program's lookup; mark sets the ref bit.
  FakeElem* lookup(uint32_t key, bool mark = true) {
    FakeElem* e = find(key % kBuckets, key);
    if (e && mark) LruList::set_ref(&e->node);
    return e;
  }
  bool contains(uint32_t key) { return lookup(key, false) != nullptr; }

  // Every element linked in the table (host, at rest).
  std::vector<FakeElem*> elements() {
    std::vector<FakeElem*> out;
    for (uint32_t b = 0; b < kBuckets; b++)
      for (FakeElem* e = heads[b].load(); e; e = e->next.load()) out.push_back(e);
    return out;
  }

  Map owner;
  ElemPool pool;
  LruList lru;
  std::atomic<FakeElem*> heads[kBuckets] = {};
  std::atomic<uint32_t> locks[kBuckets] = {};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> evictions{0};
  std::atomic<uint64_t> pool_dry{0};  // updates that found no element ready
  std::atomic<uint64_t> reused{0};    // of those, how many reused one at once
  std::atomic<uint64_t> batches{0};   // del_batch calls (batched)
  std::atomic<uint32_t> max_batch{0};
  std::atomic<uint64_t> bad_batches{0};  // empty or above LruList::kDelBatch
  // Called by del_from_htab before it locks the bucket, and by update with
  // the bucket locked.
  void (*on_del)(FakeTable*, FakeElem*) = nullptr;
  void (*on_locked)(FakeTable*) = nullptr;

 private:
  // A signal handler that interrupted a lock holder only try-locks: it must
  // not spin on a lock whose holder may be waiting for one of ours.
  int lock_bucket(uint32_t b) { return lock_bucket(b, map_lock_thread_busy()); }
  int lock_bucket(uint32_t b, bool nested) {
    return nested ? map_lock_try_acquire(locks[b], this, b) : map_lock_acquire(locks[b], this, b);
  }
  FakeElem* find(uint32_t b, uint32_t key) {
    for (FakeElem* e = heads[b].load(std::memory_order_acquire); e;
         e = e->next.load(std::memory_order_acquire))
      if (e->key.load(std::memory_order_relaxed) == key) return e;
    return nullptr;
  }
  // Under the bucket lock; e keeps its next link for readers standing on it.
  void unlink(uint32_t b, FakeElem* e) {
    FakeElem* next = e->next.load(std::memory_order_relaxed);
    FakeElem* cur = heads[b].load(std::memory_order_relaxed);
    if (cur == e) {
      heads[b].store(next, std::memory_order_release);
      return;
    }
    for (; cur; cur = cur->next.load(std::memory_order_relaxed)) {
      if (cur->next.load(std::memory_order_relaxed) == e) {
        cur->next.store(next, std::memory_order_release);
        return;
      }
    }
  }
  static bool del_cb(void* arg, LruNode* node) {
    auto* t = static_cast<FakeTable*>(arg);
    FakeElem* e = elem_of(node);
    if (t->on_del) t->on_del(t, e);
    if (e->pinned.load(std::memory_order_relaxed)) return false;
    uint32_t b = e->key.load(std::memory_order_relaxed) % kBuckets;
    if (t->lock_bucket(b, LruList::in_nested_op()) != 0) return false;
    bool found = false;
    for (FakeElem* c = t->heads[b].load(std::memory_order_relaxed); c;
         c = c->next.load(std::memory_order_relaxed))
      if (c == e) found = true;
    if (found) t->unlink(b, e);
    map_lock_release(t->locks[b]);
    if (found) t->evictions.fetch_add(1, std::memory_order_relaxed);
    return found;
  }
  static uint32_t del_batch_cb(void* arg, LruNode** nodes, uint32_t n) {
    auto* t = static_cast<FakeTable*>(arg);
    t->batches.fetch_add(1, std::memory_order_relaxed);
    if (n == 0 || n > LruList::kDelBatch) t->bad_batches.fetch_add(1, std::memory_order_relaxed);
    uint32_t seen = t->max_batch.load(std::memory_order_relaxed);
    while (n > seen && !t->max_batch.compare_exchange_weak(seen, n)) {
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < n; j++)
      if (del_cb(arg, nodes[j])) nodes[k++] = nodes[j];
    return k;
  }
  static void free_nodes_cb(void* arg, LruNode* chain) {
    for (LruNode* n = chain; n;) {
      auto* next = static_cast<LruNode*>(n->next);
      free_cb(arg, n);
      n = next;
    }
  }
  static void free_cb(void* arg, LruNode* node) {
    auto* t = static_cast<FakeTable*>(arg);
    FakeElem* e = elem_of(node);
    uint32_t one = 1;
    if (!e->owned.compare_exchange_strong(one, 0)) t->errors++;
    t->pool.free_rcu(e);
  }
};

// The LRU's lists match the table: check() passes, every node on a list is
// an element of the table or was given back with a push_free that could not
// lock (flagged), each element is owned, and nothing else is.
void expect_consistent(FakeTable& t, LruCounts* out = nullptr) {
  LruCounts c;
  std::string why;
  std::set<FakeElem*> on_lists, flagged;
  ASSERT_TRUE(t.lru.check(
      &c,
      [&](LruNode* n) {
        on_lists.insert(elem_of(n));
        if (n->pending_free.load()) flagged.insert(elem_of(n));
      },
      &why))
      << why;
  std::set<FakeElem*> in_table;
  std::set<uint32_t> keys;
  for (FakeElem* e : t.elements()) {
    EXPECT_TRUE(in_table.insert(e).second);
    EXPECT_TRUE(keys.insert(e->key.load()).second) << "key " << e->key.load() << " twice";
    EXPECT_EQ(e->owned.load(), 1u);
  }
  for (FakeElem* e : on_lists) {
    EXPECT_EQ(e->owned.load(), 1u);
    EXPECT_NE(in_table.count(e) != 0, flagged.count(e) != 0)
        << "a node must be in the table or flagged, not both or neither: key " << e->key.load()
        << " type " << int(e->node.type.load()) << " cpu " << e->node.cpu << " key in table "
        << t.contains(e->key.load());
  }
  for (FakeElem* e : in_table) EXPECT_TRUE(on_lists.count(e)) << "element missing from the LRU";
  EXPECT_EQ(c.flagged, flagged.size());
  EXPECT_EQ(t.errors.load(), 0u);
  if (out) *out = c;
}

// Fills t from slot with keys [first, first + n).
void fill(FakeTable& t, int slot, uint32_t first, uint32_t n, std::vector<uint32_t>* order) {
  for (uint32_t k = first; k < first + n; k++) {
    ASSERT_EQ(t.update(slot, k), 0) << k;
    if (order) order->push_back(k);
  }
}

// Keys of order not in the table must be exactly the oldest untouched ones.
void expect_oldest_untouched_evicted(FakeTable& t, const std::vector<uint32_t>& order,
                                     const std::set<uint32_t>& touched, size_t* evicted) {
  std::vector<uint32_t> missing, expected;
  for (uint32_t k : order)
    if (!t.contains(k)) missing.push_back(k);
  for (uint32_t k : order)
    if (!touched.count(k) && expected.size() < missing.size()) expected.push_back(k);
  EXPECT_EQ(missing, expected);
  for (uint32_t k : touched) EXPECT_TRUE(t.contains(k)) << "touched key " << k << " evicted";
  *evicted = missing.size();
}

TEST(LruList, InitChecksParameters) {
  LruList l;
  LruCallbacks cb{nullptr, [](void*, LruNode*) { return true; }, [](void*, LruNode*) {}};
  EXPECT_EQ(l.init(false, 0, 4, cb).error().code, EINVAL);
  LruList l2;
  EXPECT_EQ(l2.init(false, 16, 0, cb).error().code, EINVAL);
  LruList l3;
  ASSERT_TRUE(l3.init(false, 1000, 4, cb).ok());
  EXPECT_EQ(l3.target_free(), 125u);  // clamp(1000 / 4 / 2, 1, 128)
  EXPECT_EQ(l3.global_free(), 1000u);
  LruList l4;
  ASSERT_TRUE(l4.init(true, 10, 4, cb).ok());
  EXPECT_EQ(l4.local_free(0) + l4.local_free(1) + l4.local_free(2) + l4.local_free(3), 10u);
  EXPECT_EQ(l4.local_free(0), 3u);
  EXPECT_EQ(l4.local_free(3), 2u);
}

TEST(LruList, CommonEvictsOldestUntouchedFirst) {
  constexpr uint32_t kEntries = 256;
  FakeTable t(false, kEntries, 4, kEntries + 16);
  std::vector<uint32_t> order;
  fill(t, 0, 0, kEntries, &order);
  for (uint32_t k = 0; k < kEntries; k++) ASSERT_TRUE(t.contains(k));
  EXPECT_EQ(t.evictions.load(), 0u);
  std::set<uint32_t> touched;
  for (uint32_t k = 0; k < 128; k += 4) {
    touched.insert(k);
    ASSERT_NE(t.lookup(k), nullptr);
  }
  size_t evicted = 0;
  for (uint32_t k = kEntries; k < kEntries + 100; k++) {
    ASSERT_EQ(t.update(0, k), 0);
    order.push_back(k);
    expect_oldest_untouched_evicted(t, order, touched, &evicted);
    ASSERT_FALSE(HasFailure()) << "after inserting " << k;
  }
  EXPECT_GE(evicted, 100u);
  EXPECT_EQ(evicted, t.evictions.load());
  // Batch eviction: at most one batch ahead of need.
  EXPECT_LE(evicted, 100u + t.lru.target_free());
  expect_consistent(t);
}

TEST(LruList, PercpuEvictsOldestUntouchedFirst) {
  constexpr uint32_t kEntries = 256;  // 64 per slot
  FakeTable t(true, kEntries, 4, kEntries + 16);
  std::vector<uint32_t> order;
  fill(t, 1, 0, 64, &order);
  EXPECT_EQ(t.lru.local_free(1), 0u);
  // No four touched nodes in a row: eviction scans 4 nodes at a time.
  std::set<uint32_t> touched = {0, 2, 10, 20, 21, 30};
  for (uint32_t k : touched) ASSERT_NE(t.lookup(k), nullptr);
  size_t evicted = 0;
  for (uint32_t k = 64; k < 64 + 40; k++) {
    ASSERT_EQ(t.update(1, k), 0);
    order.push_back(k);
    expect_oldest_untouched_evicted(t, order, touched, &evicted);
    ASSERT_FALSE(HasFailure()) << "after inserting " << k;
  }
  EXPECT_GE(evicted, 40u);
  EXPECT_LE(evicted, 40u + LruList::kPercpuFreeTarget);
  expect_consistent(t);
}

TEST(LruList, PercpuSlotsEvictOnlyTheirOwnElements) {
  FakeTable t(true, 256, 4, 256 + 16);
  fill(t, 1, 0, 64, nullptr);
  fill(t, 2, 1000, 200, nullptr);  // slot 2 cycles through its 64 entries
  for (uint32_t k = 0; k < 64; k++) EXPECT_TRUE(t.contains(k)) << k;
  uint32_t slot2 = 0;
  for (uint32_t k = 1000; k < 1200; k++) slot2 += t.contains(k);
  EXPECT_EQ(slot2, 64u);
  for (uint32_t k = 1200 - 64; k < 1200; k++) EXPECT_TRUE(t.contains(k)) << k;
  // Slots 0 and 3 still have all their entries.
  EXPECT_EQ(t.lru.local_free(0), 64u);
  EXPECT_EQ(t.lru.local_free(3), 64u);
  // A sleepable slot (>= N) uses normal slot (slot % N)'s list.
  ASSERT_EQ(t.update(4 + 2, 5000), 0);
  EXPECT_EQ(t.lru.local_free(0), 64u);
  for (uint32_t k = 0; k < 64; k++) EXPECT_TRUE(t.contains(k)) << k;
  EXPECT_FALSE(t.contains(1200 - 64));  // slot 2's oldest went
  expect_consistent(t);
}

TEST(LruList, PushFreeGivesTheEntryBack) {
  for (bool percpu : {false, true}) {
    SCOPED_TRACE(percpu ? "per-CPU" : "common");
    FakeTable t(percpu, 64, 2, 64 + 16);
    fill(t, 0, 0, percpu ? 32 : 64, nullptr);
    uint64_t before = t.evictions.load();
    for (uint32_t k = 0; k < 10; k++) ASSERT_EQ(t.remove(k), 0);
    EXPECT_EQ(t.remove(3), -ENOENT);
    LruCounts c;
    expect_consistent(t, &c);
    EXPECT_EQ(c.nodes(), (percpu ? 32u : 64u) - 10);
    EXPECT_EQ(c.free, 64u - c.nodes());
    // Per-CPU: the entries went back to slot 0's list, so new keys from slot
    // 0 need no eviction. (Common: a refill may still evict to make up its
    // batch of target_free, as the kernel's does.)
    for (uint32_t k = 100; k < 110; k++) ASSERT_EQ(t.update(0, k), 0);
    if (percpu) EXPECT_EQ(t.evictions.load(), before);
    // Replacing a key frees the old element's entry.
    ASSERT_EQ(t.update(0, 100), 0);
    expect_consistent(t, &c);
    EXPECT_EQ(c.nodes(), t.elements().size());
  }
}

TEST(LruList, DelFromHtabFailureSkipsTheNode) {
  // Common: the pinned oldest keys stay; the batch comes from the next ones.
  {
    FakeTable t(false, 64, 2, 64 + 16);  // target_free 16
    for (uint32_t k = 0; k < 64; k++) ASSERT_EQ(t.update(0, k, k < 3), 0);
    ASSERT_EQ(t.update(0, 64), 0);
    for (uint32_t k = 0; k < 3; k++) EXPECT_TRUE(t.contains(k));
    for (uint32_t k = 3; k < 3 + 16; k++) EXPECT_FALSE(t.contains(k)) << k;
    for (uint32_t k = 3 + 16; k <= 64; k++) EXPECT_TRUE(t.contains(k)) << k;
    expect_consistent(t);
  }
  // Per-CPU: 4 nodes scanned, 2 of them pinned.
  {
    FakeTable t(true, 64, 2, 64 + 16);
    for (uint32_t k = 0; k < 32; k++) ASSERT_EQ(t.update(0, k, k < 2), 0);
    ASSERT_EQ(t.update(0, 32), 0);
    EXPECT_TRUE(t.contains(0));
    EXPECT_TRUE(t.contains(1));
    EXPECT_FALSE(t.contains(2));
    EXPECT_FALSE(t.contains(3));
    EXPECT_TRUE(t.contains(4));
    expect_consistent(t);
  }
  // Nothing can be unlinked: pop_free fails, nothing leaks.
  for (bool percpu : {false, true}) {
    SCOPED_TRACE(percpu ? "per-CPU" : "common");
    FakeTable t(percpu, 32, 2, 32 + 16);
    uint32_t n = percpu ? 16 : 32;
    for (uint32_t k = 0; k < n; k++) ASSERT_EQ(t.update(0, k, true), 0);
    EXPECT_EQ(t.update(0, 1000), -ENOMEM);
    EXPECT_EQ(t.update(0, 1001), -ENOMEM);
    LruCounts c;
    expect_consistent(t, &c);
    EXPECT_EQ(c.nodes(), n);
    EXPECT_EQ(t.evictions.load(), 0u);
    // Unpinned, the oldest goes.
    t.lookup(0, false)->pinned.store(0);
    EXPECT_EQ(t.update(0, 1000), 0);
    EXPECT_FALSE(t.contains(0));
    expect_consistent(t);
  }
}

// Eviction hands its candidates to del_from_htab in batches of up to
// kDelBatch (del_batch), never more than the eviction still needs: the
// elements that leave are those of the kernel's one-by-one scan from the
// inactive tail, which stops once target_free are freed or nr_scans nodes
// were looked at, skipping the ones del_from_htab refuses. 256 entries on
// 2 slots: target_free 64, nr_scans 128; keys 0..255 are on the inactive
// list oldest first when key 256 needs an entry.
TEST(LruList, BatchedEvictionScansLikeTheKernel) {
  struct Case {
    const char* what;
    uint32_t pinned;  // keys [0, pinned) are refused
    uint32_t first_evicted, end_evicted;
    uint64_t batches;
  };
  const Case cases[] = {
      // 0..31 (27 go), 32..63 (32), then only the 5 still needed: 64..68.
      {"target reached in the third batch", 5, 5, 69, 3},
      // Four full batches, 70..127 go, and the scan stops at 128 nodes.
      {"scan limit before the target", 70, 70, 128, 4},
  };
  for (const Case& c : cases) {
    for (bool batched : {false, true}) {
      SCOPED_TRACE(std::string(c.what) + (batched ? ", del_batch" : ", one by one"));
      FakeTable t(false, 256, 2, 256 + 16, nullptr, batched);
      ASSERT_EQ(t.lru.target_free(), 64u);
      for (uint32_t k = 0; k < 256; k++) ASSERT_EQ(t.update(0, k, k < c.pinned), 0);
      ASSERT_EQ(t.evictions.load(), 0u);
      ASSERT_EQ(t.update(0, 256), 0);
      for (uint32_t k = 0; k <= 256; k++)
        EXPECT_EQ(t.contains(k), k < c.first_evicted || k >= c.end_evicted) << k;
      EXPECT_EQ(t.evictions.load(), c.end_evicted - c.first_evicted);
      EXPECT_EQ(t.batches.load(), batched ? c.batches : 0u);
      EXPECT_EQ(t.max_batch.load(), batched ? LruList::kDelBatch : 0u);
      EXPECT_EQ(t.bad_batches.load(), 0u);
      expect_consistent(t);
    }
  }
}

TEST(LruList, CommonStealsFreeEntriesThenPendingElements) {
  // 4 slots, 32 entries: target_free 4.
  FakeTable t(false, 32, 4, 32 + 16);
  ASSERT_EQ(t.lru.target_free(), 4u);
  ASSERT_EQ(t.update(1, 1000), 0);
  ASSERT_EQ(t.update(2, 2000), 0);
  ASSERT_EQ(t.update(3, 3000), 0);
  for (uint32_t s = 1; s <= 3; s++) EXPECT_EQ(t.lru.local_free(s), 3u);
  EXPECT_EQ(t.lru.global_free(), 20u);
  // Slot 0 takes the rest of the global list with elements that cannot be
  // evicted.
  for (uint32_t k = 0; k < 20; k++) ASSERT_EQ(t.update(0, k, true), 0);
  EXPECT_EQ(t.lru.global_free(), 0u);
  EXPECT_EQ(t.lru.local_free(0), 0u);
  // Now slot 0 lives off the other slots' free entries, evicting nothing...
  for (uint32_t k = 20; k < 29; k++) {
    uint32_t before = t.lru.local_free(1) + t.lru.local_free(2) + t.lru.local_free(3);
    ASSERT_EQ(t.update(0, k, true), 0) << k;
    EXPECT_EQ(t.lru.local_free(1) + t.lru.local_free(2) + t.lru.local_free(3), before - 1);
  }
  EXPECT_EQ(t.evictions.load(), 0u);
  // ...then off their pending elements, one per insert.
  for (uint32_t k = 29; k < 32; k++) {
    ASSERT_EQ(t.update(0, k, true), 0) << k;
    EXPECT_EQ(t.evictions.load(), k - 28);
  }
  EXPECT_FALSE(t.contains(1000));
  EXPECT_FALSE(t.contains(2000));
  EXPECT_FALSE(t.contains(3000));
  for (uint32_t k = 0; k < 32; k++) EXPECT_TRUE(t.contains(k));
  // Nothing is left to take.
  EXPECT_EQ(t.update(0, 32, true), -ENOMEM);
  expect_consistent(t);
}

// ---- Re-entry from a signal handler on the same thread ----

struct HandlerResults {
  FakeTable* t = nullptr;
  int slot = 0;         // the interrupted operation's slot
  int other_slot = 1;   // a slot nobody holds
  uint32_t victim = 0;  // a live key the handler deletes
  bool fired = false;
  bool same_slot_pop = true;
  long delete_rc = 1;
  long other_update_rc = 1;
  uint8_t victim_flagged = 0;
  uint32_t victim_owned = 0;
};
HandlerResults g_hr;

void reentry_handler(int) {
  HandlerResults& r = g_hr;
  FakeTable& t = *r.t;
  // The interrupted pop_free holds this slot's lock: fails, no deadlock.
  auto* e = static_cast<FakeElem*>(t.pool.alloc());
  if (e) {
    e->owned.store(1);
    r.same_slot_pop = t.lru.pop_free(r.slot, &e->node) != nullptr;
    if (!r.same_slot_pop) {
      e->owned.store(0);
      t.pool.free(e);
    }
  }
  // A delete whose push_free cannot take the list lock: flagged.
  FakeElem* v = t.lookup(r.victim, false);
  r.delete_rc = t.remove(r.victim);
  if (v) {
    r.victim_flagged = v->node.pending_free.load();
    r.victim_owned = v->owned.load();
  }
  // An update from another slot: only try-locks, whatever it returns.
  r.other_update_rc = t.update(r.other_slot, 777777);
}

void raise_once(FakeTable*, FakeElem*) {
  if (g_hr.fired) return;
  g_hr.fired = true;
  raise(SIGUSR1);
}

TEST(LruList, SignalHandlerReentryFailsCleanly) {
  struct sigaction sa{}, old{};
  sa.sa_handler = reentry_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  for (bool percpu : {false, true}) {
    SCOPED_TRACE(percpu ? "per-CPU" : "common");
    constexpr uint32_t kEntries = 256;
    FakeTable t(percpu, kEntries, 2, kEntries + 64);
    uint32_t n = percpu ? kEntries / 2 : kEntries;
    fill(t, 0, 0, n, nullptr);
    g_hr = HandlerResults{};
    g_hr.t = &t;
    g_hr.victim = n - 1;  // the newest: far from the eviction scan
    t.on_del = raise_once;
    ASSERT_EQ(t.update(0, 5000), 0);  // evicts, and the handler runs inside
    t.on_del = nullptr;
    ASSERT_TRUE(g_hr.fired);
    EXPECT_FALSE(g_hr.same_slot_pop);
    EXPECT_EQ(g_hr.delete_rc, 0);
    EXPECT_EQ(g_hr.victim_flagged, 1u);  // the list lock was ours
    EXPECT_EQ(g_hr.victim_owned, 1u);    // not freed yet
    EXPECT_FALSE(t.contains(g_hr.victim));
    // Common: slot 1 has no entries and the global lock is held: -ENOMEM.
    // Per-CPU: slot 1's own list is free.
    EXPECT_EQ(g_hr.other_update_rc, percpu ? 0 : -ENOMEM);
    LruCounts c;
    expect_consistent(t, &c);
    EXPECT_EQ(c.flagged, 1u);
    // Eviction sweeps the flagged node later and frees its entry.
    for (uint32_t k = 10000; k < 10000 + 2 * kEntries; k++) ASSERT_EQ(t.update(0, k), 0);
    expect_consistent(t, &c);
    EXPECT_EQ(c.flagged, 0u);
  }
  ASSERT_EQ(sigaction(SIGUSR1, &old, nullptr), 0);
}

// Thread B evicts under its LRU locks and waits for a bucket that thread A
// holds; a signal on A runs pop_free needing B's LRU locks. Spinning there
// would deadlock (B waits for A, whose handler waits for B): the nested
// operation only try-locks and fails.
struct CrossShared {
  FakeTable* t = nullptr;
  std::atomic<int> evicting_bucket{-1};  // published by B from del_from_htab
  std::atomic<bool> a_locked{false};
  std::atomic<bool> fired{false};
  bool pop_ok[2] = {true, true};
};
CrossShared g_cs;

void cross_handler(int) {
  FakeTable& t = *g_cs.t;
  for (int s = 0; s < 2; s++) {
    auto* e = static_cast<FakeElem*>(t.pool.alloc());
    if (!e) continue;
    e->owned.store(1);
    LruNode* n = t.lru.pop_free(s, &e->node);
    g_cs.pop_ok[s] = n != nullptr;
    if (n) {
      t.lru.push_free(n);  // never linked: give it straight back
    } else {
      e->owned.store(0);
      t.pool.free(e);
    }
  }
}

TEST(LruList, NestedOperationNeverWaitsForAnotherThread) {
  struct sigaction sa{}, old{};
  sa.sa_handler = cross_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  for (bool percpu : {false, true}) {
    SCOPED_TRACE(percpu ? "per-CPU" : "common");
    // 2 slots, 8 entries (common: target_free 2; per-CPU: 4 per slot).
    FakeTable t(percpu, 8, 2, 8 + 16);
    g_cs.t = &t;
    g_cs.evicting_bucket = -1;
    g_cs.a_locked = false;
    g_cs.fired = false;
    g_cs.pop_ok[0] = g_cs.pop_ok[1] = true;
    // Slot 0 keeps one free entry for A; slot 1 has none and the global
    // list none either, so B's next insert evicts.
    if (!percpu) ASSERT_EQ(t.update(0, 1000), 0);
    fill(t, 1, 0, percpu ? 4 : 6, nullptr);
    ASSERT_EQ(t.lru.local_free(1), 0u);
    ASSERT_EQ(t.lru.global_free(), 0u);
    t.on_del = [](FakeTable*, FakeElem* e) {
      if (g_cs.evicting_bucket.load() >= 0) return;
      g_cs.evicting_bucket = static_cast<int>(e->key.load() % kBuckets);
      while (!g_cs.a_locked.load()) std::this_thread::yield();
    };
    std::thread b([&] { EXPECT_EQ(t.update(1, 100), 0); });
    while (g_cs.evicting_bucket.load() < 0) std::this_thread::yield();
    uint32_t bucket = static_cast<uint32_t>(g_cs.evicting_bucket.load());
    t.on_locked = [](FakeTable*) {
      if (g_cs.fired.exchange(true)) return;
      g_cs.a_locked = true;
      raise(SIGUSR1);
    };
    // A: an insert into the bucket B is about to lock.
    EXPECT_EQ(t.update(0, kBuckets + bucket), 0);
    b.join();
    t.on_del = nullptr;
    t.on_locked = nullptr;
    ASSERT_TRUE(g_cs.fired.load());
    // Slot 0: per-CPU, its own list; common, the global list is B's, so it
    // stole from its own pending list (evicting key 1000).
    EXPECT_TRUE(g_cs.pop_ok[0]);
    if (!percpu) EXPECT_FALSE(t.contains(1000));
    EXPECT_FALSE(g_cs.pop_ok[1]);  // B holds slot 1's lock
    EXPECT_TRUE(t.contains(kBuckets + bucket));
    EXPECT_TRUE(t.contains(100));
    expect_consistent(t);
  }
  ASSERT_EQ(sigaction(SIGUSR1, &old, nullptr), 0);
}

// ---- Deferred reuse ----

TEST(LruList, EvictedElementIsNotReusedWhileAReaderHoldsItsSlot) {
  mem::MemDomainOptions o;
  o.num_slots = 1;
  mem::MemDomain dom(o);
  constexpr uint32_t kEntries = 64;
  constexpr uint32_t kSpare = 16;
  FakeTable t(false, kEntries, 1, kEntries + kSpare, &dom.rcu);
  for (uint32_t k = 0; k < kEntries; k++) {
    mem::SlotGuard g(dom.slots);
    ASSERT_EQ(t.update(g.slot(), k), 0);
  }
  {
    mem::SlotGuard g(dom.slots);  // a program run holding its slot
    FakeElem* e0 = t.lookup(0, false);
    ASSERT_NE(e0, nullptr);
    // Evict far more than the spare elements: the evicted ones wait for our
    // grace period, then the LRU reuses elements at once instead of failing.
    for (uint32_t k = 100; k < 100 + 4 * kEntries; k++) ASSERT_EQ(t.update(g.slot(), k), 0) << k;
    EXPECT_FALSE(t.contains(0));
    EXPECT_EQ(e0->owned.load(), 0u);  // given back to the pool...
    EXPECT_EQ(e0->key.load(), 0u);    // ...and not reused
    EXPECT_GT(t.reused.load(), 0u);
    EXPECT_EQ(t.reused.load(), t.pool_dry.load());
  }
  // Once the grace period is over the pool's elements are used again.
  t.pool.reclaim_host();
  uint64_t reused = t.reused.load();
  for (uint32_t k = 1000; k < 1000 + kSpare; k++) {
    mem::SlotGuard g(dom.slots);
    ASSERT_EQ(t.update(g.slot(), k), 0);
  }
  EXPECT_EQ(t.reused.load(), reused);
  expect_consistent(t);
}

// ---- Concurrency ----

double stress_seconds() {
  const char* e = std::getenv("USERBPF_STRESS_SECONDS");
  double s = e ? std::atof(e) : 0;
  return s > 0 ? s : 0.5;
}

constexpr uint32_t kStressSlots = 4;
constexpr uint32_t kStressEntries = 256;
constexpr uint32_t kStressKeys = 1024;

bool rc_ok(long rc) {
  return rc == 0 || rc == -ENOENT || rc == -ENOMEM || rc == -EBUSY;
}

// One "program": a few operations inside slot, checking that a looked-up
// element keeps its key until the slot is left, unless an element was reused
// at once meanwhile (pool dry: the kernel's behaviour, see lru_list.h).
void run_ops(FakeTable& t, int slot, uint64_t& x, std::atomic<uint64_t>& bad,
             std::atomic<uint64_t>& nomem) {
  auto next = [&x] {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return x;
  };
  uint32_t k = static_cast<uint32_t>(next() % kStressKeys);
  uint64_t reused = t.reused.load();
  FakeElem* e = t.lookup(k);
  auto changed = [&] { return e && e->key.load(std::memory_order_acquire) != k; };
  if (changed() && t.reused.load() == reused) bad++;
  for (int i = 0; i < 3; i++) {
    uint64_t r = next();
    uint32_t k2 = static_cast<uint32_t>((r >> 8) % kStressKeys);
    long rc = (r & 3) == 0 ? t.remove(k2) : t.update(slot, k2);
    if (!rc_ok(rc)) bad++;
    if (rc == -ENOMEM) nomem.fetch_add(1, std::memory_order_relaxed);
  }
  if (changed() && t.reused.load() == reused) bad++;
}

void print_stress(uint64_t runs, uint64_t handler_runs, FakeTable& t, uint64_t nomem) {
  std::printf(
      "[ stress  ] runs %llu handler runs %llu evictions %llu pool dry %llu reused at once %llu "
      "ENOMEM %llu\n",
      static_cast<unsigned long long>(runs), static_cast<unsigned long long>(handler_runs),
      static_cast<unsigned long long>(t.evictions.load()),
      static_cast<unsigned long long>(t.pool_dry.load()),
      static_cast<unsigned long long>(t.reused.load()), static_cast<unsigned long long>(nomem));
}

// At rest: the lists match the table, and every element the pool holds is
// either live (on the lists) or comes back from the pool, exactly once.
void expect_every_node_in_one_place(FakeTable& t) {
  expect_consistent(t);
  std::set<FakeElem*> live;
  ASSERT_TRUE(t.lru.check(nullptr, [&](LruNode* n) { live.insert(elem_of(n)); }, nullptr));
  t.pool.reclaim_host();
  EXPECT_EQ(t.pool.waiting(), 0u);
  std::set<FakeElem*> free_elems;
  while (auto* e = static_cast<FakeElem*>(t.pool.alloc())) {
    EXPECT_TRUE(free_elems.insert(e).second) << "the pool handed an element out twice";
    EXPECT_EQ(live.count(e), 0u) << "a live element was in the pool";
    EXPECT_EQ(e->owned.load(), 0u);
  }
  EXPECT_EQ(free_elems.size() + live.size(), t.pool.capacity());
  for (FakeElem* e : free_elems) t.pool.free(e);
}

class LruStress : public ::testing::TestWithParam<bool> {};

TEST_P(LruStress, EveryNodeEndsInExactlyOnePlace) {
  mem::MemDomainOptions o;
  o.num_slots = kStressSlots;
  mem::MemDomain dom(o);
  FakeTable t(GetParam(), kStressEntries, kStressSlots, kStressEntries * 8, &dom.rcu,
              /*batched=*/true);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, nomem{0}, runs{0};
  auto worker = [&](uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    while (!stop.load(std::memory_order_relaxed)) {
      mem::SlotGuard g(dom.slots);
      run_ops(t, g.slot(), x, bad, nomem);
      runs.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < kStressSlots; i++) threads.emplace_back(worker, i + 1);
  std::this_thread::sleep_for(std::chrono::duration<double>(stress_seconds()));
  stop = true;
  for (auto& th : threads) th.join();
  print_stress(runs.load(), 0, t, nomem.load());
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(t.evictions.load(), 0u);
  LruCounts c;
  expect_consistent(t, &c);
  EXPECT_EQ(c.flagged, 0u);  // no operation ran nested
  EXPECT_EQ(c.nodes(), t.elements().size());
  expect_every_node_in_one_place(t);
}

// The same with signals interrupting the workers at random points; the
// handlers run operations in a slot of their own and in the interrupted
// thread's slot (as a host call inside a program would).
struct SignalShared {
  FakeTable* t = nullptr;
  mem::MemDomain* dom = nullptr;
  std::atomic<uint64_t> bad{0}, nomem{0}, handler_runs{0};
};
SignalShared g_ss;

void stress_handler(int) {
  int saved_errno = errno;
  static thread_local uint64_t x = 0x1234567ull;
  x += reinterpret_cast<uintptr_t>(&x);
  int held = g_ss.dom->slots.held_slot();
  if (held >= 0) run_ops(*g_ss.t, held, x, g_ss.bad, g_ss.nomem);
  mem::SlotGuard g(g_ss.dom->slots, mem::EnterMode::kNoWait);
  if (g.ok()) {
    run_ops(*g_ss.t, g.slot(), x, g_ss.bad, g_ss.nomem);
    g_ss.handler_runs.fetch_add(1, std::memory_order_relaxed);
  }
  errno = saved_errno;
}

TEST_P(LruStress, SignalsInterruptingOperations) {
  mem::MemDomainOptions o;
  o.num_slots = kStressSlots;
  mem::MemDomain dom(o);
  FakeTable t(GetParam(), kStressEntries, kStressSlots, kStressEntries * 8, &dom.rcu,
              /*batched=*/true);
  g_ss.t = &t;
  g_ss.dom = &dom;
  g_ss.bad = g_ss.nomem = g_ss.handler_runs = 0;
  userbpf::test::ScopedSignal handler_scope(SIGUSR2, stress_handler);
  ASSERT_TRUE(handler_scope.ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> runs{0};
  auto worker = [&](uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    while (!stop.load(std::memory_order_relaxed)) {
      mem::SlotGuard g(dom.slots);
      run_ops(t, g.slot(), x, g_ss.bad, g_ss.nomem);
      runs.fetch_add(1, std::memory_order_relaxed);
    }
  };
  constexpr uint32_t kThreads = kStressSlots / 2;  // leave slots for handlers
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < kThreads; i++) threads.emplace_back(worker, i + 7);
  std::vector<pthread_t> ids;
  for (auto& th : threads) ids.push_back(th.native_handle());
  userbpf::test::SignalKicker kicker(ids, SIGUSR2, std::chrono::microseconds(20));
  std::this_thread::sleep_for(std::chrono::duration<double>(stress_seconds()));
  stop = true;
  kicker.stop();
  for (auto& th : threads) th.join();
  print_stress(runs.load(), g_ss.handler_runs.load(), t, g_ss.nomem.load());
  EXPECT_EQ(g_ss.bad.load(), 0u);
  EXPECT_GT(g_ss.handler_runs.load(), 0u);
  expect_consistent(t);
  expect_every_node_in_one_place(t);
}

INSTANTIATE_TEST_SUITE_P(Modes, LruStress, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Percpu") : std::string("Common");
                         });

}  // namespace
}  // namespace userbpf::maps
