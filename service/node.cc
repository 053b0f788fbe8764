#include "service/node.h"

#include <unistd.h>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cluster/in_process_broker.h"
#include "cluster/nats_broker.h"
#include "core/message.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace fanout {
namespace {

constexpr char kServiceName[] = "fanout.v1.Fanout";

std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "node");
  return absl::StrCat(host, "-", getpid());
}

// TLS on the gRPC port with the WebSocket port's certificate (already
// checked by the front end), and mTLS with a client CA. gRPC's file watcher
// re-reads the files every 10 seconds, so renewed certificates are served
// without a restart.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcCredentials(
    const NodeOptions& options) {
  if (options.ws.tls_cert_file.empty()) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file (mTLS is TLS)");
    }
    return grpc::InsecureServerCredentials();
  }
  if (!options.tls_client_ca_file.empty()) {
    if (absl::Status s = CheckPemCertificates(options.tls_client_ca_file, "--tls_client_ca_file");
        !s.ok()) {
      return s;
    }
  }
  constexpr unsigned kRefreshSeconds = 10;
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.ws.tls_key_file, options.ws.tls_cert_file, options.tls_client_ca_file,
      kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.tls_client_ca_file.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace

Node::Node(const NodeOptions& options) : options_(options) {}

Node::~Node() {
  if (serving_.load()) Shutdown();
}

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const NodeOptions& in) {
  NodeOptions options = in;
  if (options.node_id.empty()) options.node_id = DefaultNodeId();
  if (options.ws.io_threads < 1) return absl::InvalidArgumentError("io_threads must be at least 1");
  if (options.limits.max_topic_length < 1) {
    return absl::InvalidArgumentError("max_topic_length must be at least 1");
  }
  // A valid configuration never cuts off a client that reads well: the
  // largest frame a publish can make must fit an outbound queue.
  size_t largest = MaxDeliveryFrameBytes(options.limits.max_topic_length,
                                         options.limits.max_payload_bytes);
  if (options.ws.max_outbound_queue_bytes < largest) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_outbound_queue_bytes=", options.ws.max_outbound_queue_bytes,
        " cannot hold the largest frame a publish can make (", largest,
        " bytes: a --max_payload_bytes=", options.limits.max_payload_bytes,
        " payload in base64 in a JSON envelope); raise it or lower --max_payload_bytes"));
  }
  std::unique_ptr<Node> node(new Node(options));

  // Deadlines (handshakes, pings, idle and close timeouts) fire within a
  // tenth of the shortest of them, between 10 ms and 500 ms late.
  absl::Duration shortest = std::min(options.ws.handshake_timeout, options.ws.idle_timeout / 2);
  auto tick = std::clamp(absl::ToChronoMilliseconds(shortest / 10), std::chrono::milliseconds(10),
                         std::chrono::milliseconds(500));
  node->pool_ = std::make_unique<IoThreadPool>(options.ws.io_threads, tick);
  Node* raw = node.get();
  node->health_ = std::make_unique<HealthService>();
  if (options.nats_servers.empty()) {
    node->broker_ = std::make_unique<InProcessBroker>();
  } else {
    auto broker = NatsBroker::Create({.servers = options.nats_servers,
                                      .node_id = options.node_id,
                                      .replicas = options.nats_replicas,
                                      .publish_workers = options.nats_publish_workers,
                                      .history = options.history,
                                      .on_connection = [raw](bool connected) {
                                        raw->OnBrokerConnection(connected);
                                      }});
    if (!broker.ok()) return broker.status();
    node->broker_ = std::move(*broker);
  }
  node->hub_ = std::make_unique<Hub>(
      Hub::Options{.limits = options.limits,
                   .stripes = options.registry_stripes,
                   .topic_ttl = options.topic_ttl,
                   .history = options.history,
                   .presence = options.presence},
      node->pool_.get(), node->broker_.get());
  for (int i = 0; i < node->pool_->thread_count(); ++i) {
    node->hub_->budget().AddThreadCounter(&node->pool_->thread(i).stats.queued_budget_bytes);
  }
  WsFrontEnd::Hooks hooks;
  hooks.metrics = [raw](std::string* out) { raw->AppendMetrics(out); };
  hooks.not_serving = [raw] { return raw->not_serving(); };
  Authority::Options auth = options.auth;
  auth.max_topic_length = options.limits.max_topic_length;
  auto authority = Authority::Create(auth);
  if (!authority.ok()) return authority.status();
  node->authority_ = std::move(*authority);
  if (!node->authority_->requires_tokens()) {
    spdlog::warn(
        "no token key is configured (--jwt_secret_file, --jwt_public_key_file, --jwt_jwks_file): "
        "any client may subscribe to any topic");
  }
  auto fe = WsFrontEnd::Create(options.ws, node->hub_.get(), node->pool_.get(),
                               node->authority_.get(), std::move(hooks));
  if (!fe.ok()) return fe.status();
  node->front_end_ = std::move(*fe);

  IoThreadPool* pool = node->pool_.get();
  NodeCounters counters{
      .messages_out = [pool] { return pool->Sum(&IoThreadStats::messages_out); },
      .bytes_out = [pool] { return pool->Sum(&IoThreadStats::bytes_out); },
      .slow_client_disconnects = [pool] { return pool->Sum(&IoThreadStats::slow_disconnects); },
  };
  counters.serving = [raw] { return raw->serving(); };
  auto api_tokens = ApiTokens::Create(options.api_tokens);
  if (!api_tokens.ok()) return api_tokens.status();
  node->api_tokens_ = std::move(*api_tokens);
  node->service_ = std::make_unique<FanoutServiceImpl>(node->hub_.get(), options.node_id,
                                                       std::move(counters), options.watch,
                                                       node->api_tokens_.get());

  grpc::EnableDefaultHealthCheckService(false);
  node->reflection_ = std::make_unique<ReflectionService>(std::vector<std::string>{
      v1::Fanout::service_full_name(), grpc::health::v1::Health::service_full_name()});
  grpc::ServerBuilder builder;
  int port = 0;
  auto credentials = GrpcCredentials(options);
  if (!credentials.ok()) return credentials.status();
  builder.AddListeningPort(options.grpc_listen, *credentials, &port);
  builder.RegisterService(node->service_.get());
  builder.RegisterService(node->health_.get());
  node->reflection_->RegisterWith(&builder);
  // A second node on the same port must fail to start, not share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Leave room for the request's other fields over the payload limit, so an
  // oversized payload gets our INVALID_ARGUMENT with its size rather than a
  // transport error.
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.limits.max_payload_bytes + (64 << 10)));
  node->grpc_server_ = builder.BuildAndStart();
  if (!node->grpc_server_ || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on '", options.grpc_listen, "'"));
  }
  std::string host = options.grpc_listen.substr(0, options.grpc_listen.rfind(':'));
  node->grpc_address_ = absl::StrCat(host, ":", port);

  node->health_->SetStatus("", grpc::health::v1::HealthCheckResponse::SERVING);
  {
    MutexLock lock(&node->health_mu_);
    node->health_started_ = true;
    node->health_->SetStatus(kServiceName,
                             node->cluster_connected_
                                 ? grpc::health::v1::HealthCheckResponse::SERVING
                                 : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  node->pool_->Start();
  node->front_end_->Start();
  node->serving_.store(true, std::memory_order_release);
  const bool tls = node->front_end_->tls() != nullptr;
  spdlog::info("fanoutd {} serving gRPC{} on {} and {} on {} with {} I/O threads", options.node_id,
               tls ? (options.tls_client_ca_file.empty() ? " (TLS)" : " (mTLS)") : "",
               node->grpc_address_, tls ? "wss/https" : "WebSocket", node->ws_address(),
               options.ws.io_threads);
  return node;
}

void Node::Shutdown() {
  if (stopped_.exchange(true)) return;
  bool was_serving = serving_.load();
  serving_.store(false, std::memory_order_release);
  if (grpc_server_) {
    // Watchers of grpc.health.v1 see NOT_SERVING before anything closes, and
    // their streams end rather than hold the drain until its deadline.
    health_->Shutdown();
    hub_->ShutdownObservers();
    service_->Shutdown();
    reflection_->Shutdown();
  }
  absl::Time deadline = absl::Now() + options_.drain_timeout;
  if (front_end_) front_end_->Shutdown(options_.drain_timeout);
  if (grpc_server_) {
    grpc_server_->Shutdown(absl::ToChronoTime(std::max(deadline, absl::Now())));
    grpc_server_->Wait();
  }
  // Streams paused for room in the delivery budget let go now, while the
  // service they belong to still exists.
  if (hub_) hub_->budget().WakeAll();
  // Nothing arrives from the cluster for the hub any more, and publishes
  // still queued for it are answered.
  if (auto* nats = dynamic_cast<NatsBroker*>(broker_.get())) nats->Stop();
  if (pool_) pool_->Stop();
  if (was_serving) spdlog::info("fanoutd stopped");
}

std::string Node::not_serving() const {
  if (!serving()) return "shutting down";
  if (broker_ && !broker_->connected()) {
    return "no connection to the NATS cluster: publishes are refused until it is back";
  }
  return "";
}

void Node::OnBrokerConnection(bool connected) {
  // Under the lock, so that the last news wins, also against Create.
  MutexLock lock(&health_mu_);
  cluster_connected_ = connected;
  if (!health_started_ || stopped_.load()) return;
  health_->SetStatus(kServiceName, connected ? grpc::health::v1::HealthCheckResponse::SERVING
                                             : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

absl::Status Node::Reload() {
  // Each part is re-read on its own: a bad file keeps only its own part as
  // it was, and every failure is reported.
  std::vector<std::string> failed;
  std::vector<std::string> reloaded;
  auto step = [&](const char* what, absl::Status s) {
    if (s.ok()) {
      reloaded.push_back(what);
    } else {
      failed.push_back(std::string(s.message()));
    }
  };
  step("token keys", authority_->Reload());
  step("API tokens", api_tokens_->Reload());
  if (front_end_->tls()) step("TLS certificate", front_end_->ReloadTls());
  if (!reloaded.empty()) spdlog::info("reloaded the {}", absl::StrJoin(reloaded, ", "));
  if (!failed.empty()) return absl::InvalidArgumentError(absl::StrJoin(failed, "; "));
  return absl::OkStatus();
}

std::string Node::Metrics() const {
  std::string out;
  AppendMetrics(&out);
  front_end_->AppendMetrics(&out);
  return out;
}

void Node::AppendMetrics(std::string* out) const {
  auto metric = [&](const char* type, const char* name, const char* help, auto value) {
    absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name,
                    " ", value, "\n");
  };
  absl::StrAppend(out, "# HELP fanout_node_info Constant 1, labelled with the node id.\n",
                  "# TYPE fanout_node_info gauge\nfanout_node_info{node_id=\"", options_.node_id,
                  "\"} 1\n");
  metric("gauge", "fanout_uptime_seconds", "Seconds since the node started.",
         absl::ToInt64Seconds(absl::Now() - started_));
  metric("gauge", "fanout_topics", "Topics with at least one subscriber.",
         hub_->registry().topic_count());
  metric("gauge", "fanout_subscriptions", "Subscriptions over all connections.",
         hub_->registry().subscription_count());
  metric("gauge", "fanout_topics_retained",
         "Topics without subscribers that keep their position (--topic_ttl) or history.",
         hub_->registry().retained_count());
  metric("gauge", "fanout_presence_topics",
         "Topics with presence (--presence) and at least one subscriber counted.",
         hub_->presence().topic_count());
  metric("gauge", "fanout_history_messages", "Messages kept in topic histories.",
         hub_->registry().history_messages());
  metric("gauge", "fanout_history_bytes", "Memory held by topic histories.",
         hub_->registry().history_bytes());
  metric("gauge", "fanout_history_bytes_limit", "--max_history_bytes.",
         hub_->limits().max_history_bytes);
  metric("counter", "fanout_history_evicted_total",
         "Kept messages dropped early to stay within --max_history_bytes.",
         hub_->registry().history_evicted());
  metric("counter", "fanout_messages_in_total", "Messages published (Publish and Broadcast).",
         hub_->messages_in());
  metric("counter", "fanout_bytes_in_total", "Payload bytes published.", hub_->bytes_in());
  metric("gauge", "fanout_pending_publish_bytes",
         "Memory held by accepted deliveries not yet written to a socket.",
         std::max<int64_t>(0, hub_->budget().used()));
  metric("gauge", "fanout_pending_publish_bytes_limit", "--max_pending_publish_bytes.",
         hub_->budget().limit());
  absl::StrAppend(out,
                  "# HELP fanout_publish_rejected_total Publishes and broadcasts refused, by "
                  "reason.\n# TYPE fanout_publish_rejected_total counter\n");
  auto rejected = [&](const char* reason, uint64_t n) {
    absl::StrAppend(out, "fanout_publish_rejected_total{reason=\"", reason, "\"} ", n, "\n");
  };
  rejected("invalid_topic", hub_->rejected(Hub::Rejection::kInvalidTopic));
  rejected("payload_too_large", hub_->rejected(Hub::Rejection::kPayloadTooLarge));
  rejected("overloaded", hub_->rejected(Hub::Rejection::kOverloaded));
  rejected("shutting_down", service_ ? service_->rejected_shutting_down() : 0);
  absl::StrAppend(out,
                  "# HELP fanout_grpc_auth_failures_total fanout.v1.Fanout calls refused for "
                  "their API token, by the code they got.\n"
                  "# TYPE fanout_grpc_auth_failures_total counter\n"
                  "fanout_grpc_auth_failures_total{reason=\"unauthenticated\"} ",
                  api_tokens_->unauthenticated(),
                  "\nfanout_grpc_auth_failures_total{reason=\"permission_denied\"} ",
                  api_tokens_->permission_denied(), "\n");
  metric("gauge", "fanout_watchers", "Open fanout.v1.Fanout/Watch streams.",
         hub_->observer_count());
  broker_->AppendMetrics(out);
}

}  // namespace fanout
