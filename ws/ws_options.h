#ifndef FANOUT_WS_WS_OPTIONS_H_
#define FANOUT_WS_WS_OPTIONS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "core/topic_pattern.h"

namespace fanout {

// Settings of the WebSocket/HTTP front end; each has a fanoutd flag of the
// same name (docs/operations.md).
struct WsOptions {
  // HOST:PORT to listen on; port 0 picks a free port.
  std::string listen = "0.0.0.0:8080";
  // I/O threads; each owns its connections for their whole life.
  int io_threads = 1;
  // Most open WebSocket connections (closing ones included, since they still
  // hold a socket); more are refused with HTTP 503.
  size_t max_connections = 100000;
  // Most WebSocket connections from one client IP address; more are refused
  // with HTTP 429. 0: no limit (nodes usually sit behind a load balancer).
  size_t max_connections_per_ip = 0;
  // Most HTTP connections that have not yet sent their request or been
  // upgraded. At the limit the oldest is dropped to make room, so stalled
  // sockets never lock real clients out. Split evenly over the I/O threads.
  size_t max_pending_handshakes = 10000;
  // Bytes a connection may have queued for sending (every frame: deliveries,
  // replies, pongs) before it is closed with close code 4008 (slow consumer).
  size_t max_outbound_queue_bytes = 4 << 20;
  // Largest message a client may send; larger closes with 1009.
  size_t max_inbound_message_bytes = 64 << 10;
  // Sustained control messages per second a client may send, and the burst it
  // may use up front; beyond that it is closed with 1008.
  double client_messages_per_second = 100;
  double client_message_burst = 200;
  // Time for the HTTP request, the upgrade and the close handshake.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // A connection that sends nothing (not even a pong) for this long is closed;
  // the server pings at half this interval.
  absl::Duration idle_timeout = absl::Seconds(60);
  // A connection that wrote less than this ago holds further deliveries for
  // at most this long (while under 16 KiB are queued), so that a client
  // receiving more than one message per delay gets several in one write:
  // fewer system calls and TCP segments, at up to this much latency. Zero:
  // every flush writes at once. A client receiving less often is not delayed.
  absl::Duration write_delay = absl::ZeroDuration();
  // Values accepted in the Origin header; empty accepts any origin.
  std::vector<std::string> allowed_origins;
  // Topics every subscription conflates (--conflate): a subscriber that falls
  // behind gets only the newest message of each.
  std::vector<TopicPattern> conflate;
  // Serve the browser library at /client/fanout.js and the demo page at /demo.
  bool demo = true;
  // PEM certificate (chain) and key: when both are set the port speaks TLS
  // only (wss:// and https://). Re-read by WsFrontEnd::ReloadTls (SIGHUP).
  std::string tls_cert_file;
  std::string tls_key_file;
};

}  // namespace fanout

#endif  // FANOUT_WS_WS_OPTIONS_H_
