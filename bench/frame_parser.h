#ifndef FANOUT_BENCH_FRAME_PARSER_H_
#define FANOUT_BENCH_FRAME_PARSER_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace fanout {

// Every bench payload ends with its send time: kStampDigits ASCII digits of
// CLOCK_MONOTONIC nanoseconds, zero-padded; '.' pads the front up to the
// payload size. ASCII keeps the payload a text frame and lets the JSON
// envelope carry it unescaped as "text":"...", two bytes before the frame's end.
inline constexpr size_t kStampDigits = 20;

// Writes the stamp for `ns` into the last kStampDigits bytes of `payload`
// (which has at least that many).
inline void WriteStamp(char* payload_end, uint64_t ns) {
  char* p = payload_end;
  for (size_t i = 0; i < kStampDigits; ++i) {
    *--p = static_cast<char>('0' + ns % 10);
    ns /= 10;
  }
}

// FrameParser decodes server-to-client WebSocket frames (RFC 6455 section
// 5.2: unmasked, no extensions) incrementally, a read buffer at a time, and
// keeps only a few dozen bytes per connection: payloads are never buffered,
// only the send stamp (the kStampDigits bytes that end `stamp_tail` bytes before
// a data frame's end) and the body of control frames are captured.
// The sink receives OnMessage(bool stamped, uint64_t stamp_ns, uint64_t bytes),
// OnPing(const uint8_t* data, size_t n) and OnClose(uint16_t code).
// Thread: confined to the connection's thread.
class FrameParser {
 public:
  explicit FrameParser(uint8_t stamp_tail = 0) : stamp_tail_(stamp_tail) {}

  // Consumes `n` bytes. Returns false on a protocol violation (masked or
  // reserved-bit frame, bad control frame); the connection should be dropped.
  template <typename Sink>
  bool Feed(const uint8_t* p, size_t n, Sink& sink) {
    const uint8_t* end = p + n;
    for (;;) {
      if (!in_payload_) {
        if (p == end) return true;
        size_t avail = static_cast<size_t>(end - p);
        // Fast path: the whole header is in this buffer.
        if (header_have_ == 0 && avail >= 2 && avail >= HeaderSize(p[1])) {
          size_t h = HeaderSize(p[1]);
          if (!BeginFrame(p)) return false;
          p += h;
        } else {
          header_[header_have_++] = *p++;
          if (header_have_ < 2 || header_have_ < HeaderSize(header_[1])) continue;
          if (!BeginFrame(header_)) return false;
          header_have_ = 0;
        }
        if (remaining_ == 0 && !EndFrame(sink)) return false;
        continue;
      }
      if (p == end) return true;
      size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, static_cast<uint64_t>(end - p)));
      Capture(p, take);
      p += take;
      remaining_ -= take;
      if (remaining_ == 0 && !EndFrame(sink)) return false;
    }
  }

 private:
  static constexpr uint64_t kNoStamp = std::numeric_limits<uint64_t>::max();

  static size_t HeaderSize(uint8_t second) {
    uint8_t len7 = second & 0x7F;
    size_t size = len7 < 126 ? 2 : (len7 == 126 ? 4 : 10);
    return size + ((second & 0x80) ? 4 : 0);
  }

  bool BeginFrame(const uint8_t* h) {
    if ((h[0] & 0x70) != 0 || (h[1] & 0x80) != 0) return false;  // RSV bits, masked
    fin_ = (h[0] & 0x80) != 0;
    opcode_ = h[0] & 0x0F;
    uint64_t len = h[1] & 0x7F;
    if (len == 126) {
      len = (uint64_t{h[2]} << 8) | h[3];
    } else if (len == 127) {
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | h[2 + i];
    }
    if (opcode_ >= 8 && (len > 125 || !fin_)) return false;
    length_ = remaining_ = len;
    offset_ = 0;
    bool data = opcode_ <= 2;
    stamp_begin_ = data && len >= stamp_tail_ + kStampDigits ? len - stamp_tail_ - kStampDigits
                                                             : kNoStamp;
    in_payload_ = true;
    return true;
  }

  // Copies the parts of payload bytes [offset_, offset_ + n) that we keep.
  void Capture(const uint8_t* p, size_t n) {
    if (stamp_begin_ != kNoStamp) {
      uint64_t lo = std::max(offset_, stamp_begin_);
      uint64_t hi = std::min(offset_ + n, stamp_begin_ + kStampDigits);
      if (lo < hi) std::memcpy(stamp_ + (lo - stamp_begin_), p + (lo - offset_), hi - lo);
    } else if (opcode_ >= 8) {
      std::memcpy(control_ + offset_, p, n);  // control frames are <= 125 bytes
    }
    offset_ += n;
  }

  template <typename Sink>
  bool EndFrame(Sink& sink) {
    in_payload_ = false;
    switch (opcode_) {
      case 0x0:
      case 0x1:
      case 0x2:
        if (fin_) {
          uint64_t ns = 0;
          bool stamped = stamp_begin_ != kNoStamp;
          for (size_t i = 0; stamped && i < kStampDigits; ++i) {
            uint8_t d = stamp_[i] - '0';
            if (d > 9) stamped = false;
            ns = ns * 10 + d;
          }
          sink.OnMessage(stamped, ns, length_);
        }
        return true;
      case 0x8:
        sink.OnClose(length_ >= 2 ? static_cast<uint16_t>((control_[0] << 8) | control_[1]) : 1005);
        return true;
      case 0x9:
        sink.OnPing(control_, static_cast<size_t>(length_));
        return true;
      case 0xA:
        return true;
      default:
        return false;
    }
  }

  uint64_t length_ = 0;
  uint64_t remaining_ = 0;
  uint64_t offset_ = 0;
  uint64_t stamp_begin_ = kNoStamp;
  uint8_t header_[14] = {};
  uint8_t header_have_ = 0;
  uint8_t opcode_ = 0;
  uint8_t stamp_tail_ = 0;
  bool fin_ = false;
  bool in_payload_ = false;
  uint8_t stamp_[kStampDigits] = {};
  uint8_t control_[125] = {};
};

}  // namespace fanout

#endif  // FANOUT_BENCH_FRAME_PARSER_H_
