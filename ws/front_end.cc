#include "ws/front_end.h"

#include <boost/asio/post.hpp>
#include <boost/asio/ip/address.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"
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

WsFrontEnd::WsFrontEnd(const WsOptions& options, Hub* hub, IoThreadPool* pool, Hooks hooks)
    : options_(options), hub_(hub), pool_(pool), hooks_(std::move(hooks)) {}

WsFrontEnd::~WsFrontEnd() = default;

absl::StatusOr<std::unique_ptr<WsFrontEnd>> WsFrontEnd::Create(const WsOptions& options, Hub* hub,
                                                               IoThreadPool* pool, Hooks hooks) {
  auto endpoint = ParseEndpoint(options.listen);
  if (!endpoint.ok()) return endpoint.status();
  std::unique_ptr<WsFrontEnd> fe(new WsFrontEnd(options, hub, pool, std::move(hooks)));
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

void WsFrontEnd::Shutdown(absl::Duration deadline) {
  shutting_down_.store(true, std::memory_order_release);
  asio::post(pool_->thread(0).context, [l = listener_] { l->Close(); });
  for (int i = 0; i < pool_->thread_count(); ++i) {
    IoThread* t = &pool_->thread(i);
    asio::post(t->context, [t] {
      // Copy: closing may finish synchronously and erase from the set.
      std::vector<WsSession*> open(t->sessions.begin(), t->sessions.end());
      for (WsSession* s : open) s->CloseOnIoThread(kCloseGoingAway, "server shutting down");
    });
  }
  // Wait for the close handshakes; each is bounded by the handshake timeout.
  absl::Time until = absl::Now() + deadline;
  while (hub_->connection_count() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (hub_->connection_count() > 0) {
    spdlog::warn("shutdown: {} connections still open at the deadline", hub_->connection_count());
  }
}

void WsFrontEnd::AppendMetrics(std::string* out) const {
  auto counter = [&](const char* name, const char* help, uint64_t value) {
    absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " counter\n", name, " ",
                    value, "\n");
  };
  const IoThreadPool& p = *pool_;
  absl::StrAppend(out,
                  "# HELP fanout_connections Open WebSocket connections.\n"
                  "# TYPE fanout_connections gauge\nfanout_connections ",
                  hub_->connection_count(), "\n");
  counter("fanout_connections_accepted_total", "WebSocket upgrades accepted.",
          accepted_.load(std::memory_order_relaxed));
  absl::StrAppend(out,
                  "# HELP fanout_connections_rejected_total HTTP requests and upgrades refused, "
                  "by reason.\n# TYPE fanout_connections_rejected_total counter\n");
  static constexpr const char* kReasons[] = {"bad_request", "bad_topic", "origin",
                                             "too_many_connections", "shutting_down"};
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
  counter("fanout_rate_limit_disconnects_total",
          "Connections closed for sending messages too fast.",
          p.Sum(&IoThreadStats::rate_limit_disconnects));
  counter("fanout_client_errors_total", "Control messages answered with an error.",
          p.Sum(&IoThreadStats::control_errors));
}

}  // namespace fanout
