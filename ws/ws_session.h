#ifndef FANOUT_WS_WS_SESSION_H_
#define FANOUT_WS_WS_SESSION_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/functional/any_invocable.h"
#include "core/subscriber.h"
#include "ws/gate_stream.h"

namespace fanout {

class WsFrontEnd;
struct IoThread;

// Close codes the server sends (docs/protocol.md).
inline constexpr uint16_t kCloseGoingAway = 1001;      // node shutting down
inline constexpr uint16_t kClosePolicy = 1008;         // client message rate exceeded
inline constexpr uint16_t kCloseTooBig = 1009;         // inbound message over the limit
inline constexpr uint16_t kCloseSlowConsumer = 4008;   // outbound queue overflowed

// One WebSocket connection: a subscriber in the registry, a reader of JSON
// control messages, and the only writer of its socket. Deliveries and Beast's
// own frames go through one bounded queue, written with gathered writes.
// Owned by its pending asynchronous operations (and, while subscribed, by
// registry snapshots); it unregisters itself from everything when it closes.
// Thread: confined to its IoThread; Close() may be called from any thread.
class WsSession final : public Subscriber, public std::enable_shared_from_this<WsSession> {
 public:
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;

  WsSession(boost::asio::ip::tcp::socket socket, Identity identity, WsFrontEnd* front_end,
            IoThread* thread);
  ~WsSession() override;

  // Registers the connection, subscribes `topics` and only then sends the 101
  // response, so a publish that follows the client's handshake reaches it.
  void Accept(Request request, std::vector<std::string> topics);

  void DeliverOnIoThread(const std::shared_ptr<const Message>& message) override;

  // Subscriber control (any thread; see core/subscriber.h).
  void Close(uint16_t code, std::string reason) override;
  void Subscribe(std::string topic, absl::AnyInvocable<void(absl::Status) &&> done) override;
  void Unsubscribe(std::string topic, absl::AnyInvocable<void(bool) &&> done) override;
  void Describe(absl::AnyInvocable<void(Subscriber::State) &&> done) override;
  void CloseOnIoThread(uint16_t code, absl::string_view reason);

  // -- GateStream sink (Beast's writes and teardown) --
  template <typename ConstBufferSequence>
  bool EnqueueFromBeast(const ConstBufferSequence& buffers);
  template <typename Handler>
  void OnTeardown(Handler&& handler);

  size_t queued_bytes() const { return queued_bytes_; }

  // Writes what the thread's dirty sessions have queued. Runs on `thread`.
  static void FlushDirty(IoThread* thread);

 private:
  // A queued frame: bytes and whatever keeps them alive. Converts to a buffer
  // so a vector of items is itself a buffer sequence for a gathered write.
  struct OutItem {
    std::shared_ptr<const void> owner;
    boost::asio::const_buffer bytes;
    operator boost::asio::const_buffer() const { return bytes; }
  };
  enum class Phase : uint8_t { kHandshaking, kOpen, kClosing, kClosed };

  void OnAccept(boost::beast::error_code ec);
  void DoRead();
  void OnRead(boost::beast::error_code ec, std::size_t bytes);
  void HandleControl(absl::string_view text);
  // Subscribes (once); RESOURCE_EXHAUSTED at the per-connection limit.
  absl::Status SubscribeOnIoThread(absl::string_view topic);
  // Returns true when the connection was on the topic.
  bool UnsubscribeOnIoThread(absl::string_view topic);
  void Reply(std::string json);
  bool TakeRateToken();

  // Queues bytes; closes the connection as a slow consumer when the queue
  // would exceed its limit. Returns false when the bytes were not queued.
  // `deferred`: leave the write to the thread's flush (deliveries), instead
  // of writing now (replies, Beast's frames).
  bool Enqueue(OutItem item, bool deferred = false);
  void DoWrite();
  void OnWrite(boost::beast::error_code ec);
  void FinishTeardown(boost::beast::error_code ec);
  void SlowConsumer();
  // Unregisters everything. Idempotent.
  void Cleanup();

  using Socket = boost::asio::ip::tcp::socket;
  boost::beast::websocket::stream<GateStream<WsSession>> ws_;
  WsFrontEnd* const front_end_;
  IoThread* const thread_;
  Phase state_ = Phase::kHandshaking;
  bool writing_ = false;
  bool dirty_ = false;  // in thread_->dirty
  bool registered_ = false;
  size_t queued_bytes_ = 0;
  uint64_t messages_sent_ = 0;
  std::vector<OutItem> pending_;   // not yet handed to the socket
  std::vector<OutItem> inflight_;  // in the current gathered write
  boost::beast::flat_buffer read_buffer_;
  absl::flat_hash_set<std::string> topics_;
  absl::AnyInvocable<void(boost::beast::error_code)> teardown_;
  double rate_tokens_;
  std::chrono::steady_clock::time_point rate_time_;
};

template <typename ConstBufferSequence>
bool WsSession::EnqueueFromBeast(const ConstBufferSequence& buffers) {
  if (state_ == Phase::kClosed) return false;
  auto copy = std::make_shared<std::string>();
  copy->resize(boost::asio::buffer_size(buffers));
  boost::asio::buffer_copy(boost::asio::buffer(copy->data(), copy->size()), buffers);
  boost::asio::const_buffer bytes(copy->data(), copy->size());
  // Beast's frames are tiny and must not be refused: the close frame that
  // ends a slow consumer's connection is one of them.
  queued_bytes_ += bytes.size();
  pending_.push_back({std::move(copy), bytes});
  if (!writing_) DoWrite();
  return true;
}

template <typename Handler>
void WsSession::OnTeardown(Handler&& handler) {
  teardown_ = [h = std::forward<Handler>(handler)](boost::beast::error_code ec) mutable {
    std::move(h)(ec);
  };
  if (!writing_ && pending_.empty()) FinishTeardown({});
}

}  // namespace fanout

#endif  // FANOUT_WS_WS_SESSION_H_
