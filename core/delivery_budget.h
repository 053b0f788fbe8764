#ifndef FANOUT_CORE_DELIVERY_BUDGET_H_
#define FANOUT_CORE_DELIVERY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "core/mutex.h"

namespace fanout {

// The memory held by deliveries the node has accepted and not yet written to
// a socket: messages waiting for their I/O threads, and frames waiting in
// connection queues. Publishers are refused (or, on a stream, not read) while
// it is over its limit, so a publisher that outruns delivery cannot grow the
// node without bound.
//
// Two kinds of counts add up: a shared one (messages, charged by whoever
// publishes and released when the last reference goes), and one per I/O thread
// (queue entries, written by their thread only, so a delivery costs no shared
// atomic). A publish charges its queue entries to the shared count; the
// delivery task moves them to its thread's count as it queues them.
// Thread: safe from any thread.
class DeliveryBudget {
 public:
  // `limit_bytes` > 0.
  explicit DeliveryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}
  DeliveryBudget(const DeliveryBudget&) = delete;
  DeliveryBudget& operator=(const DeliveryBudget&) = delete;

  // Adds a per-thread count to the total. Call before any publish; `counter`
  // must outlive the budget.
  void AddThreadCounter(const std::atomic<int64_t>* counter);

  // Adds `bytes` (negative: releases) to the shared count.
  void Charge(int64_t bytes) { shared_.fetch_add(bytes, std::memory_order_relaxed); }
  void Release(int64_t bytes) {
    shared_.fetch_sub(bytes, std::memory_order_relaxed);
    if (has_waiters_.load(std::memory_order_relaxed)) Notify();
  }

  // Bytes pending now (a relaxed sum: exact when nothing moves).
  int64_t used() const;
  int64_t limit() const { return limit_; }
  bool over() const { return used() > limit_; }

  // Runs `resume` once the pending bytes are at most half the limit: at once
  // (on this thread) when they already are, otherwise on the thread whose
  // release brings them there. `resume` must not block or publish.
  void WhenRoom(absl::AnyInvocable<void() &&> resume);
  // A per-thread count went down: wakes waiters if there is room. Cheap when
  // nobody waits.
  void MaybeNotify() {
    if (has_waiters_.load(std::memory_order_relaxed)) Notify();
  }
  // Runs every waiter now, room or not: the node is stopping and whoever
  // waits must let go before its owners are destroyed.
  void WakeAll();

 private:
  void Notify();
  void RunWaiters();

  const int64_t limit_;
  std::atomic<int64_t> shared_{0};
  std::vector<const std::atomic<int64_t>*> thread_counters_;  // fixed before use
  std::atomic<bool> has_waiters_{false};
  Mutex mu_;
  std::vector<absl::AnyInvocable<void() &&>> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout

#endif  // FANOUT_CORE_DELIVERY_BUDGET_H_
