#include "ws/control_message.h"

#include <cmath>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/topic.h"
#include "core/topic_pattern.h"

namespace fanout {

namespace json = boost::json;

namespace {

absl::string_view View(const json::string& s) { return absl::string_view(s.data(), s.size()); }

// Boost.JSON parses a number too large for a double (1e999) as infinity and
// serializes it as `Infinity`, which is not JSON: such a value can be
// neither echoed in a reply nor delivered to subscribers.
bool IsFinite(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_:
      return std::isfinite(v.get_double());
    case json::kind::array:
      for (const auto& e : v.get_array()) {
        if (!IsFinite(e)) return false;
      }
      return true;
    case json::kind::object:
      for (const auto& e : v.get_object()) {
        if (!IsFinite(e.value())) return false;
      }
      return true;
    default:
      return true;
  }
}

// The topic of subscribe, unsubscribe and publish; the first two may name
// a pattern (`orders.*`, `orders.>`) instead.
std::optional<ControlError> ParseTopic(const json::object& obj, size_t max_topic_length,
                                       bool pattern_allowed, std::string* topic) {
  auto* topic_value = obj.if_contains("topic");
  if (!topic_value || !topic_value->is_string()) {
    return ControlError{"invalid_message", "missing string field 'topic'"};
  }
  absl::string_view t = View(topic_value->get_string());
  if (pattern_allowed && IsPattern(t)) {
    auto pattern = TopicPattern::Parse(t, max_topic_length);
    if (!pattern.ok()) return ControlError{"invalid_topic", std::string(pattern.status().message())};
  } else if (absl::Status s = ValidateTopic(t, max_topic_length); !s.ok()) {
    return ControlError{"invalid_topic", std::string(s.message())};
  }
  *topic = std::string(t);
  return std::nullopt;
}

// subscribe's optional {"seq":N,"epoch":"E"}.
std::optional<ControlError> ParseSince(const json::object& obj, std::optional<TopicPosition>* out) {
  const json::value* since = obj.if_contains("since");
  if (since == nullptr || since->is_null()) return std::nullopt;
  ControlError bad{"invalid_message",
                   R"('since' must be {"seq":N,"epoch":"..."}, as a delivery or reply gave them)"};
  const json::object* o = since->if_object();
  if (o == nullptr) return bad;
  const json::value* seq = o->if_contains("seq");
  const json::value* epoch = o->if_contains("epoch");
  if (seq == nullptr || epoch == nullptr || !epoch->is_string() ||
      epoch->get_string().size() > kMaxEpochLength) {
    return bad;
  }
  TopicPosition p;
  if (seq->is_uint64()) {
    p.seq = seq->get_uint64();
  } else if (seq->is_int64() && seq->get_int64() >= 0) {
    p.seq = static_cast<uint64_t>(seq->get_int64());
  } else {
    return bad;
  }
  p.epoch = std::string(View(epoch->get_string()));
  *out = std::move(p);
  return std::nullopt;
}

std::optional<ControlError> ParsePayload(const json::object& obj, ControlMessage* m) {
  // Exactly one of data (any JSON value), text (a string) and b64.
  const json::value* data = obj.if_contains("data");
  const json::value* text = obj.if_contains("text");
  const json::value* b64 = obj.if_contains("b64");
  if ((data != nullptr) + (text != nullptr) + (b64 != nullptr) != 1) {
    return ControlError{"invalid_message", "a publish carries exactly one of 'data', 'text' and 'b64'"};
  }
  if (data) {
    if (!IsFinite(*data)) return ControlError{"invalid_message", "'data' has a number out of range"};
    m->payload = json::serialize(*data);
    m->kind = PayloadKind::kJson;
  } else if (text) {
    if (!text->is_string()) return ControlError{"invalid_message", "'text' must be a string"};
    m->payload = std::string(View(text->get_string()));
    m->kind = PayloadKind::kText;
  } else {
    if (!b64->is_string()) return ControlError{"invalid_message", "'b64' must be a string"};
    if (!absl::Base64Unescape(View(b64->get_string()), &m->payload)) {
      m->payload.clear();
      return ControlError{"invalid_message", "'b64' is not valid base64"};
    }
    m->kind = PayloadKind::kBinary;
  }
  if (auto* e = obj.if_contains("echo")) {
    if (!e->is_bool()) return ControlError{"invalid_message", "'echo' must be true or false"};
    m->echo = e->get_bool();
  }
  return std::nullopt;
}

}  // namespace

ControlMessage ParseControlMessage(absl::string_view text, size_t max_topic_length) {
  ControlMessage m;
  boost::system::error_code ec;
  json::value doc = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) {
    m.malformed = ControlError{"invalid_json", absl::StrCat("not valid JSON: ", ec.message())};
    return m;
  }
  json::object* obj = doc.if_object();
  if (!obj) {
    m.malformed = ControlError{"invalid_message", "a control message is a JSON object"};
    return m;
  }
  if (auto* v = obj->if_contains("id")) {
    if (!v->is_string() && !v->is_number() && !v->is_null()) {
      m.malformed = ControlError{"invalid_message", "id must be a number or a string"};
      return m;
    }
    if (!IsFinite(*v)) {
      m.malformed = ControlError{"invalid_message", "id is a number out of range"};
      return m;
    }
    m.id = *v;
  }
  auto* op_value = obj->if_contains("op");
  if (!op_value || !op_value->is_string()) {
    m.malformed = ControlError{"invalid_message", "missing string field 'op'"};
    return m;
  }
  absl::string_view op = View(op_value->get_string());
  if (op == "auth" || op == "refresh") {
    m.op = op == "auth" ? ControlOp::kAuth : ControlOp::kRefresh;
    auto* token_value = obj->if_contains("token");
    if (!token_value || !token_value->is_string() || token_value->get_string().empty()) {
      m.malformed = ControlError{"invalid_message", "missing string field 'token'"};
      return m;
    }
    m.token = std::string(View(token_value->get_string()));
    return m;
  }
  if (op == "ping") {
    m.op = ControlOp::kPing;
    return m;
  }
  if (op == "subscribe") {
    m.op = ControlOp::kSubscribe;
  } else if (op == "unsubscribe") {
    m.op = ControlOp::kUnsubscribe;
  } else if (op == "publish") {
    m.op = ControlOp::kPublish;
  } else if (op == "presence") {
    m.op = ControlOp::kPresence;
  } else {
    m.invalid = ControlError{
        "unknown_op",
        absl::StrCat("unknown op '", op,
                     "': expected subscribe, unsubscribe, publish, presence, auth, refresh or ping")};
    return m;
  }
  const bool pattern_allowed = m.op == ControlOp::kSubscribe || m.op == ControlOp::kUnsubscribe;
  m.invalid = ParseTopic(*obj, max_topic_length, pattern_allowed, &m.topic);
  if (!m.invalid && m.op == ControlOp::kSubscribe) m.invalid = ParseSince(*obj, &m.since);
  if (!m.invalid && m.op == ControlOp::kSubscribe) {
    if (auto* c = obj->if_contains("conflate")) {
      if (!c->is_bool()) {
        m.invalid = ControlError{"invalid_message", "'conflate' must be true or false"};
      } else {
        m.conflate = c->get_bool();
      }
    }
  }
  if (!m.invalid && m.op == ControlOp::kSubscribe) {
    if (auto* p = obj->if_contains("presence")) {
      if (!p->is_bool()) {
        m.invalid = ControlError{"invalid_message", "'presence' must be true or false"};
      } else {
        m.presence = p->get_bool();
      }
    }
  }
  if (m.invalid || m.op != ControlOp::kPublish) return m;
  m.invalid_payload = ParsePayload(*obj, &m);
  return m;
}

}  // namespace fanout
