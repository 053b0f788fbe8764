#include "ws/http_session.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/url/parse.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "ws/front_end.h"
#include "ws/io_threads.h"
#include "ws/upgrade_request.h"
#include "ws/web_assets.h"
#include "ws/ws_session.h"

namespace fanout {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::string Base64(const unsigned char* data, size_t size) {
  std::string out(4 * ((size + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(static_cast<size_t>(n));
  return out;
}

// A Sec-WebSocket-Key is the base64 of 16 bytes (RFC 6455, section 4.1).
bool IsValidKey(absl::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  unsigned char out[18];
  return EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(key.data()), 24) == 18;
}

// The complete text of a small HTTP response that closes the connection.
std::string ResponseText(unsigned status, absl::string_view body) {
  auto reason = http::obsolete_reason(static_cast<http::status>(status));
  return absl::StrCat("HTTP/1.1 ", status, " ", absl::string_view(reason.data(), reason.size()),
                      "\r\nServer: fanout\r\nContent-Type: text/plain\r\nContent-Length: ",
                      body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

std::string HttpSession::AcceptKey(std::string_view key) {
  static constexpr char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input = absl::StrCat(absl::string_view(key.data(), key.size()), kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return Base64(digest, sizeof(digest));
}

namespace {

Transport MakeTransport(asio::ip::tcp::socket socket, WsFrontEnd* front_end) {
  if (!front_end->tls()) return Transport(std::move(socket));
  SSL* ssl = front_end->tls()->NewSsl();
  if (!ssl) {
    // Out of memory: the connection is closed at once rather than served
    // in plain text.
    beast::error_code ignored;
    socket.close(ignored);
    return Transport(std::move(socket));
  }
  return Transport(std::move(socket), ssl);
}

}  // namespace

HttpSession::HttpSession(asio::ip::tcp::socket socket, const asio::ip::tcp::endpoint& peer,
                         WsFrontEnd* front_end, IoThread* thread)
    : socket_(MakeTransport(std::move(socket), front_end)),
      peer_(peer),
      front_end_(front_end),
      thread_(thread) {
  fifo_.owner = this;
}

// Every path out of a handshake calls Leave() first; the destructor only
// runs after one of them (or at process teardown, when counts do not matter).
HttpSession::~HttpSession() = default;

void HttpSession::Run() {
  // Room for one more: at the limit, the thread's oldest handshake goes.
  const size_t threads = static_cast<size_t>(front_end_->pool().thread_count());
  const size_t cap = std::max<size_t>(1, (front_end_->options().max_pending_handshakes + threads - 1) /
                                             threads);
  while (thread_->handshake_count >= cap && thread_->handshakes.linked()) {
    HttpSession* oldest = static_cast<FifoNode*>(thread_->handshakes.next)->owner;
    IoThreadStats::Add(thread_->stats.handshakes_dropped, 1);
    oldest->Drop();
  }
  thread_->handshakes.InsertBefore(&fifo_);
  ++thread_->handshake_count;
  IoThreadStats::Add(thread_->stats.handshakes, 1);
  pending_ = true;
  TimerWheel::Entry* entry = this;
  thread_->wheel->Schedule(entry, TimerWheel::Clock::now() + absl::ToChronoMilliseconds(
                                                                 front_end_->options().handshake_timeout));

  if (!socket_.is_open()) return Drop();
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  parser_->body_limit(0);
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
}

void HttpSession::Leave() {
  if (!pending_) return;
  pending_ = false;
  fifo_.Unlink();
  --thread_->handshake_count;
  IoThreadStats::Add(thread_->stats.handshakes, -1);
  TimerWheel::Entry* entry = this;
  thread_->wheel->Cancel(entry);
}

void HttpSession::Drop() {
  Leave();
  beast::error_code ignored;
  socket_.close(ignored);  // the pending read or write ends
}

void HttpSession::OnDeadline() {
  // A client that has not sent its request (or read our answer) in time.
  IoThreadStats::Add(thread_->stats.handshake_timeouts, 1);
  Drop();
}

void HttpSession::DropAll(IoThread* thread) {
  while (thread->handshakes.linked()) static_cast<FifoNode*>(thread->handshakes.next)->owner->Drop();
}

void HttpSession::OnRead(beast::error_code ec) {
  if (ec) {
    if (socket_.tls() && ec.value() == EPROTO && ec.category() == boost::system::system_category()) {
      // Not TLS (a plain-text request on a TLS port) or a failed handshake:
      // there is no channel to answer on.
      IoThreadStats::Add(thread_->stats.tls_handshake_failures, 1);
      return Drop();
    }
    if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
        socket_.is_open()) {
      front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
      return Respond(400, absl::StrCat("bad request: ", ec.message(), "\n"));
    }
    return Leave();
  }
  Request req = parser_->release();
  parser_.reset();
  head_ = req.method() == http::verb::head;
  auto target = boost::urls::parse_origin_form(req.target());
  if (!target) {
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(400, "malformed request target\n");
  }
  // Encoded path; our paths have nothing to decode.
  boost::core::string_view path = target->encoded_path();
  if (path == "/ws") return HandleUpgrade(req, *target);
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    return Respond(405, "method not allowed\n");
  }
  if (path == "/healthz") {
    std::string why = front_end_->hooks().not_serving ? front_end_->hooks().not_serving() : "";
    return why.empty() ? Respond(200, "ok\n") : Respond(503, why + "\n");
  }
  if (path == "/metrics") {
    std::string text;
    if (front_end_->hooks().metrics) front_end_->hooks().metrics(&text);
    front_end_->AppendMetrics(&text);
    return Respond(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
  }
  if (auto asset = front_end_->options().demo ? FindWebAsset(path) : std::nullopt) {
    // The library may be imported by pages of any origin.
    return Respond(200, std::string(asset->body), asset->content_type,
                   asset->cross_origin ? Header{"Access-Control-Allow-Origin", "*"}
                                       : Header{nullptr, nullptr});
  }
  Respond(404, front_end_->options().demo
                   ? "not found: try /ws, /healthz, /metrics, /demo or /client/fanout.js\n"
                   : "not found: try /ws, /healthz or /metrics\n");
}

void HttpSession::HandleUpgrade(Request& req, const boost::urls::url_view& target) {
  if (!beast::websocket::is_upgrade(req)) {
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(426, "this endpoint speaks WebSocket: send an Upgrade request\n", "text/plain",
                   {"Sec-WebSocket-Version", "13"});
  }
  if (req[http::field::sec_websocket_version] != "13") {
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(426, "unsupported Sec-WebSocket-Version: this server speaks 13\n", "text/plain",
                   {"Sec-WebSocket-Version", "13"});
  }
  auto key_field = req[http::field::sec_websocket_key];
  absl::string_view key(key_field.data(), key_field.size());
  if (!IsValidKey(key)) {
    front_end_->CountReject(WsFrontEnd::Reject::kBadRequest);
    return Respond(400, "missing or malformed Sec-WebSocket-Key\n");
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

  auto parsed = ParseUpgradeParams(
      target, {.max_topic_length = front_end_->hub().limits().max_topic_length,
               .max_topics = front_end_->hub().limits().max_subscriptions_per_connection});
  if (auto* refusal = std::get_if<UpgradeRefusal>(&parsed)) {
    front_end_->CountReject(refusal->bad_topic ? WsFrontEnd::Reject::kBadTopic
                                               : WsFrontEnd::Reject::kBadRequest);
    return Respond(refusal->status, std::move(refusal->body));
  }
  auto& [topics, format, token, raw_publish, since] = std::get<UpgradeParams>(parsed);

  // Who is this? A token on the URL or in an Authorization header, the
  // node's anonymous rules, or (when the node requires tokens) the first
  // control message.
  if (token.empty()) {
    auto it = req.find(http::field::authorization);
    if (it != req.end() && it->value().size() > 7 &&
        absl::EqualsIgnoreCase(absl::string_view(it->value().data(), 7), "Bearer ")) {
      token = std::string(it->value().substr(7));
    }
  }
  const Authority& authority = front_end_->authority();
  std::optional<Grant> grant;
  if (!token.empty() && authority.requires_tokens()) {
    auto g = authority.Authenticate(token);
    if (!g.ok()) {
      front_end_->CountReject(WsFrontEnd::Reject::kUnauthorized);
      return Respond(401, absl::StrCat("invalid token: ", g.status().message(), "\n"));
    }
    grant = *std::move(g);
  } else if (const Grant* anonymous = authority.anonymous()) {
    // (A node without keys checks no token: a client that sends one is
    // anonymous like every other.)
    grant = *anonymous;
    if (authority.requires_tokens()) {
      // Anonymous clients on a node with keys: what the URL names must be
      // theirs to use, or it needs a token.
      for (const auto& t : topics) {
        if (!grant->permissions->MaySubscribeTopicOrPattern(t)) {
          front_end_->CountReject(WsFrontEnd::Reject::kUnauthorized);
          return Respond(401, absl::StrCat("a token is required to subscribe to '", t, "'\n"));
        }
      }
      if (!raw_publish.empty() && !grant->permissions->MayPublish(raw_publish)) {
        front_end_->CountReject(WsFrontEnd::Reject::kUnauthorized);
        return Respond(401, absl::StrCat("a token is required to publish to '", raw_publish, "'\n"));
      }
    }
  } else if (!topics.empty() || !raw_publish.empty()) {
    // Its topics cannot be checked without a token.
    front_end_->CountReject(WsFrontEnd::Reject::kUnauthorized);
    return Respond(401,
                   "a token is required: send ?token= or an Authorization: Bearer header, or "
                   "connect without topics and send {\"op\":\"auth\"} first\n");
  }
  if (grant) {
    for (const auto& t : topics) {
      if (!grant->permissions->MaySubscribeTopicOrPattern(t)) {
        front_end_->CountReject(WsFrontEnd::Reject::kForbidden);
        return Respond(403, absl::StrCat("not permitted to subscribe to '", t, "'\n"));
      }
    }
    if (!raw_publish.empty() && !grant->permissions->MayPublish(raw_publish)) {
      front_end_->CountReject(WsFrontEnd::Reject::kForbidden);
      return Respond(403, absl::StrCat("not permitted to publish to '", raw_publish, "'\n"));
    }
  }

  std::string ip = peer_.address().to_string();
  switch (front_end_->AdmitConnection(ip)) {
    case WsFrontEnd::Admission::kOk:
      break;
    case WsFrontEnd::Admission::kTooManyConnections:
      front_end_->CountReject(WsFrontEnd::Reject::kTooManyConnections);
      return Respond(503, "too many connections\n");
    case WsFrontEnd::Admission::kTooManyFromAddress:
      front_end_->CountReject(WsFrontEnd::Reject::kTooManyFromAddress);
      return Respond(429, absl::StrCat("too many connections from ", ip, "\n"));
  }

  Subscriber::Identity identity;
  identity.id = front_end_->NextConnectionId();
  identity.io_index = thread_->index;
  identity.format = format;
  identity.remote_address = absl::StrCat(ip, ":", peer_.port());
  identity.connected_at = absl::Now();
  std::string response = absl::StrCat(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ",
      AcceptKey(std::string_view(key.data(), key.size())), "\r\nServer: fanout\r\n\r\n");
  // Bytes the client sent behind its request belong to the WebSocket.
  std::string early(static_cast<const char*>(buffer_.data().data()), buffer_.size());
  Leave();
  auto session = std::make_shared<WsSession>(std::move(socket_), std::move(identity), front_end_,
                                             thread_);
  WsFrontEnd* fe = front_end_;
  session->Start({.response = std::move(response),
                  .topics = std::move(topics),
                  .since = std::move(since),
                  .early = std::move(early),
                  .grant = std::move(grant),
                  .raw_publish_topic = std::move(raw_publish),
                  .refusal = [fe](const absl::Status& s) {
                    fe->CountReject(WsFrontEnd::Reject::kTooManyTopics);
                    return ResponseText(503, absl::StrCat(s.message(), "\n"));
                  }});
}

namespace {

// A refusal's reason is one line even when it quotes what the client sent (a
// decoded topic, a token's kid): control characters are written as \xNN.
std::string OneLine(const std::string& body) {
  std::string out;
  out.reserve(body.size());
  const size_t end = !body.empty() && body.back() == '\n' ? body.size() - 1 : body.size();
  for (size_t i = 0; i < end; ++i) {
    unsigned char c = static_cast<unsigned char>(body[i]);
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(body[i]);
    }
  }
  if (end < body.size()) out.push_back('\n');
  return out;
}

}  // namespace

void HttpSession::Respond(unsigned status, std::string body, const char* content_type,
                          Header extra) {
  if (status >= 400) body = OneLine(body);
  response_ = std::make_shared<Response>(static_cast<http::status>(status), 11);
  response_->set(http::field::server, "fanout");
  response_->set(http::field::content_type, content_type);
  response_->set(http::field::connection, "close");
  if (extra.name) response_->set(extra.name, extra.value);
  response_->body() = std::move(body);
  response_->prepare_payload();
  response_->keep_alive(false);
  // HEAD gets GET's headers, Content-Length included, and no body.
  if (head_) response_->body().clear();
  // Still a handshake in progress: a client that does not read the answer
  // is dropped at the deadline like one that does not send its request.
  http::async_write(socket_, *response_,
                    [self = shared_from_this()](beast::error_code, std::size_t) {
                      self->Leave();
                      beast::error_code ignored;
                      self->socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
                      self->socket_.close(ignored);
                    });
}

}  // namespace fanout
