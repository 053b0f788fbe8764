#include "ws/frame_parser.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace fanout {

bool IsValidCloseCode(uint16_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

namespace {

bool IsControl(uint8_t opcode) { return (opcode & 0x8) != 0; }

}  // namespace

void WsFrameParser::Fail(uint16_t code, absl::string_view reason, Handler* handler) {
  stopped_ = true;
  handler->OnProtocolError(code, reason);
}

void WsFrameParser::ResetMessage() {
  in_message_ = false;
  message_size_ = 0;
  // Give the memory back: a connection holds no buffer between messages.
  std::string().swap(message_);
}

int WsFrameParser::ParseHeader(const uint8_t* p, size_t avail, Handler* handler) {
  // What the first two bytes say is checked at once, so that a bad frame is
  // refused without waiting for the rest of its header.
  const uint8_t b0 = p[0], b1 = p[1];
  fin_ = (b0 & 0x80) != 0;
  opcode_ = b0 & 0x0F;
  const uint8_t len7 = b1 & 0x7F;
  if ((b0 & 0x70) != 0) {
    Fail(kCloseProtocolError, "reserved bits set without a negotiated extension", handler);
    return -1;
  }
  if (opcode_ != kContinuation && opcode_ != kText && opcode_ != kBinary && opcode_ != kClose &&
      opcode_ != kPing && opcode_ != kPong) {
    Fail(kCloseProtocolError, absl::StrCat("unknown opcode ", opcode_), handler);
    return -1;
  }
  if ((b1 & 0x80) == 0) {
    Fail(kCloseProtocolError, "client frames must be masked", handler);
    return -1;
  }
  if (IsControl(opcode_)) {
    if (!fin_) {
      Fail(kCloseProtocolError, "fragmented control frame", handler);
      return -1;
    }
    if (len7 > 125) {
      Fail(kCloseProtocolError, "control frame over 125 bytes", handler);
      return -1;
    }
  }
  const size_t ext = len7 == 126 ? 2 : (len7 == 127 ? 8 : 0);
  const size_t need = 2 + ext + 4;
  if (avail < need) return 0;
  uint64_t len = len7;
  if (ext == 2) {
    len = (uint64_t{p[2]} << 8) | p[3];
    if (len < 126) {
      Fail(kCloseProtocolError, "frame length not in its shortest form", handler);
      return -1;
    }
  } else if (ext == 8) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
    if (len >> 63) {
      Fail(kCloseProtocolError, "frame length over 2^63", handler);
      return -1;
    }
    if (len <= 0xFFFF) {
      Fail(kCloseProtocolError, "frame length not in its shortest form", handler);
      return -1;
    }
  }
  std::memcpy(mask_, p + 2 + ext, 4);
  mask_pos_ = 0;
  remaining_ = len;
  return static_cast<int>(need);
}

bool WsFrameParser::BeginFrame(Handler* handler) {
  in_frame_ = true;
  if (IsControl(opcode_)) return true;
  if (opcode_ == kContinuation) {
    if (!in_message_) {
      Fail(kCloseProtocolError, "continuation frame without a message to continue", handler);
      return false;
    }
  } else {
    if (in_message_) {
      Fail(kCloseProtocolError, "new data frame before the fragmented message ended", handler);
      return false;
    }
    in_message_ = true;
    text_ = opcode_ == kText;
    message_size_ = 0;
    utf8_.Reset();
  }
  if (remaining_ > max_message_bytes_ - std::min<size_t>(message_size_, max_message_bytes_)) {
    Fail(kCloseTooBig, absl::StrCat("message over ", max_message_bytes_, " bytes"), handler);
    return false;
  }
  message_size_ += static_cast<size_t>(remaining_);
  return true;
}

void WsFrameParser::Unmask(char* data, size_t size) {
  // Eight bytes at a time with the key rotated to where this piece starts.
  uint8_t key[8];
  for (int i = 0; i < 8; ++i) key[i] = mask_[(mask_pos_ + i) & 3];
  uint64_t k;
  std::memcpy(&k, key, 8);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    w ^= k;
    std::memcpy(data + i, &w, 8);
  }
  for (; i < size; ++i) data[i] = static_cast<char>(data[i] ^ key[i & 7]);
  mask_pos_ = static_cast<uint8_t>((mask_pos_ + size) & 3);
}

void WsFrameParser::HandleControl(absl::string_view payload, Handler* handler) {
  switch (opcode_) {
    case kPing:
      handler->OnPing(payload);
      return;
    case kPong:
      handler->OnPong(payload);
      return;
    default:
      break;
  }
  // Close (RFC 6455, section 5.5.1): empty, or a code and a UTF-8 reason.
  if (payload.empty()) {
    stopped_ = true;
    handler->OnClose(0, {});
    return;
  }
  if (payload.size() == 1) return Fail(kCloseProtocolError, "close frame with a 1-byte body", handler);
  uint16_t code = static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) |
                                        static_cast<uint8_t>(payload[1]));
  if (!IsValidCloseCode(code)) {
    return Fail(kCloseProtocolError, absl::StrCat("invalid close code ", code), handler);
  }
  absl::string_view reason = payload.substr(2);
  if (!IsValidUtf8(reason)) {
    return Fail(kCloseInvalidPayload, "close reason is not valid UTF-8", handler);
  }
  stopped_ = true;
  handler->OnClose(code, reason);
}

void WsFrameParser::EndFrame(absl::string_view last_piece, Handler* handler) {
  in_frame_ = false;
  if (IsControl(opcode_)) {
    if (control_.empty()) return HandleControl(last_piece, handler);
    control_.append(last_piece.data(), last_piece.size());
    std::string payload;
    payload.swap(control_);
    return HandleControl(payload, handler);
  }
  if (!fin_) {
    if (!last_piece.empty()) message_.append(last_piece.data(), last_piece.size());
    return;
  }
  if (text_ && !utf8_.complete()) {
    return Fail(kCloseInvalidPayload, "text message is not valid UTF-8", handler);
  }
  if (message_.empty()) {
    // The whole message is this one piece: hand it over in place.
    bool text = text_;
    in_message_ = false;
    message_size_ = 0;
    return handler->OnMessage(text, last_piece);
  }
  message_.append(last_piece.data(), last_piece.size());
  std::string payload;
  payload.swap(message_);
  bool text = text_;
  ResetMessage();
  handler->OnMessage(text, payload);
}

void WsFrameParser::Feed(char* data, size_t size, Handler* handler) {
  size_t pos = 0;
  while (!stopped_ && pos < size) {
    if (!in_frame_) {
      int n;
      if (header_len_ > 0) {
        // Complete a header split across reads from a copy.
        size_t take = std::min(size - pos, sizeof(header_) - header_len_);
        std::memcpy(header_ + header_len_, data + pos, take);
        size_t have = header_len_ + take;
        n = have >= 2 ? ParseHeader(header_, have, handler) : 0;
        if (n < 0) return;
        if (n == 0) {
          header_len_ = static_cast<uint8_t>(have);
          pos += take;
          continue;
        }
        pos += static_cast<size_t>(n) - header_len_;
        header_len_ = 0;
      } else {
        size_t avail = size - pos;
        n = avail >= 2 ? ParseHeader(reinterpret_cast<const uint8_t*>(data + pos), avail, handler)
                       : 0;
        if (n < 0) return;
        if (n == 0) {
          std::memcpy(header_, data + pos, avail);  // avail < 14
          header_len_ = static_cast<uint8_t>(avail);
          pos = size;
          continue;
        }
        pos += static_cast<size_t>(n);
      }
      if (!BeginFrame(handler)) return;
      if (remaining_ == 0) {
        EndFrame({}, handler);
        continue;
      }
    }
    // Payload bytes of the current frame.
    size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, size - pos));
    char* piece = data + pos;
    Unmask(piece, take);
    remaining_ -= take;
    pos += take;
    absl::string_view view(piece, take);
    if (!IsControl(opcode_) && text_ && !utf8_.Feed(view)) {
      // Fail fast: no need to wait for the rest of the message.
      return Fail(kCloseInvalidPayload, "text message is not valid UTF-8", handler);
    }
    if (remaining_ == 0) {
      EndFrame(view, handler);
    } else if (IsControl(opcode_)) {
      control_.append(piece, take);
    } else {
      message_.append(piece, take);
    }
  }
}

}  // namespace fanout
