#include "ws/ws_session.h"

#include <algorithm>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket/stream_base.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "ws/front_end.h"
#include "ws/io_threads.h"

namespace fanout {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;

WsSession::WsSession(Socket socket, Identity identity, WsFrontEnd* front_end, IoThread* thread)
    : Subscriber(std::move(identity)),
      ws_(std::move(socket)),
      front_end_(front_end),
      thread_(thread),
      rate_tokens_(front_end->options().client_message_burst),
      rate_time_(std::chrono::steady_clock::now()) {
  ws_.next_layer().set_sink(this);
  // Writes try the socket directly first (DoWrite); they must never block.
  beast::error_code ec;
  ws_.next_layer().next_layer().non_blocking(true, ec);
}

WsSession::~WsSession() = default;

void WsSession::Accept(Request request, std::vector<std::string> topics) {
  const WsOptions& opt = front_end_->options();
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = absl::ToChronoMilliseconds(opt.handshake_timeout);
  timeouts.idle_timeout = absl::ToChronoMilliseconds(opt.idle_timeout);
  timeouts.keep_alive_pings = true;
  ws_.set_option(timeouts);
  ws_.read_message_max(opt.max_inbound_message_bytes);
  ws_.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(beast::http::field::server, "fanout"); }));

  auto self = shared_from_this();
  front_end_->hub().AddConnection(self);
  thread_->sessions.insert(this);
  registered_ = true;
  for (auto& t : topics) {
    // Topics were validated by the HTTP session.
    (void)front_end_->hub().Subscribe(t, self);
    topics_.insert(std::move(t));
  }
  front_end_->CountAccepted();
  ws_.async_accept(request, [self](beast::error_code ec) { self->OnAccept(ec); });
}

void WsSession::OnAccept(beast::error_code ec) {
  if (ec) {
    spdlog::debug("connection {}: handshake failed: {}", id(), ec.message());
    return Cleanup();
  }
  if (state_ == Phase::kHandshaking) state_ = Phase::kOpen;
  DoRead();
}

void WsSession::DoRead() {
  ws_.async_read(read_buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t n) {
    self->OnRead(ec, n);
  });
}

void WsSession::OnRead(beast::error_code ec, std::size_t bytes) {
  if (ec) {
    if (ec == websocket::error::message_too_big) {
      // Beast has already started the 1009 close; the read fails once it ends.
      spdlog::debug("connection {}: inbound message over the limit", id());
    } else if (ec != websocket::error::closed && ec != asio::error::operation_aborted &&
               ec != asio::error::eof && ec != asio::error::connection_reset) {
      spdlog::debug("connection {}: read: {}", id(), ec.message());
    }
    return Cleanup();
  }
  IoThreadStats::Add(thread_->stats.client_messages_in, 1);
  IoThreadStats::Add(thread_->stats.client_bytes_in, bytes);
  if (state_ != Phase::kOpen) {
    read_buffer_.consume(read_buffer_.size());
    return DoRead();
  }
  if (!TakeRateToken()) {
    IoThreadStats::Add(thread_->stats.rate_limit_disconnects, 1);
    read_buffer_.consume(read_buffer_.size());
    CloseOnIoThread(kClosePolicy, "message rate limit exceeded");
    return DoRead();  // the read completes when the close handshake ends
  }
  if (!ws_.got_text()) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(R"({"id":null,"error":{"code":"unsupported_frame","message":"control messages are JSON text frames"}})");
  } else {
    auto data = read_buffer_.data();
    HandleControl(absl::string_view(static_cast<const char*>(data.data()), data.size()));
  }
  read_buffer_.consume(read_buffer_.size());
  // A large message grew the buffer: give the memory back while idle.
  if (read_buffer_.capacity() > 4096) read_buffer_.shrink_to_fit();
  DoRead();
}

bool WsSession::TakeRateToken() {
  const WsOptions& opt = front_end_->options();
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - rate_time_).count();
  rate_time_ = now;
  rate_tokens_ = std::min(opt.client_message_burst,
                          rate_tokens_ + elapsed * opt.client_messages_per_second);
  if (rate_tokens_ < 1.0) return false;
  rate_tokens_ -= 1.0;
  return true;
}

namespace {

std::string ErrorReply(const json::value& id, absl::string_view code, absl::string_view message) {
  json::object err;
  err["code"] = json::string_view(code.data(), code.size());
  err["message"] = json::string_view(message.data(), message.size());
  json::object reply;
  reply["id"] = id;
  reply["error"] = std::move(err);
  return json::serialize(reply);
}

std::string OkReply(const json::value& id) {
  return absl::StrCat(R"({"id":)", json::serialize(id), R"(,"ok":true})");
}

}  // namespace

void WsSession::HandleControl(absl::string_view text) {
  boost::system::error_code ec;
  json::value doc = json::parse(json::string_view(text.data(), text.size()), ec);
  json::value req_id;  // null until known
  auto fail = [&](absl::string_view code, absl::string_view message) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(ErrorReply(req_id, code, message));
  };
  if (ec) return fail("invalid_json", absl::StrCat("not valid JSON: ", ec.message()));
  json::object* obj = doc.if_object();
  if (!obj) return fail("invalid_message", "a control message is a JSON object");
  if (auto* v = obj->if_contains("id")) {
    if (!v->is_string() && !v->is_number() && !v->is_null()) {
      return fail("invalid_message", "id must be a number or a string");
    }
    req_id = *v;
  }
  auto* op_value = obj->if_contains("op");
  if (!op_value || !op_value->is_string()) {
    return fail("invalid_message", "missing string field 'op'");
  }
  const json::string& op_str = op_value->get_string();
  absl::string_view op(op_str.data(), op_str.size());
  if (op == "ping") return Reply(OkReply(req_id));
  if (op != "subscribe" && op != "unsubscribe") {
    return fail("unknown_op", absl::StrCat("unknown op '", op,
                                           "': expected subscribe, unsubscribe or ping"));
  }
  auto* topic_value = obj->if_contains("topic");
  if (!topic_value || !topic_value->is_string()) {
    return fail("invalid_message", "missing string field 'topic'");
  }
  const json::string& topic_str = topic_value->get_string();
  absl::string_view topic(topic_str.data(), topic_str.size());
  if (absl::Status s = front_end_->hub().ValidateTopic(topic); !s.ok()) {
    return fail("invalid_topic", s.message());
  }
  if (op == "subscribe") {
    if (absl::Status s = SubscribeOnIoThread(topic); !s.ok()) {
      return fail("too_many_subscriptions", s.message());
    }
  } else {
    UnsubscribeOnIoThread(topic);
  }
  Reply(OkReply(req_id));
}

absl::Status WsSession::SubscribeOnIoThread(absl::string_view topic) {
  if (topics_.contains(topic)) return absl::OkStatus();
  size_t limit = front_end_->hub().limits().max_subscriptions_per_connection;
  if (topics_.size() >= limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this connection already has the limit of ", limit, " topics"));
  }
  // The topic was validated by the caller.
  (void)front_end_->hub().Subscribe(topic, shared_from_this());
  topics_.emplace(topic);
  return absl::OkStatus();
}

bool WsSession::UnsubscribeOnIoThread(absl::string_view topic) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) return false;
  front_end_->hub().Unsubscribe(topic, id());
  topics_.erase(it);
  return true;
}

void WsSession::Subscribe(std::string topic, absl::AnyInvocable<void(absl::Status) &&> done) {
  asio::post(thread_->context, [self = shared_from_this(), topic = std::move(topic),
                                done = std::move(done)]() mutable {
    // A connection that closed meanwhile must not be left in the registry.
    if (!self->registered_) return std::move(done)(absl::NotFoundError("connection closed"));
    std::move(done)(self->SubscribeOnIoThread(topic));
  });
}

void WsSession::Unsubscribe(std::string topic, absl::AnyInvocable<void(bool) &&> done) {
  asio::post(thread_->context, [self = shared_from_this(), topic = std::move(topic),
                                done = std::move(done)]() mutable {
    std::move(done)(self->registered_ && self->UnsubscribeOnIoThread(topic));
  });
}

void WsSession::Describe(absl::AnyInvocable<void(Subscriber::State) &&> done) {
  asio::post(thread_->context, [self = shared_from_this(), done = std::move(done)]() mutable {
    Subscriber::State state;
    state.open = self->registered_;
    state.topics.assign(self->topics_.begin(), self->topics_.end());
    std::sort(state.topics.begin(), state.topics.end());
    state.queued_bytes = self->queued_bytes_;
    state.messages_sent = self->messages_sent_;
    std::move(done)(std::move(state));
  });
}

void WsSession::Reply(std::string json_text) {
  auto frame = std::make_shared<std::string>(BuildFrame(WsOpcode::kText, json_text));
  asio::const_buffer bytes(frame->data(), frame->size());
  Enqueue({std::move(frame), bytes});
}

void WsSession::DeliverOnIoThread(const std::shared_ptr<const Message>& message) {
  if (state_ != Phase::kOpen && state_ != Phase::kHandshaking) return;
  absl::string_view frame = message->Frame(identity().format);
  if (Enqueue({message, asio::const_buffer(frame.data(), frame.size())}, /*deferred=*/true)) {
    IoThreadStats::Add(thread_->stats.messages_out, 1);
    IoThreadStats::Add(thread_->stats.bytes_out, frame.size());
  }
}

bool WsSession::Enqueue(OutItem item, bool deferred) {
  if (state_ == Phase::kClosed) return false;
  // The limit bounds the backlog, not the message: one frame larger than the
  // limit still goes to a client that has nothing queued.
  const size_t limit = front_end_->options().max_outbound_queue_bytes;
  if (queued_bytes_ > 0 && queued_bytes_ + item.bytes.size() > limit && !writing_) {
    // Deliveries waiting for the thread's flush are not the client's fault:
    // hand them to the kernel now and judge by what it would not take.
    DoWrite();
  }
  if (queued_bytes_ > 0 && queued_bytes_ + item.bytes.size() > limit) {
    SlowConsumer();
    return false;
  }
  queued_bytes_ += item.bytes.size();
  ++messages_sent_;
  pending_.push_back(std::move(item));
  if (writing_) return true;  // OnWrite sends it with the rest
  if (!deferred) {
    DoWrite();
    return true;
  }
  if (!dirty_) {
    dirty_ = true;
    thread_->dirty.push_back(shared_from_this());
    if (!thread_->flush_posted) {
      thread_->flush_posted = true;
      IoThread* t = thread_;
      asio::post(t->context, [t] { FlushDirty(t); });
    }
  }
  return true;
}

void WsSession::FlushDirty(IoThread* thread) {
  thread->flush_posted = false;
  std::vector<std::shared_ptr<WsSession>> sessions;
  sessions.swap(thread->dirty);
  for (const auto& s : sessions) {
    s->dirty_ = false;
    if (!s->writing_) s->DoWrite();
  }
  // Keep the list's capacity for the next publish unless it was huge.
  if (thread->dirty.empty() && sessions.capacity() <= 65536) {
    sessions.clear();
    thread->dirty.swap(sessions);
  }
}

void WsSession::DoWrite() {
  if (pending_.empty() || state_ == Phase::kClosed) return;
  // Fast path: hand the kernel what it takes right now with one gathered
  // write, no asynchronous operation and no completion to schedule. Only
  // what does not fit waits for the socket to become writable.
  auto& socket = ws_.next_layer().next_layer();
  beast::error_code ec;
  size_t written = socket.write_some(pending_, ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    beast::error_code ignored;
    socket.close(ignored);  // the pending read ends and cleans up
    return;
  }
  queued_bytes_ -= written;
  size_t done = 0;
  while (done < pending_.size() && written >= pending_[done].bytes.size()) {
    written -= pending_[done].bytes.size();
    ++done;
  }
  if (done < pending_.size()) pending_[done].bytes += written;
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(done));
  if (pending_.empty()) {
    if (pending_.capacity() > 256) pending_.shrink_to_fit();
    if (teardown_) FinishTeardown({});
    return;
  }
  writing_ = true;
  inflight_.swap(pending_);
  asio::async_write(ws_.next_layer().next_layer(), inflight_,
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->OnWrite(ec);
                    });
}

void WsSession::OnWrite(beast::error_code ec) {
  writing_ = false;
  for (const auto& item : inflight_) queued_bytes_ -= item.bytes.size();
  inflight_.clear();
  if (inflight_.capacity() > 256) inflight_.shrink_to_fit();
  if (ec) {
    if (teardown_) FinishTeardown(ec);
    beast::error_code ignored;
    ws_.next_layer().next_layer().close(ignored);  // the pending read ends and cleans up
    return;
  }
  if (!pending_.empty()) return DoWrite();
  if (teardown_) FinishTeardown({});
}

void WsSession::FinishTeardown(beast::error_code ec) {
  auto handler = std::move(teardown_);
  teardown_ = nullptr;
  beast::error_code ignored;
  ws_.next_layer().next_layer().shutdown(Socket::shutdown_both, ignored);
  ws_.next_layer().next_layer().close(ignored);
  asio::post(thread_->context, [h = std::move(handler), ec]() mutable { h(ec); });
}

void WsSession::SlowConsumer() {
  if (state_ != Phase::kOpen && state_ != Phase::kHandshaking) return;
  IoThreadStats::Add(thread_->stats.slow_disconnects, 1);
  spdlog::debug("connection {}: outbound queue over {} bytes, closing", id(),
                front_end_->options().max_outbound_queue_bytes);
  // Drop what has not reached the socket: the client is too far behind to
  // catch up, and this frees its share of memory now.
  for (const auto& item : pending_) queued_bytes_ -= item.bytes.size();
  pending_.clear();
  pending_.shrink_to_fit();
  CloseOnIoThread(kCloseSlowConsumer, "slow consumer: outbound queue full");
}

void WsSession::Close(uint16_t code, std::string reason) {
  asio::post(thread_->context, [self = shared_from_this(), code, reason = std::move(reason)] {
    self->CloseOnIoThread(code, reason);
  });
}

void WsSession::CloseOnIoThread(uint16_t code, absl::string_view reason) {
  if (state_ == Phase::kClosing || state_ == Phase::kClosed) return;
  bool handshaking = state_ == Phase::kHandshaking;
  state_ = Phase::kClosing;
  if (handshaking) {
    // No WebSocket yet to close politely.
    beast::error_code ignored;
    ws_.next_layer().next_layer().close(ignored);
    return;
  }
  ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(code), std::string(reason)),
                  [self = shared_from_this()](beast::error_code) {
                    // Either the handshake finished or its timeout closed the
                    // socket; the pending read reports the end and cleans up.
                    beast::error_code ignored;
                    self->ws_.next_layer().next_layer().close(ignored);
                  });
}

void WsSession::Cleanup() {
  if (state_ == Phase::kClosed) return;
  state_ = Phase::kClosed;
  beast::error_code ignored;
  ws_.next_layer().next_layer().close(ignored);
  for (const auto& item : pending_) queued_bytes_ -= item.bytes.size();
  pending_.clear();
  pending_.shrink_to_fit();
  if (!registered_) return;
  registered_ = false;
  for (const auto& t : topics_) front_end_->hub().Unsubscribe(t, id());
  topics_.clear();
  front_end_->hub().RemoveConnection(id());
  thread_->sessions.erase(this);
}

}  // namespace fanout
