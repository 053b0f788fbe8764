// Fuzzes the WebSocket frame parser (ws/frame_parser.h) with client bytes.
// The first byte picks how the rest arrives: in reads of that many bytes
// (0: one read). Invariants: the events are the same however the bytes are
// split; nothing follows a close or a protocol error; text messages are
// UTF-8; no message exceeds the limit; control payloads fit 125 bytes; error
// codes are 1002, 1007 or 1009; an idle parser holds no heap bytes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/utf8.h"
#include "ws/frame_parser.h"

namespace {

constexpr size_t kMaxMessageBytes = 4096;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

class Recorder : public fanout::WsFrameParser::Handler {
 public:
  std::vector<std::string> events;
  bool ended = false;

  void OnMessage(bool text, absl::string_view payload) override {
    Begin();
    Check(payload.size() <= kMaxMessageBytes, "a message over the limit");
    if (text) Check(fanout::IsValidUtf8(payload), "a text message that is not UTF-8");
    events.push_back(absl::StrCat(text ? "text " : "binary ", payload));
  }
  void OnPing(absl::string_view payload) override {
    Begin();
    Check(payload.size() <= 125, "a ping over 125 bytes");
    events.push_back(absl::StrCat("ping ", payload));
  }
  void OnPong(absl::string_view payload) override {
    Begin();
    Check(payload.size() <= 125, "a pong over 125 bytes");
    events.push_back(absl::StrCat("pong ", payload));
  }
  void OnClose(uint16_t code, absl::string_view reason) override {
    Begin();
    Check(code == 0 || fanout::IsValidCloseCode(code), "a close with an invalid code");
    Check(code != 0 || reason.empty(), "a reason without a code");
    Check(fanout::IsValidUtf8(reason), "a close reason that is not UTF-8");
    events.push_back(absl::StrCat("close ", code, " ", reason));
    ended = true;
  }
  void OnProtocolError(uint16_t code, absl::string_view reason) override {
    Begin();
    Check(code == fanout::kCloseProtocolError || code == fanout::kCloseInvalidPayload ||
              code == fanout::kCloseTooBig,
          "a protocol error with another code");
    Check(reason.size() <= 123, "an error reason that does not fit a close frame");
    // The reason may describe where in the stream it happened; only the
    // code must agree between splits.
    events.push_back(absl::StrCat("error ", code));
    ended = true;
  }

 private:
  void Begin() { Check(!ended, "an event after the parser stopped"); }
};

std::vector<std::string> Parse(const uint8_t* data, size_t size, size_t chunk) {
  fanout::WsFrameParser parser(kMaxMessageBytes);
  Recorder recorder;
  std::string copy(reinterpret_cast<const char*>(data), size);  // Feed unmasks in place
  for (size_t pos = 0; pos < size || pos == 0; pos += chunk) {
    size_t n = std::min(chunk, size - pos);
    parser.Feed(copy.data() + pos, n, &recorder);
    if (parser.idle()) Check(parser.held_bytes() == 0 || parser.stopped(), "an idle parser holds bytes");
    if (size == 0) break;
  }
  Check(parser.stopped() == recorder.ended, "stopped() disagrees with the events");
  return recorder.events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = data[0];
  ++data;
  --size;
  std::vector<std::string> whole = Parse(data, size, std::max<size_t>(size, 1));
  if (chunk != 0 && chunk < size) {
    Check(Parse(data, size, chunk) == whole, "the events depend on how the bytes are split");
  }
  return 0;
}
