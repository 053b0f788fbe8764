#include "ws/control_message.h"

#include <boost/json/serialize.hpp>

#include "gtest/gtest.h"

namespace fanout {
namespace {

constexpr size_t kMaxTopic = 256;

TEST(ControlMessage, ParsesSubscribeWithItsId) {
  ControlMessage m = ParseControlMessage(R"({"op":"subscribe","topic":"news","id":"a"})", kMaxTopic);
  EXPECT_FALSE(m.malformed || m.invalid || m.invalid_payload);
  EXPECT_EQ(m.op, ControlOp::kSubscribe);
  EXPECT_EQ(m.topic, "news");
  EXPECT_EQ(boost::json::serialize(m.id), R"("a")");
}

TEST(ControlMessage, ParsesEachPayloadKind) {
  ControlMessage data =
      ParseControlMessage(R"({"op":"publish","topic":"t","data":{"a":[1,true]}})", kMaxTopic);
  EXPECT_EQ(data.kind, PayloadKind::kJson);
  EXPECT_EQ(data.payload, R"({"a":[1,true]})");
  EXPECT_TRUE(data.echo);
  ControlMessage text =
      ParseControlMessage(R"({"op":"publish","topic":"t","text":"hi","echo":false})", kMaxTopic);
  EXPECT_EQ(text.kind, PayloadKind::kText);
  EXPECT_EQ(text.payload, "hi");
  EXPECT_FALSE(text.echo);
  ControlMessage b64 = ParseControlMessage(R"({"op":"publish","topic":"t","b64":"AP8="})", kMaxTopic);
  EXPECT_EQ(b64.kind, PayloadKind::kBinary);
  EXPECT_EQ(b64.payload, std::string("\x00\xff", 2));
}

TEST(ControlMessage, ReportsEnvelopeErrorsAtOnce) {
  EXPECT_EQ(ParseControlMessage("{", kMaxTopic).malformed->code, "invalid_json");
  EXPECT_EQ(ParseControlMessage("[]", kMaxTopic).malformed->message,
            "a control message is a JSON object");
  EXPECT_EQ(ParseControlMessage(R"({"op":"ping","id":[]})", kMaxTopic).malformed->message,
            "id must be a number or a string");
  ControlMessage no_op = ParseControlMessage(R"({"id":7})", kMaxTopic);
  EXPECT_EQ(no_op.malformed->message, "missing string field 'op'");
  EXPECT_EQ(boost::json::serialize(no_op.id), "7");  // the error reply still names the request
  EXPECT_EQ(ParseControlMessage(R"({"op":"auth","token":""})", kMaxTopic).malformed->message,
            "missing string field 'token'");
}

TEST(ControlMessage, ReportsOpAndTopicErrorsAfterAuthentication) {
  ControlMessage unknown = ParseControlMessage(R"({"op":"dance","topic":"bad topic"})", kMaxTopic);
  EXPECT_FALSE(unknown.malformed);
  EXPECT_EQ(unknown.invalid->code, "unknown_op");
  EXPECT_EQ(unknown.invalid->message,
            "unknown op 'dance': expected subscribe, unsubscribe, publish, presence, auth, refresh or ping");
  EXPECT_EQ(ParseControlMessage(R"({"op":"unsubscribe"})", kMaxTopic).invalid->message,
            "missing string field 'topic'");
  EXPECT_EQ(ParseControlMessage(R"({"op":"publish","topic":"a b"})", kMaxTopic).invalid->code,
            "invalid_topic");
}

// The permission is checked between the topic and the payload, so a publish
// to a forbidden topic is answered permission_denied whatever its payload.
TEST(ControlMessage, ParsesPresenceAndPresenceEvents) {
  ControlMessage ask = ParseControlMessage(R"({"op":"presence","topic":"room.1","id":3})", kMaxTopic);
  EXPECT_EQ(ask.op, ControlOp::kPresence);
  EXPECT_EQ(ask.topic, "room.1");
  EXPECT_FALSE(ask.invalid);
  // Presence is of one topic: a pattern is not a topic there.
  EXPECT_EQ(ParseControlMessage(R"({"op":"presence","topic":"room.*"})", kMaxTopic).invalid->code,
            "invalid_topic");
  ControlMessage events =
      ParseControlMessage(R"({"op":"subscribe","topic":"room.1","presence":true})", kMaxTopic);
  EXPECT_TRUE(events.presence);
  EXPECT_FALSE(events.invalid);
  EXPECT_EQ(ParseControlMessage(R"({"op":"subscribe","topic":"r","presence":1})", kMaxTopic)
                .invalid->message,
            "'presence' must be true or false");
}

TEST(ControlMessage, ReportsPayloadErrorsLast) {
  ControlMessage two = ParseControlMessage(R"({"op":"publish","topic":"t","data":1,"text":"x"})", kMaxTopic);
  EXPECT_FALSE(two.malformed || two.invalid);
  EXPECT_EQ(two.invalid_payload->message, "a publish carries exactly one of 'data', 'text' and 'b64'");
  EXPECT_EQ(ParseControlMessage(R"({"op":"publish","topic":"t","b64":"!"})", kMaxTopic)
                .invalid_payload->message,
            "'b64' is not valid base64");
  EXPECT_EQ(ParseControlMessage(R"({"op":"publish","topic":"t","text":1,"echo":0})", kMaxTopic)
                .invalid_payload->message,
            "'text' must be a string");
  EXPECT_EQ(ParseControlMessage(R"({"op":"publish","topic":"t","text":"x","echo":0})", kMaxTopic)
                .invalid_payload->message,
            "'echo' must be true or false");
}

// Found by control_message_fuzz: Boost.JSON reads 1e999 as infinity and
// writes it back as `Infinity`, so the reply to {"op":"ping","id":1e999}
// was not JSON, and a publish of {"data":[1e999]} reached every JSON
// subscriber as a frame JSON.parse rejects.
TEST(ControlMessage, RefusesNumbersThatCannotBeWrittenBack) {
  ControlMessage id = ParseControlMessage(R"({"op":"ping","id":184467989999E9579})", kMaxTopic);
  ASSERT_TRUE(id.malformed);
  EXPECT_EQ(id.malformed->code, "invalid_message");
  EXPECT_EQ(id.malformed->message, "id is a number out of range");
  EXPECT_TRUE(id.id.is_null());
  ControlMessage data =
      ParseControlMessage(R"({"op":"publish","topic":"t","data":{"x":[1,-1e400]}})", kMaxTopic);
  ASSERT_TRUE(data.invalid_payload);
  EXPECT_EQ(data.invalid_payload->message, "'data' has a number out of range");
  // Tiny numbers round to zero and stay JSON.
  EXPECT_FALSE(ParseControlMessage(R"({"op":"publish","topic":"t","data":1e-400})", kMaxTopic)
                   .invalid_payload);
}

}  // namespace
}  // namespace fanout
