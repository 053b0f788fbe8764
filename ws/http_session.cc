#include "ws/http_session.h"

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/url/parse.hpp>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "ws/front_end.h"
#include "ws/io_threads.h"
#include "ws/web_assets.h"
#include "ws/ws_session.h"

namespace fanout {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

HttpSession::HttpSession(asio::ip::tcp::socket socket, WsFrontEnd* front_end, IoThread* thread)
    : socket_(std::move(socket)), front_end_(front_end), thread_(thread), deadline_(thread->context) {}

void HttpSession::Run() {
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  parser_->body_limit(0);
  deadline_.expires_after(absl::ToChronoMilliseconds(front_end_->options().handshake_timeout));
  deadline_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) {
      beast::error_code ignored;
      self->socket_.close(ignored);  // slow or silent client: give the descriptor back
    }
  });
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
}

void HttpSession::OnRead(beast::error_code ec) {
  if (ec) {
    deadline_.cancel();
    if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
        socket_.is_open()) {
      front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
      Respond(400, absl::StrCat("bad request: ", ec.message(), "\n"));
    }
    return;
  }
  Request req = parser_->release();
  head_ = req.method() == http::verb::head;
  auto target = boost::urls::parse_origin_form(req.target());
  if (!target) {
    deadline_.cancel();
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(400, "malformed request target\n");
  }
  // Encoded path; our paths have nothing to decode.
  boost::core::string_view path = target->encoded_path();
  if (path == "/ws") return HandleUpgrade(req, *target);
  deadline_.cancel();
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    return Respond(405, "method not allowed\n");
  }
  if (path == "/healthz") {
    bool serving = front_end_->hooks().serving ? front_end_->hooks().serving() : true;
    return serving ? Respond(200, "ok\n") : Respond(503, "shutting down\n");
  }
  if (path == "/metrics") {
    std::string text;
    if (front_end_->hooks().metrics) front_end_->hooks().metrics(&text);
    front_end_->AppendMetrics(&text);
    return Respond(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (auto asset = front_end_->options().demo ? FindWebAsset(path) : std::nullopt) {
    return Respond(200, std::string(asset->body), asset->content_type, asset->cross_origin);
  }
  Respond(404, "not found: try /ws, /healthz or /metrics\n");
}

void HttpSession::HandleUpgrade(Request& req, const boost::urls::url_view& target) {
  deadline_.cancel();
  if (!beast::websocket::is_upgrade(req)) {
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(426, "this endpoint speaks WebSocket: send an Upgrade request\n");
  }
  if (front_end_->shutting_down()) {
    front_end_->CountReject(WsFrontEnd::Reject::kShuttingDown);
    return Respond(503, "server is shutting down\n");
  }
  const auto& origins = front_end_->options().allowed_origins;
  if (!origins.empty()) {
    auto it = req.find(http::field::origin);
    std::string origin = it == req.end() ? std::string() : std::string(it->value());
    if (std::find(origins.begin(), origins.end(), origin) == origins.end()) {
      front_end_->CountReject(WsFrontEnd::Reject::kOrigin);
      return Respond(403, absl::StrCat("origin not allowed: '", origin, "'\n"));
    }
  }
  if (front_end_->hub().connection_count() >= front_end_->options().max_connections) {
    front_end_->CountReject(WsFrontEnd::Reject::kTooManyConnections);
    return Respond(503, "too many connections\n");
  }

  std::vector<std::string> topics;
  DeliveryFormat format = DeliveryFormat::kJson;
  for (auto param : target.params()) {
    if (param.key == "topics") {
      for (absl::string_view t : absl::StrSplit(param.value, ',', absl::SkipEmpty())) {
        if (absl::Status s = front_end_->hub().ValidateTopic(t); !s.ok()) {
          front_end_->CountReject(WsFrontEnd::Reject::kBadTopic);
          return Respond(400, absl::StrCat("invalid topic '", t, "': ", s.message(), "\n"));
        }
        topics.emplace_back(t);
      }
    } else if (param.key == "format") {
      if (param.value == "raw") {
        format = DeliveryFormat::kRaw;
      } else if (param.value != "json") {
        front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
        return Respond(400, "format must be json or raw\n");
      }
    }
  }
  if (topics.size() > front_end_->hub().limits().max_subscriptions_per_connection) {
    front_end_->CountReject(WsFrontEnd::Reject::kBadTopic);
    return Respond(400, absl::StrCat("too many topics: the limit is ",
                                     front_end_->hub().limits().max_subscriptions_per_connection,
                                     "\n"));
  }

  Subscriber::Identity identity;
  identity.id = front_end_->NextConnectionId();
  identity.io_index = thread_->index;
  identity.format = format;
  beast::error_code ec;
  auto remote = socket_.remote_endpoint(ec);
  identity.remote_address =
      ec ? std::string("unknown") : absl::StrCat(remote.address().to_string(), ":", remote.port());
  identity.connected_at = absl::Now();
  auto session = std::make_shared<WsSession>(std::move(socket_), std::move(identity), front_end_,
                                             thread_);
  session->Accept(std::move(req), std::move(topics));
}

void HttpSession::Respond(unsigned status, std::string body, const char* content_type,
                          bool cross_origin) {
  response_ = std::make_shared<Response>(static_cast<http::status>(status), 11);
  response_->set(http::field::server, "fanout");
  response_->set(http::field::content_type, content_type);
  if (cross_origin) response_->set(http::field::access_control_allow_origin, "*");
  response_->set(http::field::connection, "close");
  response_->body() = std::move(body);
  response_->prepare_payload();
  response_->keep_alive(false);
  // HEAD gets GET's headers, Content-Length included, and no body.
  if (head_) response_->body().clear();
  http::async_write(socket_, *response_,
                    [self = shared_from_this()](beast::error_code, std::size_t) {
                      beast::error_code ignored;
                      self->socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
                      self->socket_.close(ignored);
                    });
}

}  // namespace fanout
