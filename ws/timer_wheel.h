#ifndef FANOUT_WS_TIMER_WHEEL_H_
#define FANOUT_WS_TIMER_WHEEL_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace fanout {

// A node of an intrusive, circular, doubly linked list. Unlinking needs no
// reference to the list, so a node can leave whatever list holds it.
// Thread: confined to the thread that owns the lists.
struct ListNode {
  ListNode* prev = this;
  ListNode* next = this;

  bool linked() const { return next != this; }
  void Unlink() {
    prev->next = next;
    next->prev = prev;
    prev = next = this;
  }
  // Inserts `node` (unlinked) before this one; on a list's head, at its end.
  void InsertBefore(ListNode* node) {
    node->prev = prev;
    node->next = this;
    prev->next = node;
    prev = node;
  }
  ListNode(const ListNode&) = delete;
  ListNode& operator=(const ListNode&) = delete;
  ListNode() = default;
  ~ListNode() { Unlink(); }
};

// The deadlines of one I/O thread's connections (handshakes, pings, idle and
// close timeouts) in one timer, instead of one timer per connection: a hashed
// wheel of buckets `tick` wide. An entry costs its list node and a deadline,
// scheduling and cancelling are O(1), and a deadline fires up to one tick late.
// Thread: confined to the I/O thread of its io_context.
class TimerWheel {
 public:
  using Clock = std::chrono::steady_clock;

  class Entry : private ListNode {
   public:
    virtual ~Entry() = default;
    bool scheduled() const { return linked(); }

   protected:
    // The deadline passed; the entry is no longer scheduled. It may schedule
    // itself again, or others.
    virtual void OnDeadline() = 0;

   private:
    friend class TimerWheel;
    uint64_t due_ = 0;
  };

  TimerWheel(boost::asio::io_context& context, std::chrono::milliseconds tick, size_t slots = 512);
  ~TimerWheel();
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // (Re)schedules `entry` to fire at `when` (or at the next tick if past).
  void Schedule(Entry* entry, Clock::time_point when);
  void Cancel(Entry* entry) { entry->Unlink(); }
  // Ends the ticking; entries stay unscheduled until scheduled again.
  void Stop();

  std::chrono::milliseconds tick() const { return tick_; }

 private:
  static Entry* FromNode(ListNode* node) { return static_cast<Entry*>(node); }
  uint64_t TickOf(Clock::time_point t, bool round_up) const;
  void Arm();
  void OnTick();

  const std::chrono::milliseconds tick_;
  const Clock::time_point epoch_;
  std::vector<ListNode> slots_;
  boost::asio::steady_timer timer_;
  uint64_t next_tick_ = 0;  // the first tick not yet processed
  bool armed_ = false;
  bool in_tick_ = false;
  bool stopped_ = false;
};

}  // namespace fanout

#endif  // FANOUT_WS_TIMER_WHEEL_H_
