#ifndef FANOUT_WS_IO_THREADS_H_
#define FANOUT_WS_IO_THREADS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/container/flat_hash_set.h"
#include "core/hub.h"
#include "core/mutex.h"
#include "ws/timer_wheel.h"

namespace fanout {

class WsSession;

// Counters and gauges one I/O thread writes and anyone may read.
struct alignas(64) IoThreadStats {
  std::atomic<uint64_t> messages_out{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> client_messages_in{0};
  std::atomic<uint64_t> client_bytes_in{0};
  std::atomic<uint64_t> slow_disconnects{0};
  std::atomic<uint64_t> conflated{0};  // deliveries a conflating client skipped
  std::atomic<uint64_t> rate_limit_disconnects{0};
  std::atomic<uint64_t> control_errors{0};
  std::atomic<uint64_t> protocol_errors{0};      // closes with 1002 or 1007
  std::atomic<uint64_t> too_big_disconnects{0};  // closes with 1009
  std::atomic<uint64_t> idle_disconnects{0};
  std::atomic<uint64_t> close_timeouts{0};  // close handshakes that ran out of time
  std::atomic<uint64_t> handshake_timeouts{0};
  std::atomic<uint64_t> handshakes_dropped{0};  // oldest ones, to make room
  std::atomic<uint64_t> tls_handshake_failures{0};  // not TLS, or TLS that failed
  std::atomic<uint64_t> auth_failures{0};       // bad tokens on auth/refresh, or none in time
  std::atomic<uint64_t> token_expirations{0};   // closes with 4002
  // Gauges.
  std::atomic<int64_t> sockets{0};     // WebSocket sockets open (including closing)
  std::atomic<int64_t> handshakes{0};  // HTTP connections not yet answered or upgraded
  std::atomic<int64_t> authenticating{0};  // upgraded, waiting for their auth op
  // Outbound queue entries and the bytes they own, for the delivery budget.
  std::atomic<int64_t> queued_budget_bytes{0};

  // Adds with a plain load+store: only the owning thread writes.
  template <typename T, typename N>
  static void Add(std::atomic<T>& c, N n) {
    c.store(c.load(std::memory_order_relaxed) + static_cast<T>(n), std::memory_order_relaxed);
  }
};

// One event loop and the thread that runs it. Connections accepted here stay
// here; their state needs no lock.
// Thread: everything but `stats` and `context` only on this thread.
struct IoThread {
  // `tick`: the resolution of the thread's deadlines.
  IoThread(int index, std::chrono::milliseconds tick);

  const int index;
  boost::asio::io_context context{1};
  // Declared after the context: destroyed before it, it leaves entries that
  // outlive it unlinked.
  std::unique_ptr<TimerWheel> wheel;
  // Handshakes in progress, oldest first (HttpSession::fifo_).
  ListNode handshakes;
  size_t handshake_count = 0;
  absl::flat_hash_set<WsSession*> sessions;  // WebSocket sessions with an open socket
  // Sessions with deliveries queued but not yet written, flushed by one task
  // posted behind the delivery tasks already waiting: under load, several
  // publishes reach a session before its flush and leave in one writev.
  std::vector<std::shared_ptr<WsSession>> dirty;
  bool flush_posted = false;
  // True while the running task is the only one its inbox drain took (see
  // `inbox`): a delivery it makes is then all this thread has to write, and a
  // session writes it at once rather than joining `dirty`, which saves a
  // second pass over every subscriber of a big topic.
  bool lone_task = false;
  // With --write_delay: sessions that wrote less than the delay ago and have
  // deliveries queued, written together when `delayed_timer` fires (at most
  // one delay after the first joined), so a busy subscriber gets several
  // messages per write instead of one write per publish.
  std::vector<std::shared_ptr<WsSession>> delayed;
  boost::asio::steady_timer delayed_timer{context};
  bool delayed_armed = false;
  // What every read on this thread reads into: connections hold no read
  // buffer while idle, only the bytes of a message split across reads.
  std::vector<char> read_buffer;
  IoThreadStats stats;
  std::thread thread;

  // Tasks other threads post (deliveries, mostly), run in order by one
  // event-loop task: while that task waits to run, further posts only join
  // the list, so a burst of publishes costs the loop one wake-up (the
  // eventfd write and epoll_ctl asio makes per post to a sleeping loop), not
  // one per publish.
  Mutex inbox_mu;
  std::vector<absl::AnyInvocable<void() &&>> inbox ABSL_GUARDED_BY(inbox_mu);
  bool inbox_posted ABSL_GUARDED_BY(inbox_mu) = false;
};

// The I/O threads, as the hub's Dispatcher.
// Thread: Post from any thread; Start/Stop from the owner's thread.
class IoThreadPool final : public Dispatcher {
 public:
  IoThreadPool(int count, std::chrono::milliseconds tick = std::chrono::milliseconds(100));
  ~IoThreadPool() override;

  int thread_count() const override { return static_cast<int>(threads_.size()); }
  void Post(int index, absl::AnyInvocable<void() &&> fn) override;

  IoThread& thread(int index) { return *threads_[static_cast<size_t>(index)]; }
  const IoThread& thread(int index) const { return *threads_[static_cast<size_t>(index)]; }
  void Start();
  // Stops every loop and joins its thread; pending work is dropped.
  void Stop();

  // Sums one counter over all threads.
  template <typename T>
  T Sum(std::atomic<T> IoThreadStats::*counter) const {
    T total = 0;
    for (const auto& t : threads_) total += (t->stats.*counter).load(std::memory_order_relaxed);
    return total;
  }

 private:
  static void RunInbox(IoThread* t);

  std::vector<std::unique_ptr<IoThread>> threads_;
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
};

}  // namespace fanout

#endif  // FANOUT_WS_IO_THREADS_H_
