#ifndef FANOUT_WS_IO_THREADS_H_
#define FANOUT_WS_IO_THREADS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/container/flat_hash_set.h"
#include "core/hub.h"

namespace fanout {

class WsSession;

// Counters one I/O thread writes and anyone may read.
struct alignas(64) IoThreadStats {
  std::atomic<uint64_t> messages_out{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> client_messages_in{0};
  std::atomic<uint64_t> client_bytes_in{0};
  std::atomic<uint64_t> slow_disconnects{0};
  std::atomic<uint64_t> rate_limit_disconnects{0};
  std::atomic<uint64_t> control_errors{0};

  // Adds with a plain load+store: only the owning thread writes.
  static void Add(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// One event loop and the thread that runs it. Connections accepted here stay
// here; their state needs no lock.
// Thread: `sessions` and loop-owned state only on this thread; `stats` and
// `context` from any thread.
struct IoThread {
  int index = 0;
  boost::asio::io_context context{1};
  absl::flat_hash_set<WsSession*> sessions;  // open WebSocket sessions
  // Sessions with deliveries queued but not yet written, flushed by one task
  // posted behind the delivery tasks already waiting: under load, several
  // publishes reach a session before its flush and leave in one writev.
  std::vector<std::shared_ptr<WsSession>> dirty;
  bool flush_posted = false;
  IoThreadStats stats;
  std::thread thread;
};

// The I/O threads, as the hub's Dispatcher.
// Thread: Post from any thread; Start/Stop from the owner's thread.
class IoThreadPool final : public Dispatcher {
 public:
  explicit IoThreadPool(int count);
  ~IoThreadPool() override;

  int thread_count() const override { return static_cast<int>(threads_.size()); }
  void Post(int index, absl::AnyInvocable<void() &&> fn) override;

  IoThread& thread(int index) { return *threads_[static_cast<size_t>(index)]; }
  void Start();
  // Stops every loop and joins its thread; pending work is dropped.
  void Stop();

  // Sums one counter over all threads.
  uint64_t Sum(std::atomic<uint64_t> IoThreadStats::*counter) const;

 private:
  std::vector<std::unique_ptr<IoThread>> threads_;
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
};

}  // namespace fanout

#endif  // FANOUT_WS_IO_THREADS_H_
