#include "ws/timer_wheel.h"

namespace fanout {

TimerWheel::TimerWheel(boost::asio::io_context& context, std::chrono::milliseconds tick,
                       size_t slots)
    : tick_(tick.count() > 0 ? tick : std::chrono::milliseconds(1)),
      epoch_(Clock::now()),
      slots_(slots == 0 ? 1 : slots),
      timer_(context) {
  next_tick_ = TickOf(Clock::now(), /*round_up=*/false);
}

TimerWheel::~TimerWheel() {
  // Entries may outlive the wheel: leave them unlinked, not pointing here.
  for (auto& head : slots_) {
    while (head.linked()) head.next->Unlink();
  }
}

uint64_t TimerWheel::TickOf(Clock::time_point t, bool round_up) const {
  if (t <= epoch_) return 0;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t - epoch_).count();
  auto tick_us = std::chrono::duration_cast<std::chrono::microseconds>(tick_).count();
  // Deadlines round up and the clock rounds down: an entry never fires early.
  return static_cast<uint64_t>(round_up ? (us + tick_us - 1) / tick_us : us / tick_us);
}

void TimerWheel::Schedule(Entry* entry, Clock::time_point when) {
  entry->Unlink();
  if (!armed_ && !in_tick_) {
    // Asleep with nothing scheduled: no tick before now has anything to do.
    uint64_t now = TickOf(Clock::now(), /*round_up=*/false);
    if (now > next_tick_) next_tick_ = now;
  }
  uint64_t due = TickOf(when, /*round_up=*/true);
  if (due < next_tick_) due = next_tick_;
  entry->due_ = due;
  slots_[due % slots_.size()].InsertBefore(entry);
  if (!armed_ && !in_tick_ && !stopped_) Arm();
}

void TimerWheel::Stop() {
  stopped_ = true;
  timer_.cancel();
}

void TimerWheel::Arm() {
  armed_ = true;
  timer_.expires_at(epoch_ + tick_ * static_cast<int64_t>(next_tick_));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    armed_ = false;
    if (!ec && !stopped_) OnTick();
  });
}

void TimerWheel::OnTick() {
  const uint64_t now = TickOf(Clock::now(), /*round_up=*/false);
  bool any = false;
  in_tick_ = true;
  for (; next_tick_ <= now; ++next_tick_) {
    ListNode& head = slots_[next_tick_ % slots_.size()];
    if (!head.linked()) continue;
    // Move the bucket aside: callbacks may schedule into it or cancel any
    // entry, including ones still waiting here.
    ListNode due;
    due.next = head.next;
    due.prev = head.prev;
    due.next->prev = &due;
    due.prev->next = &due;
    head.next = head.prev = &head;
    while (due.linked()) {
      ListNode* node = due.next;
      node->Unlink();
      Entry* e = FromNode(node);
      if (e->due_ > next_tick_) {
        // A deadline more than one turn of the wheel away.
        slots_[e->due_ % slots_.size()].InsertBefore(node);
        continue;
      }
      e->OnDeadline();
    }
  }
  in_tick_ = false;
  // Keep ticking while anything is scheduled; otherwise sleep until the next
  // Schedule. Scanning the slots is cheap next to a tick (512 pointers).
  for (const auto& head : slots_) {
    if (head.linked()) {
      any = true;
      break;
    }
  }
  if (any && !stopped_) Arm();
}

}  // namespace fanout
