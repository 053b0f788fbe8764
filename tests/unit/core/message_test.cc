#include "core/message.h"

#include <string>

#include "gtest/gtest.h"

namespace fanout {
namespace {

// Splits a server frame into (opcode, payload), checking the header.
std::pair<int, std::string> ParseFrame(absl::string_view frame) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(frame[i]); };
  EXPECT_EQ(b(0) & 0x80, 0x80) << "FIN";
  EXPECT_EQ(b(1) & 0x80, 0) << "server frames are unmasked";
  uint64_t len = b(1) & 0x7F;
  size_t pos = 2;
  if (len == 126) {
    len = (uint64_t{b(2)} << 8) | b(3);
    pos = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | b(2 + i);
    pos = 10;
  }
  EXPECT_EQ(frame.size(), pos + len);
  return {b(0) & 0x0F, std::string(frame.substr(pos))};
}

TEST(BuildFrame, UsesTheShortestLengthEncoding) {
  for (size_t len : {0u, 125u, 126u, 65535u, 65536u, 70000u}) {
    std::string payload(len, 'x');
    std::string frame = BuildFrame(WsOpcode::kBinary, payload);
    size_t header = len < 126 ? 2 : (len <= 65535 ? 4 : 10);
    EXPECT_EQ(frame.size(), header + len) << len;
    auto [op, body] = ParseFrame(frame);
    EXPECT_EQ(op, 2);
    EXPECT_EQ(body, payload);
  }
}

TEST(BuildCloseFrame, CarriesCodeAndTruncatedReason) {
  auto [op, body] = ParseFrame(BuildCloseFrame(4008, "slow consumer"));
  EXPECT_EQ(op, 8);
  ASSERT_GE(body.size(), 2u);
  EXPECT_EQ((static_cast<uint8_t>(body[0]) << 8) | static_cast<uint8_t>(body[1]), 4008);
  EXPECT_EQ(body.substr(2), "slow consumer");
  // Control frames carry at most 125 bytes; a cut never splits a character.
  std::string long_reason;
  for (int i = 0; i < 100; ++i) long_reason += "\xC3\xA9";
  auto [op2, body2] = ParseFrame(BuildCloseFrame(1001, long_reason));
  EXPECT_LE(body2.size(), 125u);
  EXPECT_EQ((body2.size() - 2) % 2, 0u);
}

TEST(ClassifyPayload, JsonTextOrBinary) {
  EXPECT_EQ(ClassifyPayload(R"({"a":[1,2,{"b":null}]})"), PayloadKind::kJson);
  EXPECT_EQ(ClassifyPayload("42"), PayloadKind::kJson);
  EXPECT_EQ(ClassifyPayload(R"("str")"), PayloadKind::kJson);
  EXPECT_EQ(ClassifyPayload(" [1] "), PayloadKind::kJson);
  EXPECT_EQ(ClassifyPayload("hello"), PayloadKind::kText);
  EXPECT_EQ(ClassifyPayload(""), PayloadKind::kText);
  EXPECT_EQ(ClassifyPayload(R"({"a":1} trailing)"), PayloadKind::kText);
  EXPECT_EQ(ClassifyPayload(R"({"a":1)"), PayloadKind::kText);
  EXPECT_EQ(ClassifyPayload(std::string("\x00\xff", 2)), PayloadKind::kBinary);
}

TEST(EncodeMessage, BuildsEachFormatOnceAndOnlyWhenAsked) {
  auto m = EncodeMessage({.topic = "t", .seq = 7, .payload = "hi \"you\"", .json = true});
  EXPECT_EQ(m->seq(), 7u);
  EXPECT_EQ(ParseFrame(m->Frame(DeliveryFormat::kJson)).second,
            R"({"topic":"t","seq":7,"text":"hi \"you\""})");
  EXPECT_TRUE(m->Frame(DeliveryFormat::kRaw).empty());

  const std::string binary("\x01\xfe", 2);
  auto b = EncodeMessage(
      {.broadcast = true, .seq = 3, .payload = binary, .json = true, .raw = true});
  EXPECT_EQ(ParseFrame(b->Frame(DeliveryFormat::kJson)).second,
            R"({"broadcast":true,"seq":3,"b64":"Af4="})");
  auto [op, raw] = ParseFrame(b->Frame(DeliveryFormat::kRaw));
  EXPECT_EQ(op, 2) << "non-UTF-8 raw payloads go in binary frames";
  EXPECT_EQ(raw, std::string("\x01\xfe", 2));

  auto j = EncodeMessage({.topic = "t", .seq = 1, .payload = R"({"x":1})", .json = true, .raw = true});
  EXPECT_EQ(ParseFrame(j->Frame(DeliveryFormat::kJson)).second,
            R"({"topic":"t","seq":1,"data":{"x":1}})");
  EXPECT_EQ(ParseFrame(j->Frame(DeliveryFormat::kRaw)).first, 1) << "UTF-8 raw is text";
}

TEST(EncodeMessage, AnExplicitKindOverridesWhatTheBytesLookLike) {
  // A client's text that happens to be JSON stays text; its binary frame of
  // UTF-8 bytes stays binary.
  auto t = EncodeMessage({.topic = "t", .seq = 1, .payload = "42", .kind = PayloadKind::kText,
                          .json = true, .raw = true});
  EXPECT_EQ(ParseFrame(t->Frame(DeliveryFormat::kJson)).second, R"({"topic":"t","seq":1,"text":"42"})");
  EXPECT_EQ(ParseFrame(t->Frame(DeliveryFormat::kRaw)).first, 1);
  auto b = EncodeMessage({.topic = "t", .seq = 2, .payload = "hi", .kind = PayloadKind::kBinary,
                          .json = true, .raw = true});
  EXPECT_EQ(ParseFrame(b->Frame(DeliveryFormat::kJson)).second, R"({"topic":"t","seq":2,"b64":"aGk="})");
  EXPECT_EQ(ParseFrame(b->Frame(DeliveryFormat::kRaw)).first, 2);
}

}  // namespace
}  // namespace fanout
