// Fuzzes the WebSocket control-message parser (ws/control_message.h) with
// whole text frames, and the delivery a valid publish becomes.
// Invariants: the stages of errors are exclusive, codes are the documented
// ones, what is accepted is what the session's next steps require (a valid
// topic, a non-empty token, a JSON or UTF-8 payload of its kind), and every
// reply and delivery built from it is valid JSON.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <set>
#include <string>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "core/message.h"
#include "core/topic.h"
#include "core/utf8.h"
#include "core/topic_pattern.h"
#include "ws/control_message.h"

namespace {

namespace json = boost::json;

constexpr size_t kMaxTopicLength = 64;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

bool IsJson(const std::string& text) {
  boost::system::error_code ec;
  json::parse(text, ec);
  return !ec;
}

// The reply the session sends for `e`, as WsSession builds it.
void CheckErrorReply(const json::value& id, const fanout::ControlError& e) {
  static const std::set<std::string> kCodes = {"invalid_json", "invalid_message", "unknown_op",
                                               "invalid_topic"};
  Check(kCodes.contains(e.code), "an undocumented error code");
  Check(!e.message.empty(), "an error without a message");
  json::object err;
  err["code"] = e.code;
  err["message"] = e.message;
  json::object reply;
  reply["id"] = id;
  reply["error"] = std::move(err);
  Check(IsJson(json::serialize(reply)), "an error reply that is not JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  fanout::ControlMessage m = fanout::ParseControlMessage(text, kMaxTopicLength);
  using fanout::ControlOp;
  Check(m.id.is_null() || m.id.is_number() || m.id.is_string(), "an id of another type");
  Check(IsJson(json::serialize(m.id)), "an id that does not serialize");
  if (m.malformed) {
    CheckErrorReply(m.id, *m.malformed);
    Check(!m.invalid && !m.invalid_payload, "errors after a malformed message");
    return 0;
  }
  switch (m.op) {
    case ControlOp::kAuth:
    case ControlOp::kRefresh:
      Check(!m.token.empty(), "auth without a token");
      Check(!m.invalid && !m.invalid_payload, "auth with a later error");
      return 0;
    case ControlOp::kPing:
      Check(!m.invalid && !m.invalid_payload, "ping with an error");
      return 0;
    case ControlOp::kUnknown:
      Check(m.invalid && m.invalid->code == "unknown_op", "an unknown op accepted");
      CheckErrorReply(m.id, *m.invalid);
      return 0;
    case ControlOp::kSubscribe:
    case ControlOp::kUnsubscribe:
    case ControlOp::kPublish:
    case ControlOp::kPresence:
      break;
  }
  if (m.invalid) {
    CheckErrorReply(m.id, *m.invalid);
    Check(!m.invalid_payload, "a payload error after a topic error");
    return 0;
  }
  const bool pattern_op = m.op == ControlOp::kSubscribe || m.op == ControlOp::kUnsubscribe;
  if (pattern_op && fanout::IsPattern(m.topic)) {
    // subscribe and unsubscribe may name a pattern (docs/protocol.md, "Patterns").
    Check(fanout::TopicPattern::Parse(m.topic, kMaxTopicLength).ok(), "an invalid pattern accepted");
  } else {
    Check(fanout::ValidateTopic(m.topic, kMaxTopicLength).ok(), "an invalid topic accepted");
  }
  Check(!m.presence || m.op == ControlOp::kSubscribe, "presence events outside a subscribe");
  if (m.since) {
    Check(m.op == ControlOp::kSubscribe, "since outside a subscribe");
    Check(m.since->epoch.size() <= fanout::kMaxEpochLength, "an epoch over the limit accepted");
  }
  if (m.op != ControlOp::kPublish) {
    Check(!m.invalid_payload, "a payload error without a publish");
    return 0;
  }
  if (m.invalid_payload) {
    CheckErrorReply(m.id, *m.invalid_payload);
    return 0;
  }
  switch (m.kind) {
    case fanout::PayloadKind::kJson:
      Check(IsJson(m.payload), "a data payload that is not one JSON value");
      break;
    case fanout::PayloadKind::kText:
      Check(fanout::IsValidUtf8(m.payload), "a text payload that is not UTF-8");
      break;
    case fanout::PayloadKind::kBinary:
      break;
  }
  // What subscribers receive.
  auto message = fanout::EncodeMessage(
      {.topic = m.topic, .seq = 1, .payload = m.payload, .kind = m.kind, .json = true, .raw = true});
  absl::string_view frame = message->Frame(fanout::DeliveryFormat::kJson);
  Check(frame.size() >= 2, "an empty delivery frame");
  // A server frame: FIN+opcode, an unmasked length of 1, 3 or 9 bytes.
  size_t header = (static_cast<uint8_t>(frame[1]) & 0x7f) == 126   ? 4
                  : (static_cast<uint8_t>(frame[1]) & 0x7f) == 127 ? 10
                                                                    : 2;
  Check(IsJson(std::string(frame.substr(header))), "a delivery that is not JSON");
  return 0;
}
