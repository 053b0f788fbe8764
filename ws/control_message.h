#ifndef FANOUT_WS_CONTROL_MESSAGE_H_
#define FANOUT_WS_CONTROL_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <boost/json/value.hpp>

#include "absl/strings/string_view.h"
#include "core/history.h"
#include "core/message.h"

namespace fanout {

// An error reply's `code` and `message`, as the client receives them.
struct ControlError {
  std::string code;
  std::string message;
};

enum class ControlOp : uint8_t { kUnknown, kSubscribe, kUnsubscribe, kPublish, kAuth, kRefresh, kPing,
                                 kPresence };

// A client's JSON control message (docs/protocol.md), checked as far as it
// can be without the connection's state. The first error a client sees must
// not depend on what else it got wrong, so errors come in the order the
// session checks them, interleaved with its own checks:
//   1. `malformed`: not JSON, not an object, an id that is not a number,
//      string or null (or a number out of range, such as 1e999), no string
//      op; for auth and refresh, no token.
//   2. (session) authentication; a ping needs nothing more.
//   3. `invalid`: an unknown op; subscribe, unsubscribe, publish or presence
//      without a valid topic (a pattern only to subscribe and unsubscribe); a subscribe whose `since` is not {"seq":N,"epoch":"E"}.
//   4. (session) the publish permission.
//   5. `invalid_payload`: a publish without exactly one valid `data`,
//      `text` or `b64` (`data` with a number out of range is not valid), or
//      with an `echo` that is not a boolean.
// Fields that follow an error are unset.
struct ControlMessage {
  boost::json::value id;  // the request's id, echoed in replies; null when absent
  std::optional<ControlError> malformed;
  ControlOp op = ControlOp::kUnknown;
  std::string token;  // auth, refresh: never empty
  std::optional<ControlError> invalid;
  std::string topic;  // subscribe, unsubscribe, publish: a valid topic
  // subscribe: the position the client saw last ({"seq":N,"epoch":"..."}),
  // to recover what it missed since.
  std::optional<TopicPosition> since;
  // subscribe: "conflate":true, only the newest message while behind.
  bool conflate = false;
  // subscribe: "presence":true, hear the topic's joins and leaves.
  bool presence = false;
  std::optional<ControlError> invalid_payload;
  // publish: the payload's bytes (`data` serialized, `text` as it is, `b64`
  // decoded) and kind, and whether the sender receives it too.
  PayloadKind kind = PayloadKind::kJson;
  std::string payload;
  bool echo = true;
};

// Parses `text`; topics longer than `max_topic_length` are invalid. Never
// fails otherwise: every problem is one of the message's errors.
// Thread: safe from any thread (no state).
ControlMessage ParseControlMessage(absl::string_view text, size_t max_topic_length);

}  // namespace fanout

#endif  // FANOUT_WS_CONTROL_MESSAGE_H_
