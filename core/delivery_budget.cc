#include "core/delivery_budget.h"

#include <utility>

namespace fanout {

void DeliveryBudget::AddThreadCounter(const std::atomic<int64_t>* counter) {
  thread_counters_.push_back(counter);
}

int64_t DeliveryBudget::used() const {
  int64_t total = shared_.load(std::memory_order_relaxed);
  for (const auto* c : thread_counters_) total += c->load(std::memory_order_relaxed);
  return total;
}

void DeliveryBudget::WhenRoom(absl::AnyInvocable<void() &&> resume) {
  {
    MutexLock lock(&mu_);
    waiters_.push_back(std::move(resume));
    has_waiters_.store(true, std::memory_order_seq_cst);
  }
  // The release that made room may have happened before the flag was set.
  Notify();
}

void DeliveryBudget::Notify() {
  if (used() > limit_ / 2) return;
  RunWaiters();
}

void DeliveryBudget::WakeAll() { RunWaiters(); }

void DeliveryBudget::RunWaiters() {
  std::vector<absl::AnyInvocable<void() &&>> ready;
  {
    MutexLock lock(&mu_);
    ready.swap(waiters_);
    has_waiters_.store(false, std::memory_order_relaxed);
  }
  for (auto& r : ready) std::move(r)();
}

}  // namespace fanout
