// The WebSocket framing matrix (RFC 6455) against the real fanoutd: every
// broken frame gets its RFC answer (a close frame with the right code, then
// the end of the stream, never a data frame after the close), and a
// well-behaved client on the same node receives everything published
// meanwhile.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/fixture.h"
#include "tests/testing/raw_ws.h"

namespace fanout {
namespace {

using ::fanout::testing::RawWs;

constexpr uint8_t kCont = 0, kText = 1, kBinary = 2, kClose = 8, kPing = 9, kPong = 10;

std::string F(uint8_t op, const std::string& payload, bool fin = true) {
  return RawWs::BuildFrame(op, payload, fin);
}

class FramingTest : public FanoutdTest {
 protected:
  void SetUp() override {
    FanoutdTest::SetUp();
    witness_ = Connect("/ws?topics=witness");
    ASSERT_TRUE(witness_);
  }

  // Publishes to the witness and checks it got exactly the next message.
  void CheckWitness() {
    ++published_;
    MustPublish("witness", absl::StrCat("n", published_));
    auto f = witness_->Read();
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->data, absl::StrCat(R"({"topic":"witness","seq":)", published_, R"(,"text":"n)",
                                    published_, R"("})"));
  }

  std::unique_ptr<RawWs> Raw() {
    auto c = RawWs::Connect(node_->ws_address(), "/ws");
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Sends `bytes` on a fresh connection and expects the server to fail it:
  // one close frame with `code`, nothing after it, then the end of stream.
  void ExpectFailure(const std::string& name, const std::string& bytes, int code) {
    SCOPED_TRACE(name);
    auto c = Raw();
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->SendRaw(bytes).ok());
    RawWs::Rest rest = c->ReadUntilEnd(absl::Seconds(10));
    ASSERT_FALSE(rest.frames.empty()) << "no close frame; stream ended: " << rest.end;
    const RawWs::Frame& last = rest.frames.back();
    EXPECT_EQ(last.opcode, kClose);
    EXPECT_EQ(last.close_code(), code) << "reason: " << last.close_reason();
    int closes = 0;
    for (const auto& f : rest.frames) closes += f.opcode == kClose;
    EXPECT_EQ(closes, 1);
    EXPECT_EQ(rest.end.code(), absl::StatusCode::kOutOfRange)
        << "the server ends with FIN, not a reset or a hang: " << rest.end;
    CheckWitness();
  }

  std::unique_ptr<WsClient> witness_;
  int published_ = 0;
};

TEST_F(FramingTest, InvalidUtf8IsClosedWith1007EvenAcrossFragments) {
  ExpectFailure("text frame", F(kText, "\xff"), 1007);
  ExpectFailure("overlong form", F(kText, "\xc0\xaf"), 1007);
  ExpectFailure("second fragment", F(kText, "ab", false) + F(kCont, "\xc3\x28"), 1007);
  // Fail fast: the first fragment cannot start valid text; the rest never comes.
  ExpectFailure("surrogate in an unfinished message", F(kText, "\xed\xa0\x80", false), 1007);
  ExpectFailure("truncated at the end", F(kText, "ok\xe2\x82"), 1007);
}

TEST_F(FramingTest, ReservedBitsAndUnknownOpcodesAreClosedWith1002) {
  for (uint8_t rsv : {1, 2, 4}) {
    ExpectFailure(absl::StrCat("rsv ", rsv), RawWs::BuildFrame(kText, "{}", true, true, rsv), 1002);
  }
  for (uint8_t op : {3, 7, 0xB, 0xF}) {
    ExpectFailure(absl::StrCat("opcode ", op), F(op, "x"), 1002);
  }
}

TEST_F(FramingTest, FramingRuleBreaksAreClosedWith1002) {
  ExpectFailure("unmasked client frame", RawWs::BuildFrame(kText, "{}", true, /*mask=*/false), 1002);
  ExpectFailure("fragmented ping", F(kPing, "x", false), 1002);
  ExpectFailure("ping over 125 bytes", F(kPing, std::string(126, 'p')), 1002);
  ExpectFailure("continuation without a start", F(kCont, "x"), 1002);
  ExpectFailure("text inside a fragmented message", F(kText, "a", false) + F(kText, "b"), 1002);
  // A length of 5 written in the 16-bit form.
  std::string non_minimal("\x81\xFE\x00\x05\x00\x00\x00\x00hello", 13);
  ExpectFailure("length not in its shortest form", non_minimal, 1002);
}

TEST_F(FramingTest, BadCloseFramesAreAnsweredWith1002Or1007) {
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535}) {
    ExpectFailure(absl::StrCat("close code ", code),
                  F(kClose, RawWs::CloseBody(static_cast<uint16_t>(code))), 1002);
  }
  ExpectFailure("1-byte close body", F(kClose, std::string("\x03", 1)), 1002);
  ExpectFailure("reason not UTF-8", F(kClose, RawWs::CloseBody(1000, "\xff")), 1007);
}

TEST_F(FramingTest, ValidCloseCodesAreEchoedAndAnEmptyCloseGetsAnEmptyOne) {
  for (int code : {1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4000, 4999}) {
    SCOPED_TRACE(code);
    auto c = Raw();
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->SendClose(static_cast<uint16_t>(code)).ok());
    RawWs::Rest rest = c->ReadUntilEnd();
    ASSERT_EQ(rest.frames.size(), 1u);
    EXPECT_EQ(rest.frames[0].opcode, kClose);
    EXPECT_EQ(rest.frames[0].close_code(), code);
    EXPECT_EQ(rest.end.code(), absl::StatusCode::kOutOfRange) << rest.end;
  }
  auto c = Raw();
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->SendFrame(kClose, "").ok());
  RawWs::Rest rest = c->ReadUntilEnd();
  ASSERT_EQ(rest.frames.size(), 1u);
  EXPECT_EQ(rest.frames[0].opcode, kClose);
  EXPECT_TRUE(rest.frames[0].payload.empty());
  CheckWitness();
}

TEST_F(FramingTest, OversizedMessageIsClosedWith1009AcrossFragmentsToo) {
  ExpectFailure("one frame", F(kText, std::string(70 * 1024, 'x')), 1009);
  ExpectFailure("fragments", F(kText, std::string(40 * 1024, 'x'), false) +
                                 F(kCont, std::string(40 * 1024, 'x')),
                1009);
}

TEST_F(FramingTest, WellFormedEdgeCasesAreServed) {
  auto c = Raw();
  ASSERT_TRUE(c);
  // A ping is answered with a pong carrying its payload.
  ASSERT_TRUE(c->SendFrame(kPing, "hello").ok());
  auto pong = c->ReadFrame();
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->opcode, kPong);
  EXPECT_EQ(pong->payload, "hello");
  // An unsolicited pong is ignored.
  ASSERT_TRUE(c->SendFrame(kPong, "x").ok());
  // A character split across fragments, with a ping between them.
  ASSERT_TRUE(c->SendRaw(F(kText, "{\"op\":\"ping\",\"id\":\"\xc3", false) + F(kPing, "mid") +
                         F(kCont, "\xa9\"}"))
                  .ok());
  auto mid = c->ReadFrame();
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->opcode, kPong);
  EXPECT_EQ(mid->payload, "mid");
  auto reply = c->ReadFrame();
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->opcode, kText);
  EXPECT_EQ(reply->payload, "{\"id\":\"\xc3\xa9\",\"ok\":true}");
  // A frame sent one byte at a time, and empty fragments.
  std::string slow = F(kText, R"({"op":"ping","id":7})");
  for (char b : slow) ASSERT_TRUE(c->SendRaw(std::string(1, b)).ok());
  auto r2 = c->ReadFrame();
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->payload, R"({"id":7,"ok":true})");
  ASSERT_TRUE(c->SendRaw(F(kText, "", false) + F(kCont, R"({"op":"ping","id":8})", false) +
                         F(kCont, "", true))
                  .ok());
  auto r3 = c->ReadFrame();
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->payload, R"({"id":8,"ok":true})");
  // The 64-bit length form: a message of exactly --max_inbound_message_bytes.
  ASSERT_TRUE(c->SendRaw(F(kBinary, std::string(64 * 1024, 'b'))).ok());
  auto r4 = c->ReadFrame();
  ASSERT_TRUE(r4.ok());
  EXPECT_THAT(r4->payload, ::testing::HasSubstr("unsupported_frame"));
  CheckWitness();
}

}  // namespace
}  // namespace fanout
