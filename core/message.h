#ifndef FANOUT_CORE_MESSAGE_H_
#define FANOUT_CORE_MESSAGE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "core/delivery_budget.h"

namespace fanout {

// How a connection wants its deliveries (the `format` URL parameter).
enum class DeliveryFormat : uint8_t {
  // One JSON text frame:
  // {"topic":"t","seq":1,"epoch":"E","data"|"text"|"b64":...}.
  kJson = 0,
  // The exact payload bytes: a text frame when UTF-8, a binary frame otherwise.
  kRaw = 1,
};

// WebSocket opcodes the server sends (RFC 6455, section 5.2).
enum class WsOpcode : uint8_t { kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

// How a payload is carried in the JSON envelope, decided once per publish.
enum class PayloadKind : uint8_t { kJson, kText, kBinary };

// PayloadKind of `payload`: kJson when it parses as one JSON value, kText when
// it is other valid UTF-8, kBinary otherwise.
PayloadKind ClassifyPayload(absl::string_view payload);

// What a message is made of, for EncodeMessage.
struct MessageSpec {
  absl::string_view topic;  // ignored for a broadcast
  bool broadcast = false;   // the envelope then says "broadcast":true
  // A topic's message: 0 (skip_history) leaves out "seq" and "epoch".
  uint64_t seq = 0;
  absl::string_view epoch;  // the topic's epoch; empty: not written
  absl::string_view payload;
  // How the payload is carried: kJson (embedded as "data", and must be one
  // valid JSON value), kText ("text"; valid UTF-8, sent as a text frame to
  // raw clients), kBinary ("b64"; a binary frame to raw clients). Unset: as
  // ClassifyPayload says.
  std::optional<PayloadKind> kind;
  bool json = true;  // build the JSON envelope frame
  bool raw = false;  // build the raw frame
  // When set, the message is charged to it for as long as it lives.
  std::shared_ptr<DeliveryBudget> budget;
};

// The longest epoch a topic can have (a standalone node's are 10-15 bytes; a
// cluster's come from JetStream and are checked against this).
inline constexpr size_t kMaxEpochLength = 64;

// Returns a complete, unmasked, unfragmented server WebSocket frame.
std::string BuildFrame(WsOpcode opcode, absl::string_view payload);

// Returns a close frame carrying `code` and `reason` (truncated to fit 125 bytes).
std::string BuildCloseFrame(uint16_t code, absl::string_view reason);

// The largest delivery frame a node with these limits can build: a payload of
// `max_payload_bytes` that is not UTF-8, base64-encoded in a JSON envelope
// naming a topic of `max_topic_length` bytes. A connection's outbound queue
// must hold at least this much, or a client that reads well could be cut off.
size_t MaxDeliveryFrameBytes(size_t max_topic_length, size_t max_payload_bytes);

// One published message, encoded once and shared by every subscriber.
// Immutable after EncodeMessage returns.
// Thread: safe from any thread.
class Message {
 public:
  // The complete WebSocket frame for `format`; empty when the publish had no
  // subscriber of that format (EncodeMessage was told not to build it).
  absl::string_view Frame(DeliveryFormat format) const {
    return format == DeliveryFormat::kJson ? json_frame_ : raw_frame_;
  }
  uint64_t seq() const { return seq_; }
  // The topic's epoch (empty when unnumbered or not known).
  const std::string& epoch() const { return epoch_; }
  // The topic (empty for a broadcast).
  const std::string& topic() const { return topic_; }
  size_t payload_size() const { return payload_size_; }
  // What the message costs in memory, allocations included.
  int64_t memory_bytes() const { return memory_bytes_; }

  Message() = default;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  // Gives the message's memory back to the budget it was charged to.
  ~Message();

 private:
  friend std::shared_ptr<const Message> EncodeMessage(const MessageSpec& spec);
  friend std::shared_ptr<const Message> EncodeNotice(absl::string_view json,
                                                     std::shared_ptr<DeliveryBudget> budget);
  uint64_t seq_ = 0;
  std::string epoch_;
  std::string topic_;
  size_t payload_size_ = 0;
  int64_t memory_bytes_ = 0;
  std::string json_frame_;
  std::string raw_frame_;
  std::shared_ptr<DeliveryBudget> budget_;  // charged memory_bytes_ while alive
};

// Encodes a delivery: its frames for the formats asked for, once.
std::shared_ptr<const Message> EncodeMessage(const MessageSpec& spec);

// A notice from the node (a presence event): one JSON text frame for JSON
// clients, nothing for raw ones; no topic, so no conflation or recovery
// holds it. Charged to `budget` when set.
std::shared_ptr<const Message> EncodeNotice(absl::string_view json,
                                            std::shared_ptr<DeliveryBudget> budget);

}  // namespace fanout

#endif  // FANOUT_CORE_MESSAGE_H_
