#ifndef FANOUT_SERVICE_NODE_H_
#define FANOUT_SERVICE_NODE_H_

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/authority.h"
#include "core/broker.h"
#include "core/hub.h"
#include "core/history.h"
#include "core/limits.h"
#include "core/mutex.h"
#include "service/fanout_service.h"
#include "service/health_service.h"
#include "service/reflection_service.h"
#include "ws/front_end.h"
#include "ws/io_threads.h"
#include "ws/ws_options.h"

namespace fanout {

// Everything a standalone fanoutd runs, wired together: the hub, the I/O
// threads with the WebSocket front end, and the gRPC server with reflection
// and health. main.cc only parses flags into NodeOptions.
struct NodeOptions {
  // gRPC HOST:PORT; port 0 picks a free port.
  std::string grpc_listen = "127.0.0.1:50051";
  WsOptions ws;
  Limits limits;
  // Registry stripes (locks); more stripes, less contention between topics.
  size_t registry_stripes = 64;
  // Reported by GetStats and in metrics; defaults to HOSTNAME-PID.
  std::string node_id;
  // How long shutdown waits for WebSocket close handshakes and gRPC calls.
  absl::Duration drain_timeout = absl::Seconds(10);
  // What one Watch stream may fall behind before it is cut off.
  WatchLimits watch;
  // Client tokens and the anonymous rules.
  Authority::Options auth;
  // The gRPC API's bearer tokens.
  ApiTokens::Options api_tokens;
  // With ws.tls_cert_file/tls_key_file, the gRPC port speaks TLS too; with
  // this CA (PEM), gRPC clients must present a certificate it signed.
  std::string tls_client_ca_file;
  // Cluster: the NATS servers (nats://HOST:PORT); empty: a standalone node.
  std::vector<std::string> nats_servers;
  // Replicas of the JetStream stream that numbers publishes.
  int nats_replicas = 3;
  // Threads that publish into JetStream (topics committing at once).
  int nats_publish_workers = 8;
  // How long a topic without subscribers keeps its position.
  absl::Duration topic_ttl = absl::Minutes(5);
  // Which topics keep history (standalone nodes).
  HistoryConfig history;
  // Which topics keep presence (--presence).
  std::vector<TopicPattern> presence;
};

// Thread: Create/Shutdown from the owning (main) thread; accessors anywhere.
class Node {
 public:
  // Binds both ports and starts serving. INVALID_ARGUMENT for bad options,
  // UNAVAILABLE when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Node>> Create(const NodeOptions& options);
  ~Node();

  const std::string& grpc_address() const { return grpc_address_; }
  std::string ws_address() const { return front_end_->local_address(); }
  bool serving() const { return serving_.load(std::memory_order_acquire); }
  // Empty while the node serves everything; otherwise why not: shutting
  // down, or (in a cluster) no connection to NATS. /healthz says it.
  std::string not_serving() const;

  // Graceful stop: health NOT_SERVING, stop accepting, close WebSockets with
  // 1001, let gRPC calls finish within the drain timeout. Idempotent.
  void Shutdown();

  // Re-reads the key files and the WebSocket port's TLS certificate
  // (SIGHUP): new tokens are checked against the new keys, new connections
  // get the new certificate; open connections keep what they were granted.
  // On failure what is in use stays and the error says which file failed.
  // (gRPC re-reads its certificate files by itself, every 10 seconds.)
  absl::Status Reload();

  // The node's Prometheus text (what /metrics serves).
  std::string Metrics() const;

 private:
  explicit Node(const NodeOptions& options);
  void AppendMetrics(std::string* out) const;

  // The broker's connection changed (cluster): gRPC health follows it.
  void OnBrokerConnection(bool connected);

  const NodeOptions options_;
  std::unique_ptr<IoThreadPool> pool_;
  // Outlives the hub, which refers to it; stopped before the hub goes.
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Hub> hub_;
  std::unique_ptr<Authority> authority_;
  std::unique_ptr<ApiTokens> api_tokens_;
  std::unique_ptr<WsFrontEnd> front_end_;
  std::unique_ptr<FanoutServiceImpl> service_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<ReflectionService> reflection_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::string grpc_address_;
  std::atomic<bool> serving_{false};
  Mutex health_mu_;
  bool health_started_ ABSL_GUARDED_BY(health_mu_) = false;
  bool cluster_connected_ ABSL_GUARDED_BY(health_mu_) = true;
  std::atomic<bool> stopped_{false};
  const absl::Time started_ = absl::Now();
};

}  // namespace fanout

#endif  // FANOUT_SERVICE_NODE_H_
