#include "ws/front_end.h"

#include <boost/asio/post.hpp>
#include <boost/asio/ip/address.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"
#include "ws/http_session.h"
#include "ws/ws_listener.h"
#include "ws/ws_session.h"

namespace fanout {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

absl::StatusOr<tcp::endpoint> ParseEndpoint(const std::string& listen) {
  size_t colon = listen.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", listen,
                                                   "' is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", listen,
                                                   "': host must be an IP address"));
  }
  return tcp::endpoint(address, static_cast<uint16_t>(port));
}

}  // namespace

WsFrontEnd::WsFrontEnd(const WsOptions& options, Hub* hub, IoThreadPool* pool,
                       const Authority* authority, Hooks hooks)
    : options_(options),
      write_delay_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          absl::ToChronoNanoseconds(options.write_delay))),
      hub_(hub),
      pool_(pool),
      authority_(authority),
      hooks_(std::move(hooks)) {}

WsFrontEnd::~WsFrontEnd() = default;

absl::StatusOr<std::unique_ptr<WsFrontEnd>> WsFrontEnd::Create(const WsOptions& options, Hub* hub,
                                                               IoThreadPool* pool,
                                                               const Authority* authority,
                                                               Hooks hooks) {
  auto endpoint = ParseEndpoint(options.listen);
  if (!endpoint.ok()) return endpoint.status();
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together: give both");
  }
  std::unique_ptr<WsFrontEnd> fe(new WsFrontEnd(options, hub, pool, authority, std::move(hooks)));
  if (!options.tls_cert_file.empty()) {
    auto tls = TlsContext::Load(options.tls_cert_file, options.tls_key_file);
    if (!tls.ok()) return tls.status();
    fe->tls_ = std::move(*tls);
  }
  auto listener = std::make_shared<WsListener>(fe.get(), &pool->thread(0));
  if (absl::Status s = listener->Open(*endpoint); !s.ok()) return s;
  fe->endpoint_ = listener->local_endpoint();
  fe->listener_ = std::move(listener);
  return fe;
}

std::string WsFrontEnd::local_address() const {
  std::string host = endpoint_.address().to_string();
  if (endpoint_.address().is_v6()) host = absl::StrCat("[", host, "]");
  return absl::StrCat(host, ":", endpoint_.port());
}

void WsFrontEnd::Start() {
  asio::post(pool_->thread(0).context, [l = listener_] { l->Run(); });
}

WsFrontEnd::Admission WsFrontEnd::AdmitConnection(const std::string& ip) {
  if (open_sockets_.fetch_add(1, std::memory_order_relaxed) >= options_.max_connections) {
    open_sockets_.fetch_sub(1, std::memory_order_relaxed);
    return Admission::kTooManyConnections;
  }
  if (options_.max_connections_per_ip > 0) {
    MutexLock lock(&per_ip_mu_);
    uint32_t& n = per_ip_[ip];
    if (n >= options_.max_connections_per_ip) {
      open_sockets_.fetch_sub(1, std::memory_order_relaxed);
      return Admission::kTooManyFromAddress;
    }
    ++n;
  }
  return Admission::kOk;
}

void WsFrontEnd::OnSocketClosed(const Subscriber::Identity& identity) {
  open_sockets_.fetch_sub(1, std::memory_order_relaxed);
  if (options_.max_connections_per_ip == 0) return;
  MutexLock lock(&per_ip_mu_);
  auto it = per_ip_.find(IpOf(identity.remote_address));
  if (it == per_ip_.end()) return;
  if (--it->second == 0) per_ip_.erase(it);
}

std::string WsFrontEnd::IpOf(const std::string& remote_address) {
  return remote_address.substr(0, remote_address.rfind(':'));
}

void WsFrontEnd::Shutdown(absl::Duration deadline) {
  shutting_down_.store(true, std::memory_order_release);
  asio::post(pool_->thread(0).context, [l = listener_] { l->Close(); });
  for (int i = 0; i < pool_->thread_count(); ++i) {
    IoThread* t = &pool_->thread(i);
    asio::post(t->context, [t] {
      // Requests not yet answered are dropped: their clients retry elsewhere.
      HttpSession::DropAll(t);
      // Copy: closing may finish synchronously and erase from the set.
      std::vector<WsSession*> open(t->sessions.begin(), t->sessions.end());
      for (WsSession* s : open) s->CloseOnIoThread(kCloseGoingAway, "server shutting down");
    });
  }
  // Wait for the close handshakes; each is bounded by the handshake timeout.
  absl::Time until = absl::Now() + deadline;
  auto open = [&] {
    return pool_->Sum(&IoThreadStats::sockets) + pool_->Sum(&IoThreadStats::handshakes);
  };
  while (open() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  if (open() > 0) spdlog::warn("shutdown: {} connections still open at the deadline", open());
}

void WsFrontEnd::AppendMetrics(std::string* out) const {
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name, " ",
                    value, "\n");
  };
  auto gauge = [&](const char* name, const char* help, int64_t value) {
    absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " gauge\n", name, " ",
                    value, "\n");
  };
  const IoThreadPool& p = *pool_;
  int64_t registered = static_cast<int64_t>(hub_->connection_count());
  gauge("fanout_connections", "Open WebSocket connections (registered, receiving).", registered);
  const int64_t authenticating = p.Sum(&IoThreadStats::authenticating);
  gauge("fanout_connections_authenticating",
        "WebSocket connections upgraded without a token, waiting for their auth op.",
        authenticating);
  gauge("fanout_connections_closing",
        "WebSocket connections whose close handshake is under way (they hold a socket, no longer "
        "receive).",
        std::max<int64_t>(0, p.Sum(&IoThreadStats::sockets) - registered - authenticating));
  gauge("fanout_handshakes_in_progress",
        "HTTP connections that have not yet sent a complete request or been upgraded.",
        p.Sum(&IoThreadStats::handshakes));
  counter("fanout_connections_accepted_total", "WebSocket upgrades accepted.",
          accepted_.load(std::memory_order_relaxed));
  absl::StrAppend(out,
                  "# HELP fanout_connections_rejected_total HTTP requests and upgrades refused, "
                  "by reason.\n# TYPE fanout_connections_rejected_total counter\n");
  static constexpr const char* kReasons[] = {"bad_request",          "bad_topic",
                                             "origin",               "too_many_connections",
                                             "too_many_per_address", "too_many_topics",
                                             "unauthorized",         "forbidden",
                                             "shutting_down"};
  static_assert(sizeof(kReasons) / sizeof(kReasons[0]) == static_cast<int>(Reject::kCount));
  for (int i = 0; i < static_cast<int>(Reject::kCount); ++i) {
    absl::StrAppend(out, "fanout_connections_rejected_total{reason=\"", kReasons[i], "\"} ",
                    rejects_[i].load(std::memory_order_relaxed), "\n");
  }
  counter("fanout_messages_out_total", "Frames handed to WebSocket connections.",
          p.Sum(&IoThreadStats::messages_out));
  counter("fanout_bytes_out_total", "Bytes of frames handed to WebSocket connections.",
          p.Sum(&IoThreadStats::bytes_out));
  counter("fanout_client_messages_in_total", "Messages received from WebSocket clients.",
          p.Sum(&IoThreadStats::client_messages_in));
  counter("fanout_client_bytes_in_total", "Bytes received from WebSocket clients.",
          p.Sum(&IoThreadStats::client_bytes_in));
  counter("fanout_slow_client_disconnects_total",
          "Connections closed because their outbound queue overflowed.",
          p.Sum(&IoThreadStats::slow_disconnects));
  counter("fanout_conflated_total",
          "Deliveries skipped for conflating subscribers that fell behind (a newer one took their "
          "place).",
          p.Sum(&IoThreadStats::conflated));
  counter("fanout_rate_limit_disconnects_total",
          "Connections closed for sending messages too fast.",
          p.Sum(&IoThreadStats::rate_limit_disconnects));
  counter("fanout_client_errors_total", "Control messages answered with an error.",
          p.Sum(&IoThreadStats::control_errors));
  counter("fanout_protocol_error_disconnects_total",
          "Connections failed for breaking the WebSocket protocol (close 1002 or 1007).",
          p.Sum(&IoThreadStats::protocol_errors));
  counter("fanout_message_too_big_disconnects_total",
          "Connections closed for sending a message over --max_inbound_message_bytes (1009).",
          p.Sum(&IoThreadStats::too_big_disconnects));
  counter("fanout_idle_disconnects_total",
          "Connections closed after --idle_timeout without a byte from the client.",
          p.Sum(&IoThreadStats::idle_disconnects));
  counter("fanout_close_timeouts_total",
          "Close handshakes the client did not finish within --handshake_timeout.",
          p.Sum(&IoThreadStats::close_timeouts));
  counter("fanout_handshake_timeouts_total",
          "HTTP connections dropped for not completing a request within --handshake_timeout.",
          p.Sum(&IoThreadStats::handshake_timeouts));
  counter("fanout_tls_handshake_failures_total",
          "Connections to the TLS port that were not TLS or whose TLS handshake failed.",
          p.Sum(&IoThreadStats::tls_handshake_failures));
  counter("fanout_auth_failures_total",
          "Tokens refused on the auth or refresh op, and connections that sent none in time "
          "(refused upgrades count in fanout_connections_rejected_total).",
          p.Sum(&IoThreadStats::auth_failures));
  counter("fanout_token_expirations_total",
          "Connections closed with 4002 because their token ran out unrefreshed.",
          p.Sum(&IoThreadStats::token_expirations));
  counter("fanout_handshakes_dropped_total",
          "Handshakes in progress dropped, oldest first, to make room under "
          "--max_pending_handshakes.",
          p.Sum(&IoThreadStats::handshakes_dropped));
}

}  // namespace fanout
