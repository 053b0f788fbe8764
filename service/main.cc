// fanoutd: a standalone fanout node. Parses flags (environment variables
// FANOUT_<FLAG> are fallbacks), starts the node, prints the bound addresses as
// one JSON line on stdout, and stops gracefully on SIGTERM or SIGINT.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "service/node.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, grpc_listen, "127.0.0.1:50051", "gRPC API address, HOST:PORT (port 0: any free port)");
ABSL_FLAG(std::string, ws_listen, "0.0.0.0:8080",
          "WebSocket and HTTP (/ws, /healthz, /metrics) address, HOST:PORT (port 0: any free port)");
ABSL_FLAG(int, io_threads, 0, "I/O threads for WebSocket connections (0: one per core)");
ABSL_FLAG(int, registry_stripes, 64, "Lock stripes of the topic registry");
ABSL_FLAG(std::string, node_id, "", "Node id reported by GetStats and metrics (default HOSTNAME-PID)");
ABSL_FLAG(int64_t, max_connections, 100000,
          "Most open WebSocket connections (closing ones included); more get HTTP 503");
ABSL_FLAG(int64_t, max_connections_per_ip, 0,
          "Most WebSocket connections from one client IP; more get HTTP 429 (0: no limit)");
ABSL_FLAG(int64_t, max_pending_handshakes, 10000,
          "Most HTTP connections not yet upgraded or answered; at the limit the oldest is dropped");
ABSL_FLAG(int64_t, max_topics, 1000000,
          "Most topics with subscribers on the node; a subscription to one more is refused");
ABSL_FLAG(int64_t, max_pending_publish_bytes, int64_t{64} << 20,
          "Memory accepted deliveries may hold until written; over it publishes get "
          "RESOURCE_EXHAUSTED and PublishStream is read no further");
ABSL_FLAG(int64_t, max_watch_queue_bytes, int64_t{4} << 20,
          "Bytes of events a Watch stream may fall behind before it is cut off");
ABSL_FLAG(int64_t, max_watch_queue_messages, 10000,
          "Events a Watch stream may fall behind before it is cut off");
ABSL_FLAG(int64_t, max_watchers, 100, "Most Watch streams open at once; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_subscriptions_per_connection, 1000, "Most topics one connection may subscribe to");
ABSL_FLAG(int64_t, max_topic_length, 256, "Longest topic name in bytes");
ABSL_FLAG(int64_t, max_payload_bytes, 1 << 20, "Largest publish payload in bytes");
ABSL_FLAG(int64_t, max_outbound_queue_bytes, 4 << 20,
          "Bytes queued for one connection (every frame, control frames included) before it is "
          "closed as a slow consumer (4008); must hold the largest frame a publish can make");
ABSL_FLAG(int64_t, max_inbound_message_bytes, 64 << 10,
          "Largest message a client may send; larger closes with 1009");
ABSL_FLAG(double, client_messages_per_second, 100, "Sustained control messages per second per client");
ABSL_FLAG(double, client_message_burst, 200, "Control messages a client may send in a burst");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(10),
          "Time allowed for the HTTP request, upgrade and close handshake");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Seconds(60),
          "Close a connection silent for this long (pinged at half of it)");
ABSL_FLAG(absl::Duration, write_delay, absl::ZeroDuration(),
          "Hold deliveries to a connection that wrote less than this ago for up to this long, "
          "so busy clients get several messages per write (less CPU, up to this much latency); "
          "0: write at once");
ABSL_FLAG(std::vector<std::string>, allowed_origins, {},
          "Comma-separated Origin values allowed to connect (empty: any)");
ABSL_FLAG(bool, demo, true, "Serve the browser library at /client/fanout.js and the demo page at /demo");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "On SIGTERM, how long to wait for WebSocket closes and gRPC calls");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error, off");
ABSL_FLAG(std::string, jwt_secret_file, "",
          "File holding the HMAC secret that verifies HS256/384/512 client tokens");
ABSL_FLAG(std::string, jwt_public_key_file, "",
          "PEM public key (RSA or EC) that verifies RS256/384/512 or ES256/384 client tokens");
ABSL_FLAG(std::string, jwt_jwks_file, "", "JWKS document whose keys (by kid) verify client tokens");
ABSL_FLAG(std::string, jwt_issuer, "", "When set, client tokens must carry this 'iss'");
ABSL_FLAG(std::string, jwt_audience, "", "When set, client tokens' 'aud' must include this");
ABSL_FLAG(absl::Duration, jwt_leeway, absl::Seconds(30), "Clock skew allowed on 'exp' and 'nbf'");
ABSL_FLAG(bool, allow_anonymous, false,
          "With token keys: let clients without a token in, limited to --anonymous_subscribe and "
          "--anonymous_publish");
ABSL_FLAG(std::vector<std::string>, anonymous_subscribe, {},
          "Topic patterns anonymous clients may subscribe to on a node with token keys");
ABSL_FLAG(std::vector<std::string>, anonymous_publish, {},
          "Topic patterns anonymous clients may publish to (default none)");
ABSL_FLAG(std::string, grpc_token_file, "",
          "File holding the bearer token every fanout.v1.Fanout call needs (health and reflection "
          "stay open)");
ABSL_FLAG(std::string, grpc_publish_token_file, "",
          "File holding a bearer token that may call only Publish, Broadcast, PublishBatch and "
          "PublishStream");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate (chain): with --tls_key_file, the WebSocket port speaks wss:// and "
          "https:// and the gRPC port TLS (re-read on SIGHUP; gRPC re-reads it every 10 s)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: gRPC clients must present a certificate it signed (mTLS)");
ABSL_FLAG(std::vector<std::string>, nats, {},
          "Cluster mode: comma-separated NATS server URLs (nats://HOST:PORT) of a NATS cluster "
          "with JetStream; empty: a standalone node");
ABSL_FLAG(int, nats_replicas, 3,
          "Replicas of the JetStream stream FANOUT that numbers publishes, when this node creates "
          "it (1 for a single nats-server)");
ABSL_FLAG(int, nats_publish_workers, 8, "Threads publishing into JetStream (topics committing at once)");
ABSL_FLAG(std::vector<std::string>, conflate, {},
          "Topic patterns whose subscriptions conflate: a subscriber that falls behind gets only "
          "the newest message of each topic, told how many it skipped");
ABSL_FLAG(std::vector<std::string>, presence, {},
          "Topic patterns that keep presence (who is subscribed, by user: the Presence rpc, "
          "the presence op and join/leave events), e.g. chat.>,room.*; empty: none");
ABSL_FLAG(int64_t, history_size, 0,
          "Messages each topic keeps for recovery (standalone node; 0: no history)");
ABSL_FLAG(absl::Duration, history_ttl, absl::Minutes(10), "How long a kept message stays, e.g. 600s or 10m");
ABSL_FLAG(std::string, history, "",
          "History by pattern, first match wins: PATTERN:SIZE:TTL,... e.g. chat.>:100:10m,news.*:10:1h");
ABSL_FLAG(absl::Duration, topic_ttl, absl::Minutes(5),
          "How long a topic without subscribers keeps its position (seq and epoch)");
ABSL_FLAG(int64_t, max_retained_topics, 100000,
          "Most topics kept without subscribers; beyond it a topic is forgotten when its last "
          "subscriber leaves");
ABSL_FLAG(int64_t, max_history_bytes, int64_t{64} << 20,
          "Memory all topics' history may hold; beyond it the oldest messages go first");

namespace {

// Flags given on the command line win; FANOUT_<NAME> environment variables
// fill in the rest. They are placed before the real arguments, and the last
// occurrence of a flag wins.
std::vector<char*> WithEnvironmentFlags(int argc, char** argv, std::vector<std::string>* storage) {
  static const char* kNames[] = {
      "grpc_listen", "ws_listen", "io_threads", "registry_stripes", "node_id",
      "max_connections", "max_connections_per_ip", "max_pending_handshakes", "max_topics",
      "max_pending_publish_bytes", "max_watch_queue_bytes", "max_watch_queue_messages", "max_watchers",
      "max_subscriptions_per_connection", "max_topic_length",
      "max_payload_bytes", "max_outbound_queue_bytes", "max_inbound_message_bytes",
      "client_messages_per_second", "client_message_burst", "handshake_timeout",
      "idle_timeout", "write_delay", "allowed_origins", "demo", "drain_timeout", "log_level",
      "jwt_secret_file", "jwt_public_key_file", "jwt_jwks_file", "jwt_issuer", "jwt_audience",
      "jwt_leeway", "allow_anonymous", "anonymous_subscribe", "anonymous_publish",
      "grpc_token_file", "grpc_publish_token_file", "tls_cert_file", "tls_key_file",
      "tls_client_ca_file", "nats", "nats_replicas", "nats_publish_workers", "history_size",
      "history_ttl", "history", "topic_ttl", "max_retained_topics", "max_history_bytes",
      "conflate", "presence"};
  for (const char* name : kNames) {
    std::string env = absl::StrCat("FANOUT_", absl::AsciiStrToUpper(name));
    if (const char* value = std::getenv(env.c_str())) storage->push_back(absl::StrCat("--", name, "=", value));
  }
  std::vector<char*> args;
  args.push_back(argv[0]);
  for (auto& s : *storage) args.push_back(s.data());
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  return args;
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "fanoutd: %s\n", message.c_str());
  std::exit(2);
}

size_t Positive(int64_t v, const char* name) {
  if (v < 1) Die(absl::StrCat("--", name, " must be at least 1"));
  return static_cast<size_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
  // gRPC locks absl::Mutex on every call, and Debian's abseil checks each
  // lock against a graph of lock orders (deadlock detection, meant for
  // debug builds): 6% of the server's cycles under PublishStream. Our own
  // locks are std::mutex (core/mutex.h) and TSan checks their order in CI.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "fans messages published over gRPC out to WebSocket clients.\n"
      "Every flag can also be set with the environment variable FANOUT_<FLAG>.\n"
      "Usage: fanoutd [--grpc_listen=HOST:PORT] [--ws_listen=HOST:PORT] [flags]");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "service/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> env_storage;
  std::vector<char*> args = WithEnvironmentFlags(argc, argv, &env_storage);
  absl::ParseCommandLine(static_cast<int>(args.size()) - 1, args.data());

  auto logger = spdlog::stderr_color_mt("fanoutd");
  spdlog::set_default_logger(logger);
  auto level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    Die("--log_level must be trace, debug, info, warn, error or off");
  }
  spdlog::set_level(level);

  fanout::NodeOptions options;
  options.grpc_listen = absl::GetFlag(FLAGS_grpc_listen);
  options.ws.listen = absl::GetFlag(FLAGS_ws_listen);
  int threads = absl::GetFlag(FLAGS_io_threads);
  if (threads < 0) Die("--io_threads must be 0 (one per core) or more");
  options.ws.io_threads = threads == 0 ? std::max(1u, std::thread::hardware_concurrency()) : threads;
  options.registry_stripes = Positive(absl::GetFlag(FLAGS_registry_stripes), "registry_stripes");
  options.node_id = absl::GetFlag(FLAGS_node_id);
  options.ws.max_connections = Positive(absl::GetFlag(FLAGS_max_connections), "max_connections");
  if (absl::GetFlag(FLAGS_max_connections_per_ip) < 0) Die("--max_connections_per_ip must be 0 or more");
  options.ws.max_connections_per_ip = static_cast<size_t>(absl::GetFlag(FLAGS_max_connections_per_ip));
  options.ws.max_pending_handshakes =
      Positive(absl::GetFlag(FLAGS_max_pending_handshakes), "max_pending_handshakes");
  options.limits.max_topics = Positive(absl::GetFlag(FLAGS_max_topics), "max_topics");
  options.limits.max_pending_publish_bytes = static_cast<int64_t>(
      Positive(absl::GetFlag(FLAGS_max_pending_publish_bytes), "max_pending_publish_bytes"));
  if (absl::GetFlag(FLAGS_history_size) < 0) Die("--history_size must be 0 or more");
  if (absl::GetFlag(FLAGS_history_ttl) < absl::ZeroDuration()) Die("--history_ttl must not be negative");
  if (absl::GetFlag(FLAGS_topic_ttl) < absl::ZeroDuration()) Die("--topic_ttl must not be negative");
  if (absl::GetFlag(FLAGS_max_retained_topics) < 0) Die("--max_retained_topics must be 0 or more");
  options.topic_ttl = absl::GetFlag(FLAGS_topic_ttl);
  options.limits.max_retained_topics = static_cast<size_t>(absl::GetFlag(FLAGS_max_retained_topics));
  options.limits.max_history_bytes = static_cast<int64_t>(
      Positive(absl::GetFlag(FLAGS_max_history_bytes), "max_history_bytes"));
  options.watch.max_bytes = static_cast<int64_t>(
      Positive(absl::GetFlag(FLAGS_max_watch_queue_bytes), "max_watch_queue_bytes"));
  options.watch.max_messages =
      Positive(absl::GetFlag(FLAGS_max_watch_queue_messages), "max_watch_queue_messages");
  options.watch.max_watchers = Positive(absl::GetFlag(FLAGS_max_watchers), "max_watchers");
  options.limits.max_subscriptions_per_connection =
      Positive(absl::GetFlag(FLAGS_max_subscriptions_per_connection), "max_subscriptions_per_connection");
  options.limits.max_topic_length = Positive(absl::GetFlag(FLAGS_max_topic_length), "max_topic_length");
  {
    auto history = fanout::HistoryConfig::Parse(
        {.size = static_cast<size_t>(absl::GetFlag(FLAGS_history_size)),
         .ttl = absl::GetFlag(FLAGS_history_ttl)},
        absl::GetFlag(FLAGS_history), options.limits.max_topic_length);
    if (!history.ok()) Die(std::string(history.status().message()));
    options.history = *std::move(history);
  }
  for (const std::string& text : absl::GetFlag(FLAGS_conflate)) {
    auto pattern = fanout::TopicPattern::Parse(text, options.limits.max_topic_length);
    if (!pattern.ok()) Die(absl::StrCat("--conflate '", text, "': ", pattern.status().message()));
    options.ws.conflate.push_back(*std::move(pattern));
  }
  for (const std::string& text : absl::GetFlag(FLAGS_presence)) {
    auto pattern = fanout::TopicPattern::Parse(text, options.limits.max_topic_length);
    if (!pattern.ok()) Die(absl::StrCat("--presence '", text, "': ", pattern.status().message()));
    options.presence.push_back(*std::move(pattern));
  }
  options.limits.max_payload_bytes = Positive(absl::GetFlag(FLAGS_max_payload_bytes), "max_payload_bytes");
  if (options.limits.max_payload_bytes > (512u << 20)) Die("--max_payload_bytes must be at most 512 MiB");
  options.ws.max_outbound_queue_bytes =
      Positive(absl::GetFlag(FLAGS_max_outbound_queue_bytes), "max_outbound_queue_bytes");
  options.ws.max_inbound_message_bytes =
      Positive(absl::GetFlag(FLAGS_max_inbound_message_bytes), "max_inbound_message_bytes");
  options.ws.client_messages_per_second = absl::GetFlag(FLAGS_client_messages_per_second);
  options.ws.client_message_burst = absl::GetFlag(FLAGS_client_message_burst);
  if (options.ws.client_messages_per_second <= 0 || options.ws.client_message_burst < 1) {
    Die("--client_messages_per_second must be positive and --client_message_burst at least 1");
  }
  options.ws.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  options.ws.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.ws.write_delay = absl::GetFlag(FLAGS_write_delay);
  if (options.ws.write_delay < absl::ZeroDuration() || options.ws.write_delay > absl::Seconds(10)) {
    Die("--write_delay must be between 0 and 10s");
  }
  if (options.ws.handshake_timeout <= absl::ZeroDuration() || options.ws.idle_timeout <= absl::ZeroDuration()) {
    Die("--handshake_timeout and --idle_timeout must be positive");
  }
  options.ws.allowed_origins = absl::GetFlag(FLAGS_allowed_origins);
  options.ws.demo = absl::GetFlag(FLAGS_demo);
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  options.auth.tokens.secret_file = absl::GetFlag(FLAGS_jwt_secret_file);
  options.auth.tokens.public_key_file = absl::GetFlag(FLAGS_jwt_public_key_file);
  options.auth.tokens.jwks_file = absl::GetFlag(FLAGS_jwt_jwks_file);
  options.auth.tokens.issuer = absl::GetFlag(FLAGS_jwt_issuer);
  options.auth.tokens.audience = absl::GetFlag(FLAGS_jwt_audience);
  options.auth.tokens.leeway = absl::GetFlag(FLAGS_jwt_leeway);
  if (options.auth.tokens.leeway < absl::ZeroDuration()) Die("--jwt_leeway must not be negative");
  options.auth.allow_anonymous = absl::GetFlag(FLAGS_allow_anonymous);
  options.auth.anonymous_subscribe = absl::GetFlag(FLAGS_anonymous_subscribe);
  options.auth.anonymous_publish = absl::GetFlag(FLAGS_anonymous_publish);
  options.api_tokens.token_file = absl::GetFlag(FLAGS_grpc_token_file);
  options.api_tokens.publish_token_file = absl::GetFlag(FLAGS_grpc_publish_token_file);
  options.ws.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.ws.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  for (const auto& url : absl::GetFlag(FLAGS_nats)) {
    if (!url.empty()) options.nats_servers.push_back(url);
  }
  options.nats_replicas = absl::GetFlag(FLAGS_nats_replicas);
  options.nats_publish_workers = absl::GetFlag(FLAGS_nats_publish_workers);

  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Sockets are files: take the open-files limit the system allows (the soft
  // limit is often 1024) and say so when the connection limits exceed it.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
    if (files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
    size_t wanted = options.ws.max_connections + options.ws.max_pending_handshakes + 64;
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < wanted) {
      spdlog::warn(
          "the open-files limit ({}) is below --max_connections + --max_pending_handshakes ({}): "
          "upgrades past it fail at accept; raise the limit (ulimit -n, LimitNOFILE=) or lower "
          "the flags",
          files.rlim_cur, wanted);
    }
  }

  auto node = fanout::Node::Create(options);
  if (!node.ok()) Die(std::string(node.status().message()));
  std::printf("{\"grpc\":\"%s\",\"ws\":\"%s\"}\n", (*node)->grpc_address().c_str(),
              (*node)->ws_address().c_str());
  std::fflush(stdout);

  int sig = 0;
  while (true) {
    sigwait(&stop_signals, &sig);
    if (sig != SIGHUP) break;
    // Key (and certificate) rotation without a restart.
    if (absl::Status s = (*node)->Reload(); !s.ok()) {
      spdlog::error("SIGHUP: reload failed, keeping what was in use: {}", std::string(s.message()));
    }
  }
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*node)->Shutdown();
  return 0;
}
