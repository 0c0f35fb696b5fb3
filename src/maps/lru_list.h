// The eviction machinery of LRU_HASH and LRU_PERCPU_HASH: which element to
// evict when the map is full, least recently used first (the kernel's
// bpf_lru_list, on the CPU slots).
//
// Entries and nodes. Every element of an LRU map embeds an LruNode. The
// kernel's LRU owns the element memory: its free lists hold the elements
// themselves. Here the hash map keeps its element memory (an ElemPool) and
// the LRU keeps the policy: a "free entry" is a count, not a node. The map
// has max_entries entries; an element can be in the table only while it
// holds one. pop_free(slot, fresh) binds a node the map just allocated to a
// free entry, evicting the least recently used elements when there is none;
// push_free(node) (delete, replace) gives the entry back. So
//   free entries (every counter below) + nodes on the lists == entries
// whenever no operation is in flight, and live elements <= max_entries
// exactly as in the kernel, whatever memory the map keeps besides.
//
// Reuse of element memory (the decision). When a node leaves the lists for
// good (evicted through del_from_htab, or given back with push_free) the LRU
// calls free_node(node) after dropping its locks (free_nodes(chain) for the
// nodes one operation evicted), and the map frees the element with
// ElemPool::free_rcu: reused only after an RCU grace period, as
// for HASH (hash_map_internal.h). A program holding a looked-up value then
// keeps seeing its key and value until it returns (SPEC.md section 2); the
// kernel reuses LRU elements at once and only promises type-stable memory.
// Elements waiting for their grace period are memory beyond max_entries,
// taken from the pool's reservation (committed on demand).
// But LRU maps exist to absorb churn (a flow table under a flood evicts on
// every packet), and a grace period lasts as long as the slowest reader: a
// thread preempted while it holds a slot stalls it for its whole time off
// the CPU, during which other threads can evict thousands of elements; the
// pool then runs dry. An LRU map must not fail there (the kernel's never
// does), so when the map has no element ready (pool.alloc() returned
// nullptr) it calls pop_free(slot, nullptr): the LRU evicts one element
// more and hands its memory back at once. That is the kernel's behaviour
// (type-stable reuse) for as long as grace periods lag; the guarantee comes
// back by itself when they catch up. Elements already given to the pool are
// never taken back early by the LRU. What this does not cover: a map emptied
// by deletes while grace periods stall has nothing to evict, so inserts get
// -ENOMEM until a grace period ends (LruStress in lru_list_test.cc, on a
// machine with 3-5 runnable threads per core where grace periods took
// 10-40 ms: most updates of its 25%-delete mix failed). Covering it belongs
// to the pool (hand out its oldest waiting element when nothing else is
// left, for LRU maps). A map that wants the kernel's semantics exactly
// passes a free_node that calls ElemPool::free (immediate reuse); the LRU
// works the same either way.
// Rejected: deferred reuse without the fallback (LRU updates fail under
// churn); extra nodes on the LRU's own free lists (the map could hold more
// than max_entries elements, and the kernel's batch eviction would behave
// differently).
//
// Two modes (BPF_F_NO_COMMON_LRU picks the second):
//   common   one global List (active, inactive, free count) and, per slot, a
//            Local (pending list of nodes it handed out, free count). A slot
//            takes free entries from the global list target_free at a time
//            (clamp(entries / N / 2, 1, 128): the kernel's LOCAL_FREE_TARGET
//            batch), flushing its pending nodes into the global lists and
//            evicting as needed under the global lock; when the global list
//            has nothing left it steals from the slots' Locals in turn (their
//            free count, else their oldest unreferenced pending node).
//   per-CPU  one List per slot holding entries / N entries (the map rounds
//            max_entries up to a multiple of N, as the kernel does); a slot
//            only ever evicts its own elements, kPercpuFreeTarget at a time.
// "Slot" is the normal CPU slot the caller holds (cpu_slots.h; sleepable
// slots are folded onto normal ones). Nothing relies on holding it
// exclusively: every list is under its lock; the slot only picks the list.
//
// Aging (the kernel's second-chance scheme): lookups set the node's ref bit
// (set_ref: a plain store, only when not set). New nodes enter at the head
// of the pending list (common) or of the inactive list (per-CPU); a flush
// puts referenced pending nodes on the active list, others on the inactive
// one. Before taking free entries a List is rotated: if the inactive list is
// shorter than the active one, up to nr_scans nodes from the active tail go
// to the inactive head (referenced ones back to the active head instead);
// then up to nr_scans inactive nodes, from a hand that sweeps the list
// tail to head, move to the active head if referenced. Eviction (shrink)
// walks the inactive list from its tail (the oldest): referenced nodes move
// to the active head, the others are unlinked from the table by
// del_from_htab and their entries freed, up to the batch target or nr_scans
// nodes. If that freed nothing, the oldest node of the inactive list (else
// of the active list) whose del_from_htab succeeds goes, referenced or not.
// Every move clears the ref bit. The walk hands its candidates to the map
// kDelBatch at a time (del_batch, when the map gives one), never more than
// the target still needs: the same nodes go as with one del_from_htab after
// the other, and the map can fetch all their buckets before it takes the
// first bucket lock (each lock's exchange would otherwise wait for its own
// cache misses; the batch is on the stack, hence the bound).
//
// Locks (map_lock.h spin locks, untracked: one per Local, the global list's,
// one per per-CPU List). Order: Local -> global List -> bucket lock (taken
// by del_from_htab). Never two Locals at once (a steal drops its own Local
// first). An operation that starts while its thread already holds a map
// lock (map_lock_thread_busy(): a signal handler that interrupted a lock
// holder, or a caller under a bucket lock) only try-locks, so it can never
// wait for a lock its own thread holds, nor for one whose holder waits for
// a lock of ours; in_nested_op() tells del_from_htab to try-lock its bucket
// too. That rule is what keeps re-entry safe, so the locks need no (owner,
// group) record: a re-entered operation finds the word taken and fails as
// the record would have made it fail (the record cost ~20 instructions per
// lock round trip on the insert path). Failures are clean: pop_free
// returns nullptr; push_free that cannot lock marks the node pending_free
// and returns, and whoever next flushes, shrinks or steals past it frees its
// entry and calls free_node, without calling del_from_htab (the map has
// already unlinked the element). The flag is cleared only when a node is
// bound again (the kernel also clears it when a flush moves the node, which
// can lose a flag set meanwhile).
//
// Invariants (at rest):
//   free entries + |pending lists| + |active| + |inactive| == entries
//   a node is on at most one list; its type says which (kFree: on none)
//   n_active/n_inactive count the global (per-CPU: each) List's lists
//   a node's ref bit is cleared whenever it moves; node.cpu is the Local
//   whose pending list holds it (common) or the List it belongs to (per-CPU)
//   free_node(node) (or free_nodes with it in the chain) is called exactly
//   once per node that left the lists, except a node pop_free hands back
//   for immediate reuse
// Contexts: pop_free, push_free: any (program, host, signal handler); never
// allocate; wait only for LRU spin locks in lock order and for what
// del_from_htab waits for. set_ref: any, lock-free. init, check, the
// destructor: host.
// Cost: an insert is one Local lock round trip (pop_free's common case,
// inline below: a fresh node, common mode, no other map lock held, a free
// entry in the slot's Local); every target_free inserts a refill does the
// list work and the evictions under the global lock.
//
// Wiring into the hash map (the kernel's hashtab.c, htab_lru_*; done in
// lru_hash.cc and percpu_hash.cc, table side in hash_map_internal.h):
//   alloc   LruList::init(percpu = BPF_F_NO_COMMON_LRU, max_entries, N,
//           {htab, del_from_htab, free_node, free_nodes, del_batch});
//           max_entries rounded up to a multiple of N first in per-CPU
//           mode. Elements from the ElemPool, max_entries + N committed at
//           creation, the rest of the reservation (spares for elements
//           waiting for a grace period) committed on demand.
//   update  before locking the bucket (eviction takes bucket locks):
//           e = pool.alloc() (may be nullptr), n = pop_free(slot, e ? &e->lru
//           : nullptr); n == nullptr -> pool.free(e) if e, -ENOMEM (the
//           kernel's errno; -EBUSY would also do when nested). n != &e->lru
//           (e was nullptr): n's element was just unlinked by del_from_htab
//           and is reused at once: reinitialise it (bump seq) like a fresh
//           one. Fill key and value, lock the bucket (failure: push_free(n));
//           link n's element; if it replaced one, set_ref(n) and unlink the
//           old one (LRU_HASH: n's element takes its place); unlock; then push_free the element
//           that left the table (the old one, or n's on EEXIST/ENOENT/lock failure) after releasing
//           its fields. LRU_PERCPU_HASH writes an existing key's copies in place instead (set_ref
//           on it) and gives n back; its BPF_EXIST updates take no entry.
//   delete  unlink under the bucket lock, unlock, release the fields,
//           push_free(&e->lru). The same for lookup_and_delete and batch
//           deletes.
//   lookup  from programs (and the JIT's inlined lookup): set_ref(&e->lru);
//           host lookups do not (the kernel's lookup_elem_sys_only).
//   del_from_htab(arg, node): lock the node's bucket (map_lock_try_acquire when
//           LruList::in_nested_op(), else htab_lock_bucket), unlink the
//           element if it is still on the chain, release its fields; true
//           iff unlinked. Lock order: LRU locks -> bucket.
//   del_batch(arg, nodes, n): del_from_htab of each, the buckets of all
//           prefetched first, one lock record entry for all (MapLockSeq).
//   free_node(arg, node): pool.free_rcu(element); free_nodes(arg, chain):
//           pool.free_rcu_chain (one pass over the slot's cache).
//   count   none: elements never exceed max_entries through the LRU's
//           entries (no E2BIG), and at rest they are the nodes on the lists
//           less the flagged ones (check()). HashMap::count stays 0: a
//           shared counter costs two atomic read-modify-writes per insert
//           that evicts, for nothing the map needs (the kernel's per-CPU
//           elem_count only feeds statistics).
//   map free: nothing for the LRU (the pool unmaps the elements).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "maps/map_lock.h"

namespace userbpf::maps {

// Doubly linked, circular, with a sentinel head; the head's next is the most
// recent node, its prev the oldest.
struct LruLink {
  LruLink* prev;
  LruLink* next;
};

enum class LruNodeType : uint8_t {
  kFree = 0,  // on no list (not live, or live but being handed out)
  kPending,   // on a Local's pending list (common mode)
  kActive,
  kInactive,
};

// Embedded in each element. Fields are (re)initialised by pop_free; memory
// may start zeroed or hold a previous life.
struct LruNode : LruLink {
  uint16_t cpu;                       // Local (common) or List (per-CPU)
  std::atomic<LruNodeType> type;      // read without the lock by push_free
  std::atomic<uint8_t> ref;           // set by lookups
  std::atomic<uint8_t> pending_free;  // push_free could not lock: free me
  uint8_t pad;
};
static_assert(sizeof(LruNode) == 24);

// What the LRU calls back into the map with. Any context; called with LRU
// locks held (del_from_htab) or after dropping them (free_node).
struct LruCallbacks {
  void* arg = nullptr;
  // Unlinks node's element from the table, if it is still there; false if it
  // is not or its bucket lock cannot be had (the node is then skipped).
  bool (*del_from_htab)(void* arg, LruNode* node) = nullptr;
  // node has left the LRU for good (not called for a node pop_free hands
  // back for immediate reuse): the map frees its element, normally with
  // ElemPool::free_rcu.
  void (*free_node)(void* arg, LruNode* node) = nullptr;
  // Optional: free_node for each node of a chain linked through next
  // (nullptr-terminated), the nodes an operation evicted. Without it the LRU
  // calls free_node for each.
  void (*free_nodes)(void* arg, LruNode* chain) = nullptr;
  // Optional: del_from_htab for n (1..LruList::kDelBatch) nodes at once, so
  // the map can overlap their cache misses. Moves the nodes it unlinked to
  // the front of nodes, keeping their order, and returns how many. Without
  // it the LRU calls del_from_htab for each.
  uint32_t (*del_batch)(void* arg, LruNode** nodes, uint32_t n) = nullptr;
};

// Counts and a walk of every list, for tests and debugging.
struct LruCounts {
  uint64_t free = 0;  // free entries
  uint64_t pending = 0;
  uint64_t active = 0;
  uint64_t inactive = 0;
  uint64_t flagged = 0;  // nodes on a list with pending_free set
  uint64_t nodes() const { return pending + active + inactive; }
};

class LruList {
 public:
  static constexpr uint32_t kLocalFreeTarget = 128;  // common: max batch to a Local
  static constexpr uint32_t kLocalNrScans = kLocalFreeTarget;
  static constexpr uint32_t kPercpuFreeTarget = 4;  // per-CPU: eviction batch
  static constexpr uint32_t kPercpuNrScans = kPercpuFreeTarget;
  static constexpr uint32_t kDelBatch = 32;  // nodes per LruCallbacks::del_batch

  LruList() = default;
  ~LruList();
  LruList(const LruList&) = delete;
  LruList& operator=(const LruList&) = delete;

  // Host. entries: max_entries (>= 1); ncpus: the domain's normal slots
  // (1..65535); percpu: BPF_F_NO_COMMON_LRU (entries / ncpus per slot, the
  // remainder to the first slots). ENOMEM, EINVAL.
  Status init(bool percpu, uint32_t entries, uint32_t ncpus, const LruCallbacks& cb);

  // Any context. Binds a node to a free entry of slot's list, evicting if
  // needed, and puts it at the head of slot's pending list (common) or
  // inactive list (per-CPU), ref bit clear; returns it. The node is fresh (a
  // new element, on no list), or with fresh == nullptr (the map has no
  // element ready) the memory of an element evicted for the purpose, reused
  // at once. nullptr if no entry (or no node) could be had: every
  // candidate's del_from_htab failed, or locks were busy in a nested
  // operation; the caller still owns fresh and frees it at once.
  // The common case is inline: a fresh node, common mode, outside any other
  // map lock, and a free entry in the slot's Local.
  [[gnu::always_inline]] LruNode* pop_free(int slot, LruNode* fresh) {
    if (!percpu_ && fresh && !map_lock_thread_busy()) [[likely]] {
      const uint32_t s = slot_index(slot);
      Local& loc = local_[s];
      map_lock_acquire_untracked(loc.lock);
      if (take_local(loc)) [[likely]] {
        add_pending(loc, s, fresh);
        map_lock_release_untracked(loc.lock);
        return fresh;
      }
      return common_pop_free_locked(s, fresh, false);
    }
    return pop_free_slow(slot, fresh);
  }
  // Any context. node (from a successful pop_free) has been unlinked from the
  // table: frees its entry and, now or once a lock frees up, calls free_node.
  void push_free(LruNode* node);
  // Any context (programs' lookups): marks node recently used.
  static void set_ref(LruNode* node) {
    if (!node->ref.load(std::memory_order_relaxed)) node->ref.store(1, std::memory_order_relaxed);
  }
  // True while the calling thread runs a pop_free that started inside
  // another map lock: del_from_htab must then try-lock (map_lock_try_acquire).
  static bool in_nested_op() { return t_nested; }

  bool percpu() const { return percpu_; }
  uint32_t entries() const { return entries_; }
  uint32_t ncpus() const { return ncpus_; }
  // Common mode: free entries moved to a Local at a time.
  uint32_t target_free() const { return target_free_; }
  // Bytes the LRU allocated besides the nodes (for the map's accounting).
  uint64_t bytes() const;

  // Host, no operation in flight. Free entries of the global list (common;
  // per-CPU: 0) and of slot's Local or List.
  uint32_t global_free() const;
  uint32_t local_free(uint32_t slot) const;
  // Host, no operation in flight: walks every list checking links, types,
  // cpu fields, counts and the entry invariant; calls visit(node) for each
  // node once. False with why on the first inconsistency.
  bool check(LruCounts* counts, const std::function<void(LruNode*)>& visit, std::string* why) const;

 private:
  // The kernel's bpf_lru_list: the global list (common) or a slot's (per-CPU).
  struct alignas(64) List {
    LruLink active;
    LruLink inactive;
    LruLink* rotation;  // where the next inactive rotation starts
    uint32_t n_active;
    uint32_t n_inactive;
    uint32_t free;  // free entries
    std::atomic<uint32_t> lock;
  };
  // A slot's local lists (common mode; the kernel's bpf_lru_locallist).
  struct alignas(64) Local {
    LruLink pending;
    uint32_t free;                     // under lock
    std::atomic<uint32_t> returned;    // entries added without the lock
    std::atomic<uint32_t> next_steal;  // first Local the next steal tries
    std::atomic<uint32_t> lock;
  };
  // Nodes that left the lists, chained through next, freed after unlocking.
  struct Evicted {
    LruNode* head = nullptr;
    void push(LruNode* n) {
      n->next = head;
      head = n;
    }
    LruNode* pop() {
      LruNode* n = head;
      if (n) head = static_cast<LruNode*>(n->next);
      return n;
    }
  };

  static void init_list(List& l);
  uint32_t slot_index(int slot) const {
    uint32_t s = static_cast<uint32_t>(slot);
    return s < ncpus_ ? s : s % ncpus_;
  }
  [[gnu::always_inline]] static int lock(std::atomic<uint32_t>& word, bool nested) {
    if (nested) return map_lock_try_acquire_untracked(word);
    map_lock_acquire_untracked(word);
    return 0;
  }
  static void unlock(std::atomic<uint32_t>& word) { map_lock_release_untracked(word); }
  bool del(LruNode* n) { return cb_.del_from_htab(cb_.arg, n); }
  // del for each of n nodes: those unlinked moved to the front; how many.
  uint32_t del_batch(LruNode** nodes, uint32_t n);
  void release(Evicted& ev);

  // List operations (under l.lock).
  void move(List& l, LruNode* n, LruNodeType to);     // between active/inactive
  void move_in(List& l, LruNode* n, LruNodeType to);  // from no list
  void remove(List& l, LruNode* n);                   // off the list: kFree
  // remove, then onto ev with its entry added to *free.
  void evict(List& l, LruNode* n, uint32_t* free, Evicted& ev);
  void rotate_active(List& l);
  void rotate_inactive(List& l);
  void rotate(List& l) {
    if (l.n_inactive < l.n_active) rotate_active(l);
    rotate_inactive(l);
  }
  uint32_t shrink_inactive(List& l, uint32_t target, uint32_t* free, Evicted& ev);
  uint32_t shrink(List& l, uint32_t target, uint32_t* free, Evicted& ev);

  static void init_node(LruNode* node, uint32_t s) {
    node->cpu = static_cast<uint16_t>(s);
    node->ref.store(0, std::memory_order_relaxed);
    node->pending_free.store(0, std::memory_order_relaxed);
  }
  LruNode* pop_free_slow(int slot, LruNode* fresh);

  // Common mode.
  LruNode* common_pop_free(uint32_t s, LruNode* fresh, bool nested);
  // The same with local_[s].lock taken (released before it returns).
  [[gnu::noinline]] LruNode* common_pop_free_locked(uint32_t s, LruNode* fresh, bool nested);
  LruNode* evict_for_reuse(Local& loc, bool nested, Evicted& ev);
  void common_push_free(LruNode* node, bool nested);
  // Under loc.lock: takes one free entry.
  static bool take_local(Local& loc) {
    if (loc.free == 0) [[unlikely]] {
      if (loc.returned.load(std::memory_order_relaxed) == 0) return false;
      loc.free = loc.returned.exchange(0, std::memory_order_relaxed);
    }
    loc.free--;
    return true;
  }
  // Under loc.lock: flush + rotate + move up to target_free entries from the
  // global list (the kernel's bpf_lru_list_pop_free_to_local).
  void refill_local(Local& loc, bool nested, Evicted& ev);
  void flush_pending(Local& loc, Evicted& ev);
  // Under v.lock: evicts v's oldest pending node (unreferenced first).
  bool steal_pending(Local& v, Evicted& ev);
  void add_pending(Local& loc, uint32_t s, LruNode* node) {
    init_node(node, s);
    node->type.store(LruNodeType::kPending, std::memory_order_relaxed);
    node->next = loc.pending.next;
    node->prev = &loc.pending;
    loc.pending.next->prev = node;
    loc.pending.next = node;
  }

  // Per-CPU mode.
  LruNode* percpu_pop_free(uint32_t s, LruNode* fresh, bool nested);
  void percpu_push_free(LruNode* node, bool nested);

  static inline constinit thread_local bool t_nested = false;

  LruCallbacks cb_;
  bool percpu_ = false;
  uint32_t entries_ = 0;
  uint32_t ncpus_ = 0;
  uint32_t target_free_ = 1;
  uint32_t nr_scans_ = kLocalNrScans;
  List global_{};                   // common mode
  std::unique_ptr<Local[]> local_;  // common mode, one per slot
  std::unique_ptr<List[]> lists_;   // per-CPU mode, one per slot
};

}  // namespace userbpf::maps
