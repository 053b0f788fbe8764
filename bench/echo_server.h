#ifndef FANOUT_BENCH_ECHO_SERVER_H_
#define FANOUT_BENCH_ECHO_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace fanout {

struct EchoStats {
  uint64_t frames_sent = 0;   // frames written completely
  uint64_t rounds = 0;        // passes over all connections
  uint64_t would_block = 0;   // writes refused because the client lagged
  double cpu_seconds = 0;     // of the sending thread, while sending
  double seconds = 0;         // wall time spent sending
  size_t connections = 0;
};

// EchoServer is the yardstick for the client: a trivial WebSocket server on
// one thread, pinned to a CPU, that answers every upgrade with a 101 and then
// writes a pre-built frame (or `batch` of them in one write) to each
// connection in turn, as fast as the sockets take them. Its only per-frame cost
// is the write system call, the floor of any real server, so a client that
// keeps up with it is not what limits a fanout measurement.
// Thread: Start/BeginSending/Stop from one controlling thread.
class EchoServer {
 public:
  static absl::StatusOr<std::unique_ptr<EchoServer>> Start(int cpu, size_t payload_bytes, int batch);
  ~EchoServer();

  std::string ws_address() const;

  // Stops accepting and starts writing to the connections accepted so far.
  void BeginSending();

  // Stops writing, closes everything and returns what was sent.
  EchoStats Stop();

 private:
  EchoServer() = default;
  void Loop();

  int cpu_ = -1;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int batch_ = 1;
  size_t payload_bytes_ = 64;
  std::atomic<bool> sending_{false};
  std::atomic<bool> stop_{false};
  EchoStats stats_;
  std::thread thread_;
};

}  // namespace fanout

#endif  // FANOUT_BENCH_ECHO_SERVER_H_
