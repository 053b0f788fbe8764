#ifndef FANOUT_WS_WS_SESSION_H_
#define FANOUT_WS_WS_SESSION_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "auth/authority.h"
#include "core/hub.h"
#include "core/subscriber.h"
#include "ws/control_message.h"
#include "ws/frame_parser.h"
#include "ws/timer_wheel.h"
#include "ws/transport.h"

namespace fanout {

class WsFrontEnd;
struct IoThread;

// One WebSocket connection after the upgrade: a subscriber in the registry, a
// reader of JSON control messages, and the only writer of its socket. Frames
// of every kind (deliveries, replies, pongs, pings, the close frame) go
// through one outbound queue, bounded in bytes, written with gathered writes.
//
// Life: Start() registers it; it leaves the registry, the connection gauge and
// ListSubscribers the moment its close begins, by whatever path (client
// close, error, reset, idle timeout, Disconnect, slow consumer, shutdown);
// the socket closes once the close handshake ends or times out. One close
// frame per direction, and no data frame after ours (RFC 6455, 5.5.1).
//
// Owned by its pending asynchronous operations (and, while subscribed, by
// registry snapshots).
// Thread: confined to its IoThread; the Subscriber control calls may be made
// from any thread (they post).
class WsSession final : public Subscriber,
                        public std::enable_shared_from_this<WsSession>,
                        private WsFrameParser::Handler,
                        private TimerWheel::Entry {
 public:
  WsSession(Transport socket, Identity identity, WsFrontEnd* front_end,
            IoThread* thread);
  ~WsSession() override;

  // What the upgrade decided, for Start.
  struct StartParams {
    std::string response;             // the 101 response
    std::vector<std::string> topics;  // validated and permitted
    // since=: positions to recover from, for topics of `topics`.
    std::vector<std::pair<std::string, TopicPosition>> since;
    std::string early;                // bytes the client sent behind its request
    // Who the client is. Unset: it must authenticate with its first control
    // message, within --handshake_timeout (close 4001 otherwise); until
    // then it is not registered and may do nothing else.
    std::optional<Grant> grant;
    // Raw hub mode (`publish=`): every data frame the client sends is a
    // publish of its bytes to this topic (permitted by the caller).
    std::string raw_publish_topic;
    // The answer instead of the 101 when a topic cannot be added (the node's
    // topic limit).
    absl::AnyInvocable<std::string(const absl::Status&) &&> refusal;
  };
  // Registers the connection (unless it must authenticate first) and
  // subscribes its topics, then sends the 101 and starts reading. When a
  // topic cannot be added, nothing stays registered and the client gets the
  // refusal instead of the 101, then the connection closes.
  void Start(StartParams params);

  void DeliverOnIoThread(const std::shared_ptr<const Message>& message) override;

  // Subscriber control (any thread; see core/subscriber.h).
  void Close(uint16_t code, std::string reason) override;
  void Subscribe(std::string topic, absl::AnyInvocable<void(absl::Status) &&> done) override;
  void Unsubscribe(std::string topic, absl::AnyInvocable<void(bool) &&> done) override;
  void Describe(absl::AnyInvocable<void(Subscriber::State) &&> done) override;

  // Starts the closing handshake with `code` (idempotent: a close already
  // under way is not restarted).
  void CloseOnIoThread(uint16_t code, absl::string_view reason);

  // Writes what the thread's dirty sessions have queued. Runs on `thread`.
  static void FlushDirty(IoThread* thread);

  // With --write_delay, a session holds its deliveries for the delay only
  // while it has less than this queued: big messages gain nothing by waiting.
  static constexpr size_t kWriteDelayMaxBytes = 16 << 10;

 private:
  // A queued frame: bytes and whatever keeps them alive. Converts to a buffer
  // so a vector of items is itself a buffer sequence for a gathered write.
  struct OutItem {
    std::shared_ptr<const void> owner;
    boost::asio::const_buffer bytes;
    // Bytes the item's owner holds for this connection alone (0 for a shared
    // message), charged to the delivery budget with the entry itself.
    uint32_t owned : 31 = 0;
    uint32_t pong : 1 = 0;  // the pong the connection owes
    operator boost::asio::const_buffer() const { return bytes; }
  };
  static_assert(sizeof(void*) != 8 || sizeof(OutItem) == kQueueEntryBytes,
                "kQueueEntryBytes must be what a queue entry costs");
  enum class Phase : uint8_t {
    kOpen,       // data flows both ways
    kClosing,    // our close frame is queued or sent; waiting for the peer's
    kLingering,  // failed: our close frame is out, FIN sent, reading until EOF
    kClosed,     // socket closed, unregistered
  };

  // -- Reading --
  void WaitRead();
  void OnReadable(boost::system::error_code ec);
  void OnMessage(bool text, absl::string_view payload) override;
  void OnPing(absl::string_view payload) override;
  void OnPong(absl::string_view payload) override;
  void OnClose(uint16_t code, absl::string_view reason) override;
  void OnProtocolError(uint16_t code, absl::string_view reason) override;
  void HandleControl(absl::string_view text);
  // The auth, refresh and publish ops, past the checks HandleControl makes.
  void HandleAuth(const ControlMessage& m, bool refresh);
  void HandlePublish(const ControlMessage& m);
  // A data frame in raw hub mode.
  void PublishRaw(bool text, absl::string_view payload);
  // Takes a grant: its permissions, its user, its expiry. Drops
  // subscriptions it no longer permits and returns them.
  std::vector<std::string> Apply(Grant grant);
  bool TakeRateToken();

  // -- Subscriptions --
  // Subscribes (once); RESOURCE_EXHAUSTED at the per-connection or node limit.
  // With `since`, `recovery` receives what Hub::Subscribe found; the caller
  // answers, then queues the missed messages with Replay (before anything
  // else runs on this thread, so that live deliveries follow them).
  absl::Status SubscribeOnIoThread(absl::string_view topic, const TopicPosition* since = nullptr,
                                   Hub::Recovery* recovery = nullptr);
  void Replay(absl::string_view topic, const Hub::Recovery& recovery);
  // A cluster's recovery (Hub::Recover): the answer to the subscribe (`id`;
  // unset: the URL's since=, answered by an op:recovery notice) and the
  // topic's live messages wait until JetStream has answered.
  void BeginRecovery(const std::string& topic, const TopicPosition& since,
                     std::optional<boost::json::value> id);
  void FinishRecovery(const std::string& topic, uint64_t token, Hub::Recovery recovery);
  // For a live delivery while recoveries wait or have just ended: true when
  // it is held back (recovering) or dropped (a replay or the position
  // covered it). Only with rare_.
  bool HeldOrCovered(const std::shared_ptr<const Message>& message);
  // {"op":"presence","topic":..}: who is on the topic (Hub::QueryPresence).
  void HandlePresence(const ControlMessage& m);
  // How many user names a presence answer lists, and how long a cluster's
  // answer waits for the other nodes.
  static constexpr size_t kPresenceNames = 100;
  static constexpr absl::Duration kPresenceTimeout = absl::Milliseconds(500);
  // Returns true when the connection was on the topic.
  bool UnsubscribeOnIoThread(absl::string_view topic);

  // -- Writing --
  void Reply(std::string json);
  // Queues an owned frame (reply, pong, ping, close, HTTP response).
  bool EnqueueOwned(std::string bytes, bool bypass_limit = false, bool pong = false);
  // Queues bytes; closes the connection as a slow consumer when the queue
  // would exceed its limit (unless `bypass_limit`). Returns false when the
  // bytes were not queued. `deferred`: leave the write to the thread's flush
  // (deliveries) instead of writing now.
  bool Enqueue(OutItem item, bool deferred, bool bypass_limit = false);
  void DoWrite();
  // Writes what each session of `list` (a thread's dirty or delayed list)
  // has queued, and empties the list.
  static void FlushSessions(std::vector<std::shared_ptr<WsSession>>& list);
  void OnWrite(boost::system::error_code ec);
  // Releases what `items` hold from the queue's counters.
  void Uncount(const OutItem& item);
  // The queue is empty: do what after_flush_ says.
  void OnQueueDrained();

  // -- Ending --
  // How a close we start ends.
  enum class CloseMode : uint8_t {
    kHandshake,  // wait for the peer's close frame, then close the socket
    kFail,       // the peer broke the protocol: FIN once our frame is out, then
                 // read until its EOF so a reset cannot destroy our close frame
    kAbandon,    // the peer is gone (idle): close the socket once our frame is out
  };
  // Sends our close frame (idempotent: a close under way is not restarted).
  void StartClose(uint16_t code, absl::string_view reason, CloseMode mode);
  // Once the queue is drained: FIN and linger, or close.
  void AfterFlush(bool linger);
  void SlowConsumer();
  // Joins the hub (broadcasts, admin calls, the gauges). Once.
  void Register();
  // Leaves the registry, the hub and the gauges. Idempotent.
  void Unregister();
  // No longer counted as waiting for its auth op. Idempotent.
  void StopAwaitingAuth();
  // Closes the socket and drops everything. Idempotent.
  void Finish();
  void OnDeadline() override;
  void ScheduleKeepAlive();

  using Socket = Transport;
  using Clock = std::chrono::steady_clock;
  Socket socket_;
  WsFrontEnd* const front_end_;
  IoThread* const thread_;
  WsFrameParser parser_;
  Phase phase_ = Phase::kOpen;
  bool writing_ = false;
  bool dirty_ = false;  // in thread_->dirty or thread_->delayed
  bool registered_ = false;
  bool close_sent_ = false;
  enum class AfterFlushStep : uint8_t { kNothing, kLinger, kClose };
  AfterFlushStep after_flush_ = AfterFlushStep::kNothing;
  bool front_partial_ = false;    // pending_[0] is partly written
  bool ping_outstanding_ = false;
  bool pong_owed_ = false;  // a pong is queued and not yet written
  bool authenticated_ = false;       // has a grant (a token's or the anonymous one)
  bool awaiting_auth_ = false;       // counted in IoThreadStats::authenticating
  bool waiting_for_budget_ = false;  // raw hub mode: reading paused, the node is overloaded
  size_t queued_bytes_ = 0;  // frame bytes queued, for the outbound limit
  uint64_t messages_sent_ = 0;
  Clock::time_point last_read_;     // bytes arrived from the client
  Clock::time_point last_written_;  // the client's TCP took bytes from us
  // When the token runs out (close 4002), or when authentication must have
  // happened (close 4001); max when neither applies.
  Clock::time_point auth_deadline_ = Clock::time_point::max();
  std::shared_ptr<const Permissions> permissions_;  // null until authenticated
  std::string raw_publish_topic_;
  std::vector<OutItem> pending_;   // not yet handed to an asynchronous write
  std::vector<OutItem> inflight_;  // in the current asynchronous write
  absl::flat_hash_set<std::string> topics_;
  // Conflating subscriptions (docs/protocol.md, "Conflation"): while a write
  // is under way, a delivery of one of these topics waits here instead of in
  // the queue, a newer one taking its place; OnWrite queues them.
  struct Conflated {
    std::shared_ptr<const Message> message;
    uint64_t skipped = 0;
  };
  // Cluster recoveries waiting for JetStream, by topic (BeginRecovery).
  struct PendingRecovery {
    uint64_t token = 0;
    TopicPosition since;
    std::optional<boost::json::value> id;
    std::vector<std::shared_ptr<const Message>> held;
    size_t held_bytes = 0;
  };
  // State few connections ever use, made on first use (rare()) so that an
  // ordinary connection does not carry its empty maps.
  struct Rare {
    absl::flat_hash_set<std::string> conflate_topics;
    absl::flat_hash_map<std::string, Conflated> conflated;
    absl::flat_hash_map<std::string, PendingRecovery> recovering;
    uint64_t recovery_tokens = 0;
    // What every recovering topic holds (bounded by --max_outbound_queue_bytes).
    size_t held_bytes = 0;
    // After a cluster recovery: the topic's position its answer covered; a
    // live message of that epoch at or before it came twice (the read and
    // the live stream overlap) and is dropped. Gone with the first one after.
    absl::flat_hash_map<std::string, TopicPosition> covered;
  };
  std::unique_ptr<Rare> rare_;  // null until needed
  Rare& rare() {
    if (!rare_) rare_ = std::make_unique<Rare>();
    return *rare_;
  }
  // Forgets `topic` in rare_ (which exists).
  void UnsubscribeRare(absl::string_view topic);
  // Queues what waits in rare_->conflated, each saying how many it replaced.
  void FlushConflated();
  // Whether subscriptions to `topic` conflate by the node's --conflate.
  bool ConflatedByNode(absl::string_view topic) const;
  double rate_tokens_;
  Clock::time_point rate_time_;
};

}  // namespace fanout

#endif  // FANOUT_WS_WS_SESSION_H_
