#include "ws/ws_session.h"

#include <algorithm>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "absl/strings/str_cat.h"
#include "core/hub.h"
#include "spdlog/spdlog.h"
#include "ws/control_message.h"
#include "ws/front_end.h"
#include "ws/io_threads.h"

namespace fanout {

namespace asio = boost::asio;
namespace json = boost::json;
using error_code = boost::system::error_code;

WsSession::WsSession(Socket socket, Identity identity, WsFrontEnd* front_end, IoThread* thread)
    : Subscriber(std::move(identity)),
      socket_(std::move(socket)),
      front_end_(front_end),
      thread_(thread),
      parser_(front_end->options().max_inbound_message_bytes),
      last_read_(Clock::now()),
      last_written_(last_read_),
      rate_tokens_(front_end->options().client_message_burst),
      rate_time_(last_read_) {
  // Reads and writes try the socket directly first; they must never block.
  error_code ec;
  if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
  IoThreadStats::Add(thread_->stats.sockets, 1);
}

WsSession::~WsSession() = default;

namespace {

// What a subscribe with `since` adds to its answer: "recovered", and where
// the topic stands when nothing can be replayed.
std::string RecoveryFields(const Hub::Recovery& r) {
  if (r.recovered) return R"("recovered":true)";
  // Epochs are made of characters that need no escaping (checked when a
  // client names one, made so by the node otherwise); a cluster does not
  // know the position yet.
  if (r.position.epoch.empty()) return R"("recovered":false)";
  return absl::StrCat(R"("recovered":false,"position":{"seq":)", r.position.seq,
                      R"(,"epoch":")", r.position.epoch, R"("})");
}

// Memory for an operation at its exact size, from operator new. The wait
// every idle connection keeps pending would otherwise take whichever block
// asio's per-thread cache hands it, and the cache holds blocks sized for the
// handshake's much larger read (460 bytes instead of about 150).
template <typename T>
struct ExactAllocator {
  using value_type = T;
  ExactAllocator() noexcept = default;
  template <typename U>
  ExactAllocator(const ExactAllocator<U>&) noexcept {}  // NOLINT: rebinding
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { ::operator delete(p, n * sizeof(T)); }
  friend bool operator==(const ExactAllocator&, const ExactAllocator&) { return true; }
};

// Deliveries a session makes in a loop (a replay, held or conflated
// messages) join the thread's flush even in a lone task, so they leave in
// one write rather than one write each.
class BatchWrites {
 public:
  explicit BatchWrites(IoThread* t) : t_(t), was_(t->lone_task) { t->lone_task = false; }
  ~BatchWrites() { t_->lone_task = was_; }
  BatchWrites(const BatchWrites&) = delete;
  BatchWrites& operator=(const BatchWrites&) = delete;

 private:
  IoThread* const t_;
  const bool was_;
};

}  // namespace

void WsSession::Start(StartParams params) {
  auto self = shared_from_this();
  thread_->sessions.insert(this);
  raw_publish_topic_ = std::move(params.raw_publish_topic);
  if (params.grant) {
    Apply(*std::move(params.grant));
    Register();
  } else {
    // Must authenticate with its first message, in time.
    awaiting_auth_ = true;
    IoThreadStats::Add(thread_->stats.authenticating, 1);
    auth_deadline_ = Clock::now() +
                     absl::ToChronoMilliseconds(front_end_->options().handshake_timeout);
  }
  std::vector<std::pair<std::string, Hub::Recovery>> recoveries;
  for (auto& t : params.topics) {
    const TopicPosition* since = nullptr;
    for (const auto& [topic, pos] : params.since) {
      if (topic == t) since = &pos;  // the last one counts
    }
    Hub::Recovery recovery;
    const bool fresh = !topics_.contains(t);
    if (absl::Status s = SubscribeOnIoThread(t, since, &recovery); !s.ok()) {
      // Refused before the 101: the client gets an HTTP answer saying why.
      Unregister();
      phase_ = Phase::kClosing;
      close_sent_ = true;
      EnqueueOwned(std::move(params.refusal)(s), /*bypass_limit=*/true);
      AfterFlush(/*linger=*/false);
      if (phase_ == Phase::kClosed) return;
      TimerWheel::Entry* entry = this;
      thread_->wheel->Schedule(entry, Clock::now() + absl::ToChronoMilliseconds(
                                                         front_end_->options().handshake_timeout));
      return WaitRead();
    }
    if (since != nullptr && fresh && recovery.pending) {
      BeginRecovery(t, *since, std::nullopt);
    } else if (since != nullptr && fresh) {
      recoveries.emplace_back(t, std::move(recovery));
    }
    if (fresh && ConflatedByNode(t)) rare().conflate_topics.insert(t);
  }
  front_end_->CountAccepted();
  EnqueueOwned(std::move(params.response), /*bypass_limit=*/true);
  if (phase_ == Phase::kClosed) return;  // the client is gone already
  // since=: for each topic, a notice of what was recovered, then the missed
  // messages, before any live one.
  for (const auto& [topic, recovery] : recoveries) {
    Reply(absl::StrCat(R"({"op":"recovery","topic":")", topic, R"(",)", RecoveryFields(recovery),
                       "}"));
    Replay(topic, recovery);
    if (phase_ != Phase::kOpen) return;
  }
  ScheduleKeepAlive();
  if (!params.early.empty()) {
    last_read_ = Clock::now();
    parser_.Feed(params.early.data(), params.early.size(), this);
    if (phase_ == Phase::kClosed) return;
  }
  // Bytes that arrived behind the request are reported by the wait itself
  // (asio re-arms the descriptor for every wait), so no read is tried first:
  // a new client has usually sent nothing yet.
  WaitRead();
}

void WsSession::Register() {
  if (registered_ || phase_ != Phase::kOpen) return;
  front_end_->hub().AddConnection(shared_from_this());
  registered_ = true;
}

void WsSession::StopAwaitingAuth() {
  if (!awaiting_auth_) return;
  awaiting_auth_ = false;
  IoThreadStats::Add(thread_->stats.authenticating, -1);
}

std::vector<std::string> WsSession::Apply(Grant grant) {
  StopAwaitingAuth();
  authenticated_ = true;
  permissions_ = std::move(grant.permissions);
  if (user() != grant.user) {
    if (registered_) {
      front_end_->hub().SetUser(id(), grant.user);
      if (front_end_->hub().presence().enabled()) {
        front_end_->hub().MovePresence(id(), grant.user,
                                       std::vector<std::string>(topics_.begin(), topics_.end()));
      }
    } else {
      set_user(grant.user);
    }
  }
  if (grant.expires == absl::InfiniteFuture()) {
    auth_deadline_ = Clock::time_point::max();
  } else {
    absl::Duration left = std::max(grant.expires - absl::Now(), absl::ZeroDuration());
    auth_deadline_ = Clock::now() + absl::ToChronoMilliseconds(left);
  }
  // What the new permissions no longer allow goes.
  std::vector<std::string> dropped;
  for (const auto& t : topics_) {
    if (!permissions_->MaySubscribeTopicOrPattern(t)) dropped.push_back(t);
  }
  for (const auto& t : dropped) UnsubscribeOnIoThread(t);
  std::sort(dropped.begin(), dropped.end());
  return dropped;
}

// ---------------------------------------------------------------- reading

void WsSession::WaitRead() {
  socket_.async_wait(Socket::wait_read,
                     asio::bind_allocator(ExactAllocator<void>(), [self = shared_from_this()](error_code ec) {
                       self->OnReadable(ec);
                     }));
}

void WsSession::OnReadable(error_code ec) {
  if (phase_ == Phase::kClosed) return;
  if (ec) return Finish();
  if (!raw_publish_topic_.empty() && phase_ == Phase::kOpen && front_end_->hub().budget().over()) {
    // A raw publisher outrunning delivery: stop reading, so TCP slows it
    // down, until the node has room again.
    if (waiting_for_budget_) return;
    waiting_for_budget_ = true;
    front_end_->hub().budget().WhenRoom([self = shared_from_this()] {
      asio::post(self->thread_->context, [self] {
        self->waiting_for_budget_ = false;
        self->OnReadable({});
      });
    });
    return;
  }
  // The thread's buffer: an idle connection holds no read buffer of its own.
  std::vector<char>& buf = thread_->read_buffer;
  for (int round = 0; round < 4; ++round) {
    size_t n = socket_.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return WaitRead();
    if (ec) {
      // End of stream (the peer half-closed or closed without a close
      // frame) or a reset: nothing more will come.
      if (ec != asio::error::eof && ec != asio::error::connection_reset) {
        spdlog::debug("connection {}: read: {}", id(), ec.message());
      }
      return Finish();
    }
    last_read_ = Clock::now();
    ping_outstanding_ = false;
    if (phase_ != Phase::kLingering) parser_.Feed(buf.data(), n, this);
    if (phase_ == Phase::kClosed) return;
    // A short read on a stream socket means it is drained: wait for more.
    if (n < buf.size()) return WaitRead();
  }
  // Let the thread's other connections run before reading more.
  asio::post(thread_->context, [self = shared_from_this()] { self->OnReadable({}); });
}

void WsSession::OnMessage(bool text, absl::string_view payload) {
  if (phase_ != Phase::kOpen) return;  // closing: read and dropped
  IoThreadStats::Add(thread_->stats.client_messages_in, 1);
  IoThreadStats::Add(thread_->stats.client_bytes_in, payload.size());
  if (!TakeRateToken()) {
    IoThreadStats::Add(thread_->stats.rate_limit_disconnects, 1);
    return StartClose(kClosePolicy, "message rate limit exceeded", CloseMode::kHandshake);
  }
  if (!raw_publish_topic_.empty()) return PublishRaw(text, payload);
  if (!text) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    return Reply(
        R"({"id":null,"error":{"code":"unsupported_frame","message":"control messages are JSON text frames"}})");
  }
  HandleControl(payload);
}

void WsSession::PublishRaw(bool text, absl::string_view payload) {
  // The frame's bytes as they are, its type kept: a binary frame of UTF-8
  // bytes reaches raw subscribers as binary. Never refused for overload:
  // reading pauses instead (OnReadable), as a PublishStream does.
  front_end_->hub().Publish(
      raw_publish_topic_, payload,
      {.admission = Hub::Admission::kAccept,
       .kind = text ? PayloadKind::kText : PayloadKind::kBinary},
      [self = shared_from_this()](absl::StatusOr<PublishResult> r) {
        if (r.ok()) return;
        // On this thread (a standalone node answers inline), or from a
        // cluster broker's thread.
        asio::dispatch(self->thread_->context, [self, status = r.status()] {
          if (self->phase_ != Phase::kOpen) return;
          if (absl::IsInvalidArgument(status)) {
            // Over --max_payload_bytes (the topic was checked at the upgrade).
            return self->StartClose(kCloseTooBig, status.message(), CloseMode::kFail);
          }
          // The cluster could not take it (UNAVAILABLE, ABORTED): nothing a
          // raw publisher can be told but to come back.
          self->StartClose(kCloseTryAgainLater, status.message(), CloseMode::kHandshake);
        });
      });
}

void WsSession::OnPing(absl::string_view payload) {
  if (phase_ != Phase::kOpen) return;
  // Pings count against the message rate like control messages (pongs, the
  // answers to ours, do not): a ping flood is closed with 1008.
  if (!TakeRateToken()) {
    IoThreadStats::Add(thread_->stats.rate_limit_disconnects, 1);
    return StartClose(kClosePolicy, "message rate limit exceeded", CloseMode::kHandshake);
  }
  // One pong owed at a time (RFC 6455, 5.5.3, lets an endpoint answer only
  // some of a burst), and it counts against the outbound limit: a client
  // that pings and never reads makes the node hold one small frame.
  if (pong_owed_) return;
  EnqueueOwned(BuildFrame(WsOpcode::kPong, payload), /*bypass_limit=*/false, /*pong=*/true);
}

void WsSession::OnPong(absl::string_view) {}

void WsSession::OnClose(uint16_t code, absl::string_view) {
  if (phase_ == Phase::kOpen) {
    // The client closes first: answer with its code (RFC 6455, 5.5.1).
    Unregister();
    close_sent_ = true;
    phase_ = Phase::kClosing;
    std::string frame = code == 0 ? BuildFrame(WsOpcode::kClose, {}) : BuildCloseFrame(code, {});
    EnqueueOwned(std::move(frame), /*bypass_limit=*/true);  // may fail the socket
    if (phase_ == Phase::kClosed) return;
    TimerWheel::Entry* entry = this;
    thread_->wheel->Schedule(entry, Clock::now() + absl::ToChronoMilliseconds(
                                                       front_end_->options().handshake_timeout));
  }
  // The handshake is complete: the server closes the TCP connection first
  // (RFC 6455, 7.1.1) once its frame is in the kernel, which delivers it.
  if (phase_ == Phase::kClosing) AfterFlush(/*linger=*/false);
}

void WsSession::OnProtocolError(uint16_t code, absl::string_view reason) {
  spdlog::debug("connection {}: protocol error {}: {}", id(), code,
                std::string_view(reason.data(), reason.size()));
  if (code == kCloseTooBig) {
    IoThreadStats::Add(thread_->stats.too_big_disconnects, 1);
  } else {
    IoThreadStats::Add(thread_->stats.protocol_errors, 1);
  }
  if (phase_ != Phase::kOpen) return Finish();  // our close was sent already
  StartClose(code, reason, CloseMode::kFail);
}

bool WsSession::TakeRateToken() {
  const WsOptions& opt = front_end_->options();
  auto now = Clock::now();
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
  ControlMessage m = ParseControlMessage(text, front_end_->hub().limits().max_topic_length);
  auto fail = [&](absl::string_view code, absl::string_view message) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(ErrorReply(m.id, code, message));
  };
  if (m.malformed) return fail(m.malformed->code, m.malformed->message);
  if (m.op == ControlOp::kAuth || m.op == ControlOp::kRefresh) {
    return HandleAuth(m, m.op == ControlOp::kRefresh);
  }
  if (!authenticated_) {
    return fail("unauthenticated",
                R"(authenticate first: send {"op":"auth","token":"..."})");
  }
  if (m.op == ControlOp::kPing) return Reply(OkReply(m.id));
  if (m.invalid) return fail(m.invalid->code, m.invalid->message);
  if (m.op == ControlOp::kPublish) return HandlePublish(m);
  if (m.op == ControlOp::kPresence) return HandlePresence(m);
  const std::string& topic = m.topic;
  if (m.op == ControlOp::kSubscribe) {
    if (!permissions_->MaySubscribeTopicOrPattern(topic)) {
      return fail("permission_denied", absl::StrCat("not permitted to subscribe to '", topic, "'"));
    }
    if (m.presence) {
      // Checked before subscribing, so that a refused request changes nothing.
      if (IsPattern(topic)) {
        return fail("invalid_message", "presence events are for a topic, not a pattern");
      }
      if (identity().format != DeliveryFormat::kJson) {
        return fail("invalid_message", "presence events need format=json");
      }
      if (!front_end_->hub().presence().Covers(topic)) {
        return fail("presence_disabled",
                    absl::StrCat("the node keeps no presence for '", topic, "' (--presence)"));
      }
    }
    const bool already = topics_.contains(topic);
    bool at_connection_limit =
        !already && topics_.size() >= front_end_->hub().limits().max_subscriptions_per_connection;
    Hub::Recovery recovery;
    const TopicPosition* since = m.since && !already ? &*m.since : nullptr;
    if (absl::Status s = SubscribeOnIoThread(topic, since, &recovery); !s.ok()) {
      return fail(at_connection_limit ? "too_many_subscriptions" : "too_many_topics", s.message());
    }
    if (!already && (m.conflate || ConflatedByNode(topic))) rare().conflate_topics.insert(topic);
    if (m.presence) front_end_->hub().WatchPresence(topic, shared_from_this());
    if (since == nullptr) return Reply(OkReply(m.id));
    if (recovery.pending) return BeginRecovery(topic, *since, m.id);
    // The answer first, then what was missed; live messages follow (they are
    // posted to this thread, so they run after this handler).
    std::string reply = OkReply(m.id);
    reply.pop_back();
    absl::StrAppend(&reply, ",", RecoveryFields(recovery), "}");
    Reply(std::move(reply));
    return Replay(topic, recovery);
  } else {
    UnsubscribeOnIoThread(topic);
  }
  Reply(OkReply(m.id));
}

void WsSession::HandleAuth(const ControlMessage& m, bool refresh) {
  const json::value& id = m.id;
  auto fail = [&](absl::string_view code, absl::string_view message) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(ErrorReply(id, code, message));
  };
  if (!front_end_->authority().requires_tokens()) {
    // A node without keys checks no tokens: every client is anonymous.
    return Reply(OkReply(id));
  }
  if (refresh && (!authenticated_ || user().empty())) {
    return fail("unauthenticated", "refresh needs a connection authenticated with a token");
  }
  if (!refresh && authenticated_ && !user().empty()) {
    return fail("already_authenticated", "this connection has a token; send refresh to replace it");
  }
  auto grant = front_end_->authority().Authenticate(m.token);
  if (!grant.ok()) {
    IoThreadStats::Add(thread_->stats.auth_failures, 1);
    if (refresh) {
      // The connection keeps its current token until that one runs out.
      return fail("unauthorized", grant.status().message());
    }
    fail("unauthorized", grant.status().message());
    return StartClose(kCloseUnauthorized, grant.status().message(), CloseMode::kHandshake);
  }
  if (refresh && grant->user != user()) {
    return fail("unauthorized", "the new token is for another subject");
  }
  bool was_registered = registered_;
  std::vector<std::string> dropped = Apply(*std::move(grant));
  if (!was_registered) Register();
  // Time the (new) expiry.
  ScheduleKeepAlive();
  std::string reply = OkReply(id);
  if (!dropped.empty()) {
    // {"id":..,"ok":true,"unsubscribed":[...]}: the new permissions end these.
    json::array list;
    for (const auto& d : dropped) list.emplace_back(json::string_view(d.data(), d.size()));
    reply.pop_back();
    absl::StrAppend(&reply, R"(,"unsubscribed":)", json::serialize(list), "}");
  }
  Reply(std::move(reply));
}

void WsSession::HandlePresence(const ControlMessage& m) {
  auto fail = [&](absl::string_view code, absl::string_view message) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(ErrorReply(m.id, code, message));
  };
  if (!permissions_->MaySubscribeTopicOrPattern(m.topic)) {
    return fail("permission_denied", absl::StrCat("not permitted to subscribe to '", m.topic, "'"));
  }
  if (!front_end_->hub().presence().Covers(m.topic)) {
    return fail("presence_disabled",
                absl::StrCat("the node keeps no presence for '", m.topic, "' (--presence)"));
  }
  front_end_->hub().QueryPresence(
      m.topic, kPresenceNames, kPresenceTimeout,
      [self = shared_from_this(), id = m.id](Hub::PresenceAnswer a) mutable {
        // Inline on a standalone node, from a broker thread in a cluster.
        asio::dispatch(self->thread_->context, [self, id = std::move(id), a = std::move(a)] {
          if (self->phase_ != Phase::kOpen) return;
          json::array names;
          for (const auto& [user, n] : a.counts.user_list) {
            names.emplace_back(json::string_view(user.data(), user.size()));
          }
          json::object presence{{"connections", a.counts.connections},
                                {"users", a.counts.users},
                                {"anonymous", a.counts.anonymous},
                                {"names", std::move(names)},
                                {"more", a.counts.more_users}};
          if (a.partial) presence["partial"] = true;
          std::string reply = OkReply(id);
          reply.pop_back();
          absl::StrAppend(&reply, R"(,"presence":)", json::serialize(presence), "}");
          self->Reply(std::move(reply));
        });
      });
}

void WsSession::HandlePublish(const ControlMessage& m) {
  auto fail = [&](absl::string_view code, absl::string_view message) {
    IoThreadStats::Add(thread_->stats.control_errors, 1);
    Reply(ErrorReply(m.id, code, message));
  };
  if (!permissions_->MayPublish(m.topic)) {
    return fail("permission_denied", absl::StrCat("not permitted to publish to '", m.topic, "'"));
  }
  if (m.invalid_payload) return fail(m.invalid_payload->code, m.invalid_payload->message);
  front_end_->hub().Publish(
      m.topic, m.payload, {.kind = m.kind, .exclude = m.echo ? 0 : this->id()},
      [self = shared_from_this(), id = m.id](absl::StatusOr<PublishResult> r) mutable {
        // On this thread (a standalone node answers inline), or from a
        // cluster broker's thread.
        asio::dispatch(self->thread_->context, [self, id = std::move(id), r = std::move(r)] {
          if (self->phase_ != Phase::kOpen) return;
          if (r.ok()) {
            return self->Reply(
                absl::StrCat(R"({"id":)", json::serialize(id), R"(,"ok":true,"seq":)", r->seq, "}"));
          }
          IoThreadStats::Add(self->thread_->stats.control_errors, 1);
          absl::string_view code = "payload_too_large";
          if (absl::IsResourceExhausted(r.status())) code = "overloaded";
          if (absl::IsUnavailable(r.status()) || absl::IsAborted(r.status())) code = "unavailable";
          self->Reply(ErrorReply(id, code, r.status().message()));
        });
      });
}

// ----------------------------------------------------------- subscriptions

absl::Status WsSession::SubscribeOnIoThread(absl::string_view topic, const TopicPosition* since,
                                            Hub::Recovery* recovery) {
  if (topics_.contains(topic)) return absl::OkStatus();
  size_t limit = front_end_->hub().limits().max_subscriptions_per_connection;
  if (topics_.size() >= limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this connection already has the limit of ", limit, " topics"));
  }
  // The topic was validated by the caller.
  if (absl::Status s = front_end_->hub().Subscribe(topic, shared_from_this(), since, recovery);
      !s.ok()) {
    return s;
  }
  topics_.emplace(topic);
  return absl::OkStatus();
}

void WsSession::BeginRecovery(const std::string& topic, const TopicPosition& since,
                              std::optional<json::value> id) {
  Rare& rare = this->rare();
  const uint64_t token = ++rare.recovery_tokens;
  rare.recovering[topic] = {.token = token, .since = since, .id = std::move(id)};
  rare.covered.erase(topic);
  front_end_->hub().Recover(topic, since, [self = shared_from_this(), topic,
                                           token](Hub::Recovery r) mutable {
    // From a broker thread.
    asio::post(self->thread_->context, [self, topic = std::move(topic), token,
                                        r = std::move(r)]() mutable {
      self->FinishRecovery(topic, token, std::move(r));
    });
  });
}

void WsSession::FinishRecovery(const std::string& topic, uint64_t token, Hub::Recovery r) {
  if (!rare_) return;
  auto it = rare_->recovering.find(topic);
  if (it == rare_->recovering.end() || it->second.token != token) return;  // unsubscribed since
  PendingRecovery p = std::move(it->second);
  rare_->recovering.erase(it);
  rare_->held_bytes -= p.held_bytes;
  if (phase_ != Phase::kOpen) return;
  if (p.id) {
    std::string reply = OkReply(*p.id);
    reply.pop_back();
    absl::StrAppend(&reply, ",", RecoveryFields(r), "}");
    Reply(std::move(reply));
  } else {
    Reply(absl::StrCat(R"({"op":"recovery","topic":")", topic, R"(",)", RecoveryFields(r), "}"));
  }
  Replay(topic, r);
  if (phase_ != Phase::kOpen) return;
  // What the answer covered: the last message replayed (or since, when
  // nothing was missed), or the position the client reloads from.
  if (r.recovered) {
    rare_->covered[topic] = r.missed.empty() ? p.since
                                             : TopicPosition{r.missed.back()->seq, r.position.epoch};
  } else if (!r.position.epoch.empty()) {
    rare_->covered[topic] = r.position;
  }
  BatchWrites batch(thread_);
  for (const auto& message : p.held) {
    DeliverOnIoThread(message);
    if (phase_ != Phase::kOpen) return;
  }
}

bool WsSession::HeldOrCovered(const std::shared_ptr<const Message>& message) {
  const std::string& topic = message->topic();
  if (topic.empty()) return false;  // a broadcast
  if (auto r = rare_->recovering.find(topic); r != rare_->recovering.end()) {
    PendingRecovery& p = r->second;
    const size_t bytes = message->Frame(identity().format).size();
    p.held_bytes += bytes;
    rare_->held_bytes += bytes;
    if (rare_->held_bytes > front_end_->options().max_outbound_queue_bytes) {
      // Every topic's held messages together count as the outbound queue
      // would: JetStream is slower than the topics, as for a client that
      // cannot keep up.
      SlowConsumer();
      return true;
    }
    p.held.push_back(message);
    return true;
  }
  auto c = rare_->covered.find(topic);
  if (c == rare_->covered.end()) return false;
  if (message->seq() == 0) return false;  // unnumbered (skip_history): live only
  if (message->epoch() == c->second.epoch && message->seq() <= c->second.seq) {
    return true;  // replayed, or before the position
  }
  rare_->covered.erase(c);
  return false;
}

void WsSession::Replay(absl::string_view topic, const Hub::Recovery& recovery) {
  BatchWrites batch(thread_);
  for (const auto& entry : recovery.missed) {
    DeliverOnIoThread(
        Hub::EncodeKept(topic, recovery.position.epoch, *entry, identity().format));
    if (phase_ != Phase::kOpen) return;  // cut off as a slow consumer
  }
}


bool WsSession::ConflatedByNode(absl::string_view topic) const {
  for (const auto& p : front_end_->options().conflate) {
    if (IsPattern(topic) ? TopicPattern::Parse(topic, topic.size())->IsCoveredBy(p)
                         : p.Matches(topic)) {
      return true;
    }
  }
  return false;
}

bool WsSession::UnsubscribeOnIoThread(absl::string_view topic) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) return false;
  front_end_->hub().Unsubscribe(topic, id());
  if (rare_) UnsubscribeRare(topic);
  topics_.erase(it);
  return true;
}

void WsSession::UnsubscribeRare(absl::string_view topic) {
  rare_->conflate_topics.erase(topic);
  rare_->conflated.erase(topic);
  rare_->covered.erase(topic);
  if (auto r = rare_->recovering.find(topic); r != rare_->recovering.end()) {
    // Gone before JetStream answered: the subscribe is answered now.
    if (r->second.id) {
      std::string reply = OkReply(*r->second.id);
      reply.pop_back();
      absl::StrAppend(&reply, R"(,"recovered":false})");
      Reply(std::move(reply));
    }
    rare_->held_bytes -= r->second.held_bytes;
    rare_->recovering.erase(r);
  }
}

void WsSession::Subscribe(std::string topic, absl::AnyInvocable<void(absl::Status) &&> done) {
  asio::post(thread_->context, [self = shared_from_this(), topic = std::move(topic),
                                done = std::move(done)]() mutable {
    // A connection that is closing must not be put back in the registry.
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

// ---------------------------------------------------------------- writing

void WsSession::Reply(std::string json_text) {
  EnqueueOwned(BuildFrame(WsOpcode::kText, json_text));
}

bool WsSession::EnqueueOwned(std::string bytes, bool bypass_limit, bool pong) {
  auto owner = std::make_shared<std::string>(std::move(bytes));
  asio::const_buffer view(owner->data(), owner->size());
  // The string's heap block, when it has one, and make_shared's block.
  uint32_t owned = static_cast<uint32_t>(sizeof(std::string) + 16 +
                                         (owner->capacity() > 15 ? owner->capacity() + 1 : 0));
  OutItem item{std::move(owner), view, owned, pong ? 1u : 0u};
  // Owed until Uncount sees the item written or dropped.
  if (pong) pong_owed_ = true;
  bool queued = Enqueue(std::move(item), /*deferred=*/false, bypass_limit);
  if (!queued && pong) pong_owed_ = false;
  return queued;
}

void WsSession::DeliverOnIoThread(const std::shared_ptr<const Message>& message) {
  if (phase_ != Phase::kOpen) return;
  if (rare_ && (!rare_->recovering.empty() || !rare_->covered.empty()) && HeldOrCovered(message)) {
    return;
  }
  // Behind (the kernel took less than we had), on a conflating topic: keep
  // the newest only.
  if (writing_ && rare_ && !rare_->conflate_topics.empty() &&
      rare_->conflate_topics.contains(message->topic())) {
    Conflated& c = rare_->conflated[message->topic()];
    if (c.message) {
      ++c.skipped;
      IoThreadStats::Add(thread_->stats.conflated, 1);
    }
    c.message = message;
    return;
  }
  absl::string_view frame = message->Frame(identity().format);
  if (Enqueue({message, asio::const_buffer(frame.data(), frame.size()), 0, 0}, /*deferred=*/true)) {
    ++messages_sent_;
    IoThreadStats::Add(thread_->stats.messages_out, 1);
    IoThreadStats::Add(thread_->stats.bytes_out, frame.size());
  }
}

void WsSession::Uncount(const OutItem& item) {
  if (item.pong) pong_owed_ = false;
  IoThreadStats::Add(thread_->stats.queued_budget_bytes,
                     -(kQueueEntryBytes + static_cast<int64_t>(item.owned)));
}

bool WsSession::Enqueue(OutItem item, bool deferred, bool bypass_limit) {
  if (phase_ == Phase::kClosed) return false;
  if (!bypass_limit) {
    if (close_sent_) return false;  // nothing follows our close frame
    // The limit bounds the backlog, not the message: one frame larger than
    // the limit still goes to a client that has nothing queued.
    const size_t limit = front_end_->options().max_outbound_queue_bytes;
    if (queued_bytes_ > 0 && queued_bytes_ + item.bytes.size() > limit && !writing_) {
      // Deliveries waiting for the thread's flush are not the client's
      // fault: hand them to the kernel now and judge by what it would not take.
      DoWrite();
      if (phase_ == Phase::kClosed) return false;
    }
    if (queued_bytes_ > 0 && queued_bytes_ + item.bytes.size() > limit) {
      SlowConsumer();
      return false;
    }
  }
  queued_bytes_ += item.bytes.size();
  IoThreadStats::Add(thread_->stats.queued_budget_bytes,
                     kQueueEntryBytes + static_cast<int64_t>(item.owned));
  pending_.push_back(std::move(item));
  if (writing_) return true;  // OnWrite sends it with the rest
  if (!deferred) {
    DoWrite();
    return true;
  }
  if (dirty_) {
    // A flush of this thread is already due; a session held for
    // --write_delay stops waiting once it has a big queue.
    if (queued_bytes_ >= kWriteDelayMaxBytes && front_end_->write_delay() > Clock::duration::zero()) {
      DoWrite();
    }
    return true;
  }
  IoThread* t = thread_;
  if (front_end_->write_delay() > Clock::duration::zero() && queued_bytes_ < kWriteDelayMaxBytes &&
      Clock::now() - last_written_ < front_end_->write_delay()) {
    // Wrote a moment ago: wait for more, up to the delay.
    dirty_ = true;
    t->delayed.push_back(shared_from_this());
    if (!t->delayed_armed) {
      t->delayed_armed = true;
      t->delayed_timer.expires_after(front_end_->write_delay());
      t->delayed_timer.async_wait([t](error_code ec) {
        t->delayed_armed = false;
        if (!ec) FlushSessions(t->delayed);
      });
    }
    return true;
  }
  if (t->lone_task) {
    DoWrite();  // no other publish waits behind this one
    return true;
  }
  dirty_ = true;
  t->dirty.push_back(shared_from_this());
  if (!t->flush_posted) {
    t->flush_posted = true;
    asio::post(t->context, [t] { FlushDirty(t); });
  }
  return true;
}

void WsSession::FlushDirty(IoThread* thread) {
  thread->flush_posted = false;
  FlushSessions(thread->dirty);
}

void WsSession::FlushSessions(std::vector<std::shared_ptr<WsSession>>& list) {
  std::vector<std::shared_ptr<WsSession>> sessions;
  sessions.swap(list);
  for (const auto& s : sessions) {
    s->dirty_ = false;
    if (!s->writing_) s->DoWrite();
  }
  // Keep the list's capacity for the next publish unless it was huge.
  if (list.empty() && sessions.capacity() <= 65536) {
    sessions.clear();
    list.swap(sessions);
  }
}

void WsSession::DoWrite() {
  if (phase_ == Phase::kClosed) return;
  if (pending_.empty()) return OnQueueDrained();
  // Fast path: hand the kernel what it takes right now with one gathered
  // write, no asynchronous operation and no completion to schedule. Only
  // what does not fit waits for the socket to become writable.
  error_code ec;
  size_t written = socket_.write_some(pending_, ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) return Finish();
  if (written > 0) last_written_ = Clock::now();
  queued_bytes_ -= written;
  size_t done = 0;
  while (done < pending_.size() && written >= pending_[done].bytes.size()) {
    written -= pending_[done].bytes.size();
    Uncount(pending_[done]);
    ++done;
  }
  if (done < pending_.size() && written > 0) {
    pending_[done].bytes += written;
    front_partial_ = true;
  } else if (done > 0) {
    front_partial_ = false;
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(done));
  if (done > 0) front_end_->hub().budget().MaybeNotify();
  if (pending_.empty()) {
    if (pending_.capacity() > 256) pending_.shrink_to_fit();
    return OnQueueDrained();
  }
  writing_ = true;
  front_partial_ = false;  // the whole vector goes to the asynchronous write
  inflight_.swap(pending_);
  asio::async_write(socket_, inflight_, [self = shared_from_this()](error_code ec, std::size_t) {
    self->OnWrite(ec);
  });
}

void WsSession::FlushConflated() {
  BatchWrites batch(thread_);
  auto waiting = std::move(rare_->conflated);
  rare_->conflated.clear();
  for (auto& [topic, c] : waiting) {
    absl::string_view frame = c.message->Frame(identity().format);
    bool queued;
    if (c.skipped > 0 && identity().format == DeliveryFormat::kJson) {
      // The shared frame, with "skipped":N before its closing brace: this
      // connection's alone.
      size_t header = static_cast<uint8_t>(frame[1]) < 126 ? 2 : (static_cast<uint8_t>(frame[1]) == 126 ? 4 : 10);
      absl::string_view body = frame.substr(header);
      body.remove_suffix(1);
      queued = EnqueueOwned(
          BuildFrame(WsOpcode::kText, absl::StrCat(body, R"(,"skipped":)", c.skipped, "}")),
          /*bypass_limit=*/true);
    } else {
      // At most one frame per conflating topic: never the reason for a
      // slow-consumer close.
      queued = Enqueue({c.message, asio::const_buffer(frame.data(), frame.size()), 0, 0},
                       /*deferred=*/true, /*bypass_limit=*/true);
    }
    if (queued) {
      ++messages_sent_;
      IoThreadStats::Add(thread_->stats.messages_out, 1);
      IoThreadStats::Add(thread_->stats.bytes_out, frame.size());
    }
  }
}

void WsSession::OnWrite(error_code ec) {
  writing_ = false;
  for (const auto& item : inflight_) {
    queued_bytes_ -= item.bytes.size();
    Uncount(item);
  }
  inflight_.clear();
  if (inflight_.capacity() > 256) inflight_.shrink_to_fit();
  front_end_->hub().budget().MaybeNotify();
  if (phase_ == Phase::kClosed) return;
  if (ec) return Finish();
  last_written_ = Clock::now();
  if (rare_ && !rare_->conflated.empty() && phase_ == Phase::kOpen && !close_sent_) {
    FlushConflated();
    if (phase_ == Phase::kClosed || writing_) return;  // the flush started the write
  }
  DoWrite();
}

void WsSession::AfterFlush(bool linger) {
  after_flush_ = linger ? AfterFlushStep::kLinger : AfterFlushStep::kClose;
  if (!writing_) DoWrite();
}

void WsSession::OnQueueDrained() {
  if (after_flush_ == AfterFlushStep::kNothing || phase_ == Phase::kClosed) return;
  AfterFlushStep step = after_flush_;
  after_flush_ = AfterFlushStep::kNothing;
  error_code ignored;
  socket_.shutdown(Socket::shutdown_send, ignored);
  if (step == AfterFlushStep::kClose) return Finish();
  // Read until the peer's EOF, so that closing with its data unread does
  // not reset the connection before it has read our close frame.
  phase_ = Phase::kLingering;
}

// ----------------------------------------------------------------- ending

void WsSession::StartClose(uint16_t code, absl::string_view reason, CloseMode mode) {
  if (phase_ != Phase::kOpen) return;
  StopAwaitingAuth();  // closing now, whatever it was waiting for
  Unregister();
  close_sent_ = true;
  phase_ = Phase::kClosing;
  EnqueueOwned(BuildCloseFrame(code, reason), /*bypass_limit=*/true);  // may fail the socket
  if (phase_ == Phase::kClosed) return;
  if (mode != CloseMode::kHandshake) {
    AfterFlush(/*linger=*/mode == CloseMode::kFail);
    if (phase_ == Phase::kClosed) return;
  }
  // The close handshake (or the flush, or the lingering) has this long.
  TimerWheel::Entry* entry = this;
  thread_->wheel->Schedule(entry, Clock::now() + absl::ToChronoMilliseconds(
                                                     front_end_->options().handshake_timeout));
}

void WsSession::SlowConsumer() {
  if (phase_ != Phase::kOpen) return;
  IoThreadStats::Add(thread_->stats.slow_disconnects, 1);
  spdlog::debug("connection {}: outbound queue over {} bytes, closing", id(),
                front_end_->options().max_outbound_queue_bytes);
  // Drop what has not reached the socket (but the frame the socket has part
  // of): the client is too far behind to catch up, and this frees its share
  // of memory now.
  size_t keep = front_partial_ ? 1 : 0;
  for (size_t i = keep; i < pending_.size(); ++i) {
    queued_bytes_ -= pending_[i].bytes.size();
    Uncount(pending_[i]);
  }
  pending_.resize(std::min(keep, pending_.size()));
  pending_.shrink_to_fit();
  front_end_->hub().budget().MaybeNotify();
  StartClose(kCloseSlowConsumer, "slow consumer: outbound queue full", CloseMode::kHandshake);
}

void WsSession::Close(uint16_t code, std::string reason) {
  asio::post(thread_->context, [self = shared_from_this(), code, reason = std::move(reason)] {
    self->CloseOnIoThread(code, reason);
  });
}

void WsSession::CloseOnIoThread(uint16_t code, absl::string_view reason) {
  StartClose(code, reason, CloseMode::kHandshake);
}

void WsSession::Unregister() {
  if (!registered_) return;
  registered_ = false;
  for (const auto& t : topics_) front_end_->hub().Unsubscribe(t, id());
  topics_.clear();
  front_end_->hub().RemoveConnection(id());
}

void WsSession::Finish() {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kClosed;
  StopAwaitingAuth();
  Unregister();
  error_code ignored;
  socket_.close(ignored);  // pending operations end with operation_aborted
  for (const auto& item : pending_) Uncount(item);
  pending_.clear();
  pending_.shrink_to_fit();
  queued_bytes_ = 0;
  front_end_->hub().budget().MaybeNotify();
  TimerWheel::Entry* entry = this;
  thread_->wheel->Cancel(entry);
  thread_->sessions.erase(this);
  IoThreadStats::Add(thread_->stats.sockets, -1);
  front_end_->OnSocketClosed(identity());
}

void WsSession::ScheduleKeepAlive() {
  const auto idle = absl::ToChronoMilliseconds(front_end_->options().idle_timeout);
  // Ping once half the idle time has passed without a byte from the client;
  // give up once the full idle time has passed without a byte either way.
  // Reads do not reschedule (they only stamp last_read_), so with a ping out
  // look again within half the idle time: its pong may be back by then, and
  // the next ping due. The token's expiry (or the time to authenticate) is
  // the other deadline.
  auto give_up = std::max(last_read_, last_written_) + idle;
  auto next = std::min(give_up, (ping_outstanding_ ? Clock::now() : last_read_) + idle / 2);
  next = std::min(next, auth_deadline_);
  TimerWheel::Entry* entry = this;
  thread_->wheel->Schedule(entry, next);
}

void WsSession::OnDeadline() {
  auto self = shared_from_this();  // a close below may drop the last owner
  if (phase_ != Phase::kOpen) {
    // The close handshake or the lingering took too long.
    IoThreadStats::Add(thread_->stats.close_timeouts, 1);
    return Finish();
  }
  const auto idle = absl::ToChronoMilliseconds(front_end_->options().idle_timeout);
  auto now = Clock::now();
  if (now >= auth_deadline_) {
    if (!authenticated_) {
      IoThreadStats::Add(thread_->stats.auth_failures, 1);
      return StartClose(kCloseUnauthorized, "no token in time", CloseMode::kHandshake);
    }
    IoThreadStats::Add(thread_->stats.token_expirations, 1);
    return StartClose(kCloseTokenExpired, "token expired", CloseMode::kHandshake);
  }
  // Alive is hearing from the client, or its TCP taking what we write: a
  // subscriber busy reading a backlog answers our ping late, and is no less
  // alive for it. A dead peer stops taking bytes once its buffers are full.
  if (now - std::max(last_read_, last_written_) >= idle) {
    IoThreadStats::Add(thread_->stats.idle_disconnects, 1);
    return StartClose(kCloseGoingAway, "idle timeout", CloseMode::kAbandon);
  }
  if (now - last_read_ >= idle / 2 && !ping_outstanding_) {
    ping_outstanding_ = true;
    EnqueueOwned(BuildFrame(WsOpcode::kPing, {}));
    if (phase_ != Phase::kOpen) return;
  }
  ScheduleKeepAlive();
}

}  // namespace fanout
