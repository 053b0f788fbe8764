#ifndef FANOUT_WS_FRONT_END_H_
#define FANOUT_WS_FRONT_END_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/authority.h"
#include "core/hub.h"
#include "core/mutex.h"
#include "ws/io_threads.h"
#include "ws/transport.h"
#include "ws/ws_options.h"

namespace fanout {

class WsListener;

// The WebSocket/HTTP front end: one port serving /ws, /healthz and /metrics,
// accepted on I/O thread 0 and spread over all I/O threads.
// Thread: Create/Start/Shutdown from the owning (main) thread; accessors used
// by sessions are safe from any thread.
class WsFrontEnd {
 public:
  struct Hooks {
    // Appends the node's Prometheus text (everything but the front end's own
    // series, which AppendMetrics adds). Called on an I/O thread.
    std::function<void(std::string*)> metrics;
    // Empty while the node serves; otherwise why not (one line), and
    // /healthz answers 503 with it.
    std::function<std::string()> not_serving;
  };

  // Binds the listeners. INVALID_ARGUMENT for a bad address, UNAVAILABLE when
  // the port cannot be bound. `hub`, `pool` and `authority` must outlive the
  // front end.
  static absl::StatusOr<std::unique_ptr<WsFrontEnd>> Create(const WsOptions& options, Hub* hub,
                                                            IoThreadPool* pool,
                                                            const Authority* authority, Hooks hooks);
  ~WsFrontEnd();

  // The bound address, HOST:PORT.
  std::string local_address() const;
  // Starts accepting (the pool must be running or about to run).
  void Start();
  // Stops accepting, drops handshakes in progress, closes every WebSocket
  // with 1001 and waits up to `deadline` for the close handshakes. Call once,
  // before stopping the pool.
  void Shutdown(absl::Duration deadline);

  // Re-reads the TLS certificate and key (no-op without TLS); on failure the
  // ones in use stay.
  absl::Status ReloadTls() { return tls_ ? tls_->Reload() : absl::OkStatus(); }

  // Appends the front end's Prometheus series to `out`.
  void AppendMetrics(std::string* out) const;

  // -- For sessions --
  Hub& hub() { return *hub_; }
  const Authority& authority() const { return *authority_; }
  const WsOptions& options() const { return options_; }
  // options().write_delay, as the sessions' clock counts it.
  std::chrono::steady_clock::duration write_delay() const { return write_delay_; }
  // Null unless the port speaks TLS.
  const TlsContext* tls() const { return tls_.get(); }
  const Hooks& hooks() const { return hooks_; }
  IoThreadPool& pool() { return *pool_; }
  uint64_t NextConnectionId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }
  // Counts a refused upgrade or request, by reason.
  enum class Reject {
    kBadRequest,
    kBadTopic,
    kOrigin,
    kTooManyConnections,
    kTooManyFromAddress,
    kTooManyTopics,
    kUnauthorized,
    kForbidden,
    kShuttingDown,
    kCount
  };
  void CountReject(Reject r) { rejects_[static_cast<int>(r)].fetch_add(1, std::memory_order_relaxed); }
  void CountAccepted() { accepted_.fetch_add(1, std::memory_order_relaxed); }

  // Takes a connection slot for a client at `ip` (--max_connections, and
  // --max_connections_per_ip when set). Every slot taken is given back by
  // OnSocketClosed with the same address.
  enum class Admission { kOk, kTooManyConnections, kTooManyFromAddress };
  Admission AdmitConnection(const std::string& ip);
  // A WebSocket session's socket closed (any thread).
  void OnSocketClosed(const Subscriber::Identity& identity);
  // The IP part of an Identity::remote_address.
  static std::string IpOf(const std::string& remote_address);

 private:
  WsFrontEnd(const WsOptions& options, Hub* hub, IoThreadPool* pool, const Authority* authority,
             Hooks hooks);

  const WsOptions options_;
  const std::chrono::steady_clock::duration write_delay_;
  Hub* const hub_;
  IoThreadPool* const pool_;
  const Authority* const authority_;
  const Hooks hooks_;
  std::unique_ptr<TlsContext> tls_;
  std::shared_ptr<WsListener> listener_;
  boost::asio::ip::tcp::endpoint endpoint_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> shutting_down_{false};
  std::atomic<size_t> open_sockets_{0};
  Mutex per_ip_mu_;
  absl::flat_hash_map<std::string, uint32_t> per_ip_ ABSL_GUARDED_BY(per_ip_mu_);
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> rejects_[static_cast<int>(Reject::kCount)]{};
};

}  // namespace fanout

#endif  // FANOUT_WS_FRONT_END_H_
