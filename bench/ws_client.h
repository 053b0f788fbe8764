#ifndef FANOUT_BENCH_WS_CLIENT_H_
#define FANOUT_BENCH_WS_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/histogram.h"

namespace fanout {

class ClientThread;

// What a set of connections received. The window is [t0, t1) of MonoNs(),
// set by ClientFleet::SetWindow(); a message counts as "stamped in the window"
// by its send stamp and as "received in the window" by its arrival time.
struct ReceiveStats {
  uint64_t messages = 0;            // data messages, whenever received
  uint64_t bytes = 0;               // their payload bytes
  uint64_t received_in_window = 0;  // arrived during the window
  uint64_t reads_in_window = 0;     // reads that returned data during the window
  uint64_t stamped_in_window = 0;   // sent during the window (loss accounting)
  uint64_t unstamped = 0;           // data messages without a readable stamp
  LatencyHistogram latency;         // send stamp -> arrival, stamped in the window
  uint64_t closes_slow = 0;         // close frames with code 4008 (slow consumer)
  uint64_t closes_other = 0;        // other close frames
  uint64_t resets = 0;              // connections that ended without a close frame
  uint64_t protocol_errors = 0;     // frames the parser rejected
  void Merge(const ReceiveStats& other);
};

// A snapshot of a fleet: figures of the normal connections and of the "slow"
// ones (those the slow scenario stops reading) kept apart.
struct FleetSnapshot {
  ReceiveStats normal;
  ReceiveStats slow;
  size_t open_normal = 0;
  size_t open_slow = 0;
  double cpu_seconds = 0;  // CPU time of the fleet's threads so far
};

// One connection to open: its `topics` URL parameter, whether it is slow,
// and its `since` URL parameter (TOPIC:SEQ:EPOCH, a recovery; empty: none).
struct ConnectionSpec {
  std::string topics;
  bool slow = false;
  std::string since;
};

// The outcome of ClientFleet::Connect().
struct ConnectResult {
  size_t attempted = 0;
  size_t connected = 0;
  size_t failed = 0;
  int64_t first_start_ns = 0;  // MonoNs() when the first connect started
  int64_t last_done_ns = 0;    // MonoNs() when the last 101 arrived
  LatencyHistogram handshake;  // connect() start -> 101 received
  std::string first_error;
  void Merge(const ConnectResult& other);
};

struct FleetOptions {
  std::string ws_address;              // HOST:PORT of the WebSocket listener
  int threads = 1;                     // client threads, one io_context each
  int source_addresses = 4;            // bind to 127.0.0.1 .. 127.0.0.K, round robin
  size_t read_buffer_bytes = 4096;     // per connection
  size_t connect_concurrency = 512;    // connects in flight, over all threads
  bool json_format = false;            // format=json instead of format=raw
  int slow_rcvbuf = 0;                 // SO_RCVBUF of slow connections; 0: kernel default
  // TCP_MAXSEG of slow connections; 0: kernel default. Loopback's 64 KiB MSS
  // lets the server's kernel buffer megabytes for a stalled reader (the send
  // buffer grows with the MSS); an Ethernet-sized MSS gives it what a real
  // network would.
  int slow_mss = 0;
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Spin on the event loop instead of sleeping in epoll_wait. A sleeping
  // receiver must be woken by the sender, and on a VM that wake-up (an IPI)
  // costs the sending server several microseconds per delivery; a spinning
  // client on its own core spares the server that.
  bool busy_poll = false;
};

// ClientFleet is the receiving side of the bench: WebSocket subscriber
// connections spread over client threads, each running one io_context. A
// connection owns one read buffer; each completed read is parsed in place by a
// FrameParser and counted: nothing is allocated per message.
// Thread: methods are called from one controlling thread; they post to the
// client threads and wait.
class ClientFleet {
 public:
  static absl::StatusOr<std::unique_ptr<ClientFleet>> Create(const FleetOptions& options);
  ~ClientFleet();

  // Opens one connection per spec (connections are subscribed when the 101
  // arrives) with at most connect_concurrency in flight. Blocks until every
  // connection is open or has failed.
  ConnectResult Connect(const std::vector<ConnectionSpec>& specs);

  // Sets the measurement window and clears the window figures.
  void SetWindow(int64_t t0_ns, int64_t t1_ns);

  FleetSnapshot Snapshot();

  // Stops (true) or resumes (false) reading on the slow connections; slow
  // connections opened while paused never read past the upgrade response.
  void PauseSlow(bool paused);

  // Closes every connection with a reset (no TIME_WAIT left behind).
  void CloseAll();

  // CPU seconds the fleet's threads have used so far. Safe from any thread.
  double CpuSeconds() const;

  // Seconds the fleet's threads spent doing work: CPU time when they block,
  // time in event-loop passes that ran a handler when they spin (their CPU
  // time is then all of it). Safe from any thread.
  double BusySeconds() const;

  size_t size() const { return size_; }

 private:
  explicit ClientFleet(const FleetOptions& options);

  FleetOptions options_;
  std::vector<std::unique_ptr<ClientThread>> threads_;
  size_t size_ = 0;
};

}  // namespace fanout

#endif  // FANOUT_BENCH_WS_CLIENT_H_
