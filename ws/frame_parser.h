#ifndef FANOUT_WS_FRAME_PARSER_H_
#define FANOUT_WS_FRAME_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "core/utf8.h"

namespace fanout {

// Close codes of RFC 6455, section 7.4.1, that the server sends.
inline constexpr uint16_t kCloseNormal = 1000;
inline constexpr uint16_t kCloseGoingAway = 1001;      // node shutting down, idle timeout
inline constexpr uint16_t kCloseProtocolError = 1002;  // framing rules broken
inline constexpr uint16_t kCloseInvalidPayload = 1007; // text that is not UTF-8
inline constexpr uint16_t kClosePolicy = 1008;         // client message rate exceeded
inline constexpr uint16_t kCloseTooBig = 1009;         // inbound message over the limit
inline constexpr uint16_t kCloseTryAgainLater = 1013;  // the cluster cannot take a publish now
inline constexpr uint16_t kCloseUnauthorized = 4001;   // bad token, or none in time
inline constexpr uint16_t kCloseTokenExpired = 4002;   // the token ran out, not refreshed
inline constexpr uint16_t kCloseSlowConsumer = 4008;   // outbound queue overflowed

// Whether a close frame may carry `code` (RFC 6455, section 7.4, and the
// IANA registry, which added 1012-1014): 1000-1003, 1007-1014, 3000-4999.
bool IsValidCloseCode(uint16_t code);

// Parses the frames a client sends (RFC 6455, section 5): unmasks them,
// joins fragments into messages, validates text as UTF-8 as it arrives, and
// enforces the framing rules and the message size limit. No I/O: bytes go in,
// events come out, so it can be tested and fuzzed alone.
//
// Memory: nothing is held between messages unless a frame or a message is
// split across reads; then only its bytes so far. An unfragmented message
// that arrives in one read is handed over in place, never copied.
// Thread: not thread-safe (one per connection, on its I/O thread).
class WsFrameParser {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // A complete data message; `payload` lives until the call returns.
    virtual void OnMessage(bool text, absl::string_view payload) = 0;
    virtual void OnPing(absl::string_view payload) = 0;
    virtual void OnPong(absl::string_view payload) = 0;
    // The peer's close frame, well-formed: `code` is 0 when the frame had no
    // body (status 1005, "no status received"). The parser stops after it.
    virtual void OnClose(uint16_t code, absl::string_view reason) = 0;
    // The peer broke the protocol: fail the connection with `code` (1002,
    // 1007 or 1009) and `reason`. The parser stops after it.
    virtual void OnProtocolError(uint16_t code, absl::string_view reason) = 0;
  };

  // `max_message_bytes`: the largest data message (all fragments together).
  explicit WsFrameParser(size_t max_message_bytes) : max_message_bytes_(max_message_bytes) {}

  // Parses `size` bytes at `data`, which it may modify (unmasking happens in
  // place), calling `handler` for each event in order. Once stopped (a close
  // frame or an error), it ignores everything.
  void Feed(char* data, size_t size, Handler* handler);

  bool stopped() const { return stopped_; }
  // True when no partial frame or message is held.
  bool idle() const { return !in_frame_ && header_len_ == 0 && !in_message_; }
  // Heap bytes held for partial frames and messages.
  size_t held_bytes() const { return HeapBytes(message_) + HeapBytes(control_); }

 private:
  enum Opcode : uint8_t {
    kContinuation = 0x0,
    kText = 0x1,
    kBinary = 0x2,
    kClose = 0x8,
    kPing = 0x9,
    kPong = 0xA,
  };

  // Parses a header from `p` (at least 2 bytes, `avail` in all); returns its
  // length, 0 when more bytes are needed, or -1 after reporting an error.
  int ParseHeader(const uint8_t* p, size_t avail, Handler* handler);
  // Starts the frame whose header was parsed; false after an error.
  bool BeginFrame(Handler* handler);
  void Unmask(char* data, size_t size);
  // The current frame's payload has all arrived.
  void EndFrame(absl::string_view last_piece, Handler* handler);
  void HandleControl(absl::string_view payload, Handler* handler);
  void Fail(uint16_t code, absl::string_view reason, Handler* handler);
  void ResetMessage();
  static size_t HeapBytes(const std::string& s) {
    return s.capacity() > std::string().capacity() ? s.capacity() : 0;
  }

  const size_t max_message_bytes_;
  bool stopped_ = false;
  // Header bytes of a frame split across reads.
  uint8_t header_[14];
  uint8_t header_len_ = 0;
  // The frame being read.
  bool in_frame_ = false;
  bool fin_ = false;
  uint8_t opcode_ = 0;
  uint8_t mask_[4] = {0, 0, 0, 0};
  uint8_t mask_pos_ = 0;
  uint64_t remaining_ = 0;
  // The data message being assembled.
  bool in_message_ = false;
  bool text_ = false;
  size_t message_size_ = 0;
  Utf8Validator utf8_;
  std::string message_;
  std::string control_;  // a control frame's payload split across reads
};

}  // namespace fanout

#endif  // FANOUT_WS_FRAME_PARSER_H_
