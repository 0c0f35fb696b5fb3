// bpf_spin_lock at the map layer: the lock word protocol (spin_lock.h: owner
// tokens, EDEADLK on the own thread's lock, bounded waits), where a value may
// hold a lock (the kernel's map_check_btf), the BPF_F_LOCK errno table of
// HASH and ARRAY, host copies that never touch the lock word, the HASH
// in-place update, and locked copies that are atomic against holders
// incrementing both halves of a value (run under TSan too).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "map_test_util.h"
#include "maps/map_internal.h"
#include "maps/registry.h"
#include "maps/special_fields.h"
#include "maps/spin_lock.h"
#include "mem/domain.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USERBPF_SPIN_TSAN 1
#endif
#endif

namespace userbpf::maps {
namespace {

using test::create_errno;
using test::make_attr;
using test::must_create;

// The value of the tests: struct { struct bpf_spin_lock lock; u32 tag; u64 a, b; }.
struct Val {
  uint32_t lock;
  uint32_t tag;
  uint64_t a;
  uint64_t b;
};
static_assert(sizeof(Val) == 24);

std::shared_ptr<const FieldTable> lock_fields() {
  auto ft = std::make_shared<FieldTable>();
  ft->fields = {{FieldKind::kSpinLock, 0, 4}};
  return ft;
}

MapAttr lock_attr(MapType type, uint32_t flags = 0, uint32_t max_entries = 8) {
  MapAttr a = make_attr(type, 4, sizeof(Val), max_entries, flags);
  a.fields = lock_fields();
  return a;
}

// The map memory of key's value (elements are never deleted in these tests,
// so the pointer outlives the section it was found in).
Val* value_of(Map* m, uint32_t key) {
  mem::SlotGuard g(mem::default_mem_domain().slots);
  return static_cast<Val*>(m->ops->lookup_elem(m, &key));
}

uint32_t load_word(const Val* v) {
  return __atomic_load_n(&v->lock, __ATOMIC_ACQUIRE);
}

TEST(SpinLockWord, UncontendedTakeAndRelease) {
  uint32_t word = 0;
  EXPECT_FALSE(spin_lock_thread_busy());
  ASSERT_EQ(spin_lock_acquire(&word, false), 0);
  EXPECT_NE(word, 0u);  // this thread's token
  EXPECT_EQ(word, t_spin.token);
  EXPECT_TRUE(spin_lock_thread_busy());
  spin_lock_release(&word);
  EXPECT_EQ(word, 0u);
  EXPECT_FALSE(spin_lock_thread_busy());
}

TEST(SpinLockWord, ThreadsHaveDistinctTokens) {
  uint32_t mine = 0, theirs = 0;
  ASSERT_EQ(spin_lock_acquire(&mine, false), 0);
  std::thread([&] {
    ASSERT_EQ(spin_lock_acquire(&theirs, false), 0);
    spin_lock_release(&theirs);
  }).join();
  EXPECT_NE(t_spin.token, 0u);
  EXPECT_NE(mine, 0u);
  spin_lock_release(&mine);
  uint32_t other_token = 0;
  std::thread([&] {
    other_token = t_spin.token != 0 ? t_spin.token : spin_lock_new_token();
  }).join();
  EXPECT_NE(other_token, t_spin.token);
}

TEST(SpinLockWord, OwnThreadsLockIsEdeadlkAtOnce) {
  // What a signal handler sees when the code it interrupted holds the lock.
  uint32_t word = 0;
  ASSERT_EQ(spin_lock_acquire(&word, false), 0);
  EXPECT_EQ(spin_lock_acquire(&word, false), -EDEADLK);
  EXPECT_EQ(spin_lock_acquire(&word, true), -EDEADLK);
  spin_lock_release(&word);
  EXPECT_FALSE(spin_lock_thread_busy());  // the failures gave their count back
}

TEST(SpinLockWord, NestedAndBusyWaitsAreBounded) {
  uint32_t held = 0, mine = 0;
  std::atomic<int> phase{0};
  std::thread holder([&] {
    ASSERT_EQ(spin_lock_acquire(&held, false), 0);
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
    spin_lock_release(&held);
    phase.store(3);
  });
  while (phase.load() != 1) std::this_thread::yield();
  // A nested run gives up.
  EXPECT_EQ(spin_lock_acquire(&held, true), -EBUSY);
  // So does any wait on a thread that already holds a lock (it could close
  // a cycle through the holder).
  ASSERT_EQ(spin_lock_acquire(&mine, false), 0);
  EXPECT_EQ(spin_lock_acquire(&held, false), -EBUSY);
  spin_lock_release(&mine);
  EXPECT_FALSE(spin_lock_thread_busy());
  phase.store(2);
  while (phase.load() != 3) std::this_thread::yield();
  EXPECT_EQ(spin_lock_acquire(&held, true), 0);
  spin_lock_release(&held);
  holder.join();
}

TEST(SpinLockWord, TopLevelWaitOutlastsTheHolder) {
  uint32_t word = 0;
  ASSERT_EQ(spin_lock_acquire(&word, false), 0);
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    EXPECT_EQ(spin_lock_acquire(&word, false), 0);
    got.store(true);
    spin_lock_release(&word);
  });
  // Longer than a bounded wait would last: the waiter is still waiting.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(got.load());
  spin_lock_release(&word);
  waiter.join();
  EXPECT_TRUE(got.load());
}

TEST(SpinLockMap, OnlyHashAndArrayValuesMayHoldALock) {
  EXPECT_EQ(create_errno(lock_attr(MapType::kHASH)), 0);
  EXPECT_EQ(create_errno(lock_attr(MapType::kHASH, kBpfFNoPrealloc)), 0);
  EXPECT_EQ(create_errno(lock_attr(MapType::kARRAY)), 0);
  std::string msg;
  EXPECT_EQ(create_errno(lock_attr(MapType::kPERCPU_ARRAY), &msg), EOPNOTSUPP);
  EXPECT_NE(msg.find("bpf_spin_lock"), std::string::npos) << msg;
  EXPECT_EQ(create_errno(lock_attr(MapType::kPERCPU_HASH)), EOPNOTSUPP);
  for (MapType t : {MapType::kLRU_HASH, MapType::kLRU_PERCPU_HASH})
    if (find_map_ops(static_cast<uint32_t>(t)) != nullptr)
      EXPECT_EQ(create_errno(lock_attr(t)), EOPNOTSUPP) << map_type_name(static_cast<uint32_t>(t));
  // Any special field with BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG: EACCES.
  EXPECT_EQ(create_errno(lock_attr(MapType::kHASH, kBpfFRdonlyProg)), EACCES);
  EXPECT_EQ(create_errno(lock_attr(MapType::kARRAY, kBpfFWronlyProg)), EACCES);
  // The type's own checks come first (the kernel runs map_check_btf after
  // map_alloc).
  MapAttr bad = lock_attr(MapType::kPERCPU_ARRAY);
  bad.key_size = 8;
  EXPECT_EQ(create_errno(bad), EINVAL);
  // Timers: hash and array (and LRU hash); kptrs: per-CPU maps too.
  MapAttr timer = make_attr(MapType::kPERCPU_ARRAY, 4, 16, 1);
  auto tf = std::make_shared<FieldTable>();
  tf->fields = {{FieldKind::kTimer, 0, 16}};
  timer.fields = tf;
  EXPECT_EQ(create_errno(timer), EOPNOTSUPP);
  MapAttr kptr = make_attr(MapType::kPERCPU_ARRAY, 4, 8, 1);
  auto kf = std::make_shared<FieldTable>();
  kf->fields = {{FieldKind::kKptr, 0, 8, 16}};
  kptr.fields = kf;
  EXPECT_EQ(create_errno(kptr), 0);
}

class SpinLockFlags : public ::testing::TestWithParam<MapType> {
 protected:
  bool is_hash() const { return GetParam() == MapType::kHASH; }
};

TEST_P(SpinLockFlags, ErrnoTable) {
  MapPtr plain = must_create(make_attr(GetParam(), 4, sizeof(Val), 8));
  MapPtr locked = must_create(lock_attr(GetParam()));
  ASSERT_TRUE(plain && locked);
  Val v{0, 7, 1, 1}, out{};
  // No bpf_spin_lock in the value: EINVAL on every BPF_F_LOCK entry.
  EXPECT_EQ(test::update(plain.get(), 1u, v, kBpfFLock), -EINVAL);
  EXPECT_EQ(test::update(plain.get(), 1u, v, kBpfAny), 0);
  EXPECT_EQ(test::lookup(plain.get(), 1u, &out, kBpfFLock), -EINVAL);
  uint32_t k = 1;
  EXPECT_EQ(plain->ops->lookup_and_delete_elem(plain.get(), &k, &out, kBpfFLock), -EINVAL);
  uint32_t keys[16], cursor = 0;
  Val vals[16];
  BatchArgs b;
  b.out_batch = &cursor;
  b.keys = keys;
  b.values = vals;
  b.count = 16;
  b.elem_flags = kBpfFLock;
  EXPECT_EQ(plain->ops->lookup_batch(plain.get(), b), -EINVAL);

  // With a lock.
  EXPECT_EQ(test::update(locked.get(), 1u, v, kBpfFLock), 0);
  EXPECT_EQ(test::update(locked.get(), 1u, v, kBpfFLock | kBpfNoexist), -EEXIST);
  EXPECT_EQ(test::update(locked.get(), 1u, v, kBpfFLock | kBpfExist), 0);
  EXPECT_EQ(test::update(locked.get(), 1u, v, kBpfFLock | 8), -EINVAL);
  EXPECT_EQ(test::update(locked.get(), 1u, v, 3), -EINVAL);
  EXPECT_EQ(test::update(locked.get(), 100u, v, kBpfFLock), is_hash() ? 0 : -E2BIG);
  EXPECT_EQ(test::update(locked.get(), 5u, v, kBpfFLock | kBpfExist), is_hash() ? -ENOENT : 0);
  EXPECT_EQ(test::lookup(locked.get(), 1u, &out, kBpfFLock), 0);
  EXPECT_EQ(out.a, 1u);
  EXPECT_EQ(out.tag, 7u);
  EXPECT_EQ(test::lookup(locked.get(), 1u, &out, kBpfFLock | 8), -EINVAL);
  EXPECT_EQ(test::lookup(locked.get(), 1u, &out, 8), -EINVAL);
  EXPECT_EQ(test::lookup(locked.get(), 9u, &out, kBpfFLock), -ENOENT);
  b.count = 16;
  b.in_batch = nullptr;
  const int batch_rc = locked->ops->lookup_batch(locked.get(), b);
  EXPECT_EQ(batch_rc, -ENOENT);  // everything fit: the end
  EXPECT_GE(b.count, 1u);
  b.count = 1;
  b.keys = &k;
  b.values = &v;
  EXPECT_EQ(locked->ops->update_batch(locked.get(), b), 0);
  EXPECT_EQ(locked->ops->lookup_and_delete_elem(locked.get(), &k, &out, kBpfFLock),
            is_hash() ? 0 : -kEnotsupp);
  EXPECT_EQ(locked->ops->lookup_and_delete_elem(locked.get(), &k, &out, kBpfFLock | 8), -EINVAL);
}

TEST_P(SpinLockFlags, HostCopiesNeverTouchTheLockWord) {
  MapPtr m = must_create(lock_attr(GetParam()));
  ASSERT_TRUE(m);
  ASSERT_EQ(test::update(m.get(), 2u, Val{0, 1, 2, 3}), 0);
  Val* v = value_of(m.get(), 2);
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(spin_lock_acquire(&v->lock, false), 0);  // a program holds it
  const uint32_t held = load_word(v);
  // An update without BPF_F_LOCK keeps the word (and, for an array, does
  // not release it: map_release_fields leaves locks alone).
  if (!is_hash()) {
    EXPECT_EQ(test::update(m.get(), 2u, Val{0xdead, 4, 5, 6}), 0);
    EXPECT_EQ(load_word(v), held);
    EXPECT_EQ(v->tag, 4u);
  }
  // Host lookups see the lock as zeros.
  Val out{};
  std::memset(&out, 0xab, sizeof(out));
  EXPECT_EQ(test::lookup(m.get(), 2u, &out), 0);
  EXPECT_EQ(out.lock, 0u);
  // This thread holds the lock: BPF_F_LOCK copies refuse instead of waiting.
  EXPECT_EQ(test::lookup(m.get(), 2u, &out, kBpfFLock), -EDEADLK);
  EXPECT_EQ(test::update(m.get(), 2u, Val{}, kBpfFLock), -EDEADLK);
  spin_lock_release(&v->lock);
  std::memset(&out, 0xab, sizeof(out));
  EXPECT_EQ(test::lookup(m.get(), 2u, &out, kBpfFLock), 0);
  EXPECT_EQ(out.lock, 0u);
  EXPECT_EQ(load_word(v), 0u);
}

TEST_P(SpinLockFlags, LockedCopiesWaitForTheHolder) {
  MapPtr m = must_create(lock_attr(GetParam()));
  ASSERT_TRUE(m);
  ASSERT_EQ(test::update(m.get(), 3u, Val{0, 0, 10, 10}), 0);
  Val* v = value_of(m.get(), 3);
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(spin_lock_acquire(&v->lock, false), 0);
  std::atomic<int> done{0};
  Val seen{};
  std::thread reader([&] {
    EXPECT_EQ(test::lookup(m.get(), 3u, &seen, kBpfFLock), 0);
    done.fetch_add(1);
  });
  std::thread writer([&] {
    EXPECT_EQ(test::update(m.get(), 3u, Val{0, 9, 50, 50}, kBpfFLock | kBpfExist), 0);
    done.fetch_add(1);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(done.load(), 0);  // both still wait
  v->a = 11;                  // the holder's critical section
  v->b = 11;
  spin_lock_release(&v->lock);
  reader.join();
  writer.join();
  // The reader saw the holder's pair or the writer's, never a mix.
  EXPECT_EQ(seen.a, seen.b);
  EXPECT_TRUE(seen.a == 11 || seen.a == 50) << seen.a;
  Val out{};
  EXPECT_EQ(test::lookup(m.get(), 3u, &out), 0);
  EXPECT_EQ(out.a, 50u);
  EXPECT_EQ(out.tag, 9u);
}

INSTANTIATE_TEST_SUITE_P(Types, SpinLockFlags, ::testing::Values(MapType::kARRAY, MapType::kHASH),
                         [](const auto& info) {
                           return info.param == MapType::kHASH ? "hash" : "array";
                         });

TEST(SpinLockMap, HashLockedUpdateOfAnExistingKeyIsInPlace) {
  for (uint32_t flags : {0u, kBpfFNoPrealloc}) {
    MapPtr m = must_create(lock_attr(MapType::kHASH, flags));
    ASSERT_TRUE(m);
    ASSERT_EQ(test::update(m.get(), 4u, Val{0, 1, 1, 1}), 0);
    Val* before = value_of(m.get(), 4);
    ASSERT_EQ(test::update(m.get(), 4u, Val{0, 2, 2, 2}, kBpfFLock), 0);
    EXPECT_EQ(value_of(m.get(), 4), before);  // the kernel's l_old path
    EXPECT_EQ(before->a, 2u);
    ASSERT_EQ(test::update(m.get(), 4u, Val{0, 3, 3, 3}), 0);
    EXPECT_NE(value_of(m.get(), 4), before);  // a new element replaced it
    // A new key through BPF_F_LOCK is an ordinary insert, lock word zeroed.
    ASSERT_EQ(test::update(m.get(), 6u, Val{0xffffffff, 4, 4, 4}, kBpfFLock), 0);
    EXPECT_EQ(load_word(value_of(m.get(), 6)), 0u);
  }
}

// Holders increment both halves of a value the way programs do (plain
// accesses under the lock) while other threads read it with BPF_F_LOCK and
// overwrite other keys with it: readers never see the halves differ, and
// the final count is exact.
TEST(SpinLockMap, LockedCopiesAreAtomicAgainstHolders) {
#ifdef USERBPF_SPIN_TSAN
  constexpr uint64_t kIters = 3000;
#else
  constexpr uint64_t kIters = 100000;
#endif
  constexpr int kHolders = 3;
  for (MapType type : {MapType::kARRAY, MapType::kHASH}) {
    SCOPED_TRACE(map_type_name(static_cast<uint32_t>(type)));
    MapPtr m = must_create(lock_attr(type));
    ASSERT_TRUE(m);
    ASSERT_EQ(test::update(m.get(), 0u, Val{}), 0);
    ASSERT_EQ(test::update(m.get(), 1u, Val{}), 0);
    Val* v = value_of(m.get(), 0);
    ASSERT_NE(v, nullptr);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> reads{0}, torn{0};
    std::thread reader([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        Val out{};
        ASSERT_EQ(test::lookup(m.get(), 0u, &out, kBpfFLock), 0);
        if (out.a != out.b) torn.fetch_add(1);
        reads.fetch_add(1);
      }
    });
    std::thread writer([&] {
      // Key 1: pairs written with BPF_F_LOCK, read back with it.
      for (uint64_t x = 1; !stop.load(std::memory_order_relaxed); x++) {
        ASSERT_EQ(test::update(m.get(), 1u, Val{0, 0, x, x}, kBpfFLock), 0);
        Val out{};
        ASSERT_EQ(test::lookup(m.get(), 1u, &out, kBpfFLock), 0);
        if (out.a != out.b) torn.fetch_add(1);
      }
    });
    while (reads.load() == 0) std::this_thread::yield();
    std::vector<std::thread> threads;
    for (int t = 0; t < kHolders; t++) {
      threads.emplace_back([&] {
        for (uint64_t i = 0; i < kIters; i++) {
          ASSERT_EQ(spin_lock_acquire(&v->lock, false), 0);
          v->a++;
          v->b++;
          spin_lock_release(&v->lock);
        }
      });
    }
    for (auto& t : threads) t.join();
    stop.store(true);
    reader.join();
    writer.join();
    EXPECT_EQ(torn.load(), 0u);
    EXPECT_GT(reads.load(), 0u);
    Val out{};
    ASSERT_EQ(test::lookup(m.get(), 0u, &out, kBpfFLock), 0);
    EXPECT_EQ(out.a, kHolders * kIters);
    EXPECT_EQ(out.b, kHolders * kIters);
  }
}

}  // namespace
}  // namespace userbpf::maps
