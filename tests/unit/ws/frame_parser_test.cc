#include "ws/frame_parser.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

// Records events as text, so sequences compare whole.
class Recorder : public WsFrameParser::Handler {
 public:
  void OnMessage(bool text, absl::string_view payload) override {
    events.push_back(absl::StrCat(text ? "text:" : "binary:", payload));
    last_payload = payload.data();
  }
  void OnPing(absl::string_view p) override { events.push_back(absl::StrCat("ping:", p)); }
  void OnPong(absl::string_view p) override { events.push_back(absl::StrCat("pong:", p)); }
  void OnClose(uint16_t code, absl::string_view reason) override {
    events.push_back(absl::StrCat("close:", code, ":", reason));
  }
  void OnProtocolError(uint16_t code, absl::string_view) override {
    events.push_back(absl::StrCat("error:", code));
  }
  std::vector<std::string> events;
  const char* last_payload = nullptr;
};

std::string Frame(uint8_t opcode, const std::string& payload, bool fin = true, bool mask = true,
                  uint8_t rsv = 0) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | (rsv << 4) | opcode));
  uint8_t m = mask ? 0x80 : 0;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(m | payload.size()));
  } else if (payload.size() <= 0xFFFF) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xFF));
  }
  if (!mask) return f + payload;
  const char key[4] = {0x12, 0x34, 0x56, 0x78};
  f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) f.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  return f;
}

std::vector<std::string> Parse(std::string bytes, size_t max = 1 << 20) {
  WsFrameParser parser(max);
  Recorder r;
  parser.Feed(bytes.data(), bytes.size(), &r);
  return r.events;
}

// Feeds `bytes` in pieces of random sizes.
std::vector<std::string> ParseInPieces(const std::string& bytes, std::mt19937* rng,
                                       size_t max = 1 << 20) {
  WsFrameParser parser(max);
  Recorder r;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t n = std::min<size_t>(bytes.size() - pos, 1 + (*rng)() % 9);
    std::string piece = bytes.substr(pos, n);
    parser.Feed(piece.data(), piece.size(), &r);
    pos += n;
  }
  EXPECT_TRUE(parser.idle() || parser.stopped());
  return r.events;
}

TEST(WsFrameParser, ParsesEveryKindOfFrame) {
  std::string in = Frame(1, "hello") + Frame(2, std::string("\x00\xff", 2)) + Frame(9, "p") +
                   Frame(10, "q") + Frame(1, std::string(300, 'm')) +
                   Frame(2, std::string(70000, 'b')) + Frame(8, std::string("\x03\xe8" "bye", 5));
  auto events = Parse(in);
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0], "text:hello");
  EXPECT_EQ(events[1], std::string("binary:\x00\xff", 9));
  EXPECT_EQ(events[2], "ping:p");
  EXPECT_EQ(events[3], "pong:q");
  EXPECT_EQ(events[4], "text:" + std::string(300, 'm'));
  EXPECT_EQ(events[5].size(), 7u + 70000u);
  EXPECT_EQ(events[6], "close:1000:bye");
}

TEST(WsFrameParser, AnyWayOfSplittingTheBytesGivesTheSameEvents) {
  std::string in = Frame(1, "{\"a\":", false) + Frame(9, "mid") + Frame(0, "\xc3", false) +
                   Frame(0, "\xa9}") + Frame(2, std::string(1000, 'x')) + Frame(1, "") +
                   Frame(1, "", false) + Frame(0, "", false) + Frame(0, "z") + Frame(8, "");
  auto whole = Parse(in);
  ASSERT_EQ(whole.size(), 6u);
  EXPECT_EQ(whole[0], "ping:mid");
  EXPECT_EQ(whole[1], "text:{\"a\":\xc3\xa9}");
  EXPECT_EQ(whole[3], "text:");
  EXPECT_EQ(whole[4], "text:z");
  EXPECT_EQ(whole[5], "close:0:");
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) ASSERT_EQ(ParseInPieces(in, &rng), whole) << trial;
}

TEST(WsFrameParser, AWholeMessageIsHandedOverInPlace) {
  std::string in = Frame(1, "in place");
  WsFrameParser parser(1024);
  Recorder r;
  parser.Feed(in.data(), in.size(), &r);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_GE(r.last_payload, in.data());
  EXPECT_LT(r.last_payload, in.data() + in.size());
  EXPECT_TRUE(parser.idle());
  EXPECT_EQ(parser.held_bytes(), 0u) << "nothing held between messages";
}

TEST(WsFrameParser, MemoryIsGivenBackAfterAFragmentedMessage) {
  std::string in = Frame(1, std::string(5000, 'a'), false) + Frame(0, std::string(5000, 'b'));
  WsFrameParser parser(1 << 20);
  Recorder r;
  parser.Feed(in.data(), 3000, &r);
  EXPECT_GT(parser.held_bytes(), 0u);
  parser.Feed(in.data() + 3000, in.size() - 3000, &r);
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(parser.held_bytes(), 0u);
}

struct Bad {
  const char* name;
  std::string bytes;
  int code;
};

TEST(WsFrameParser, BreakingTheRulesIsAnErrorWithTheRfcCode) {
  const Bad cases[] = {
      {"rsv1", Frame(1, "x", true, true, 4), 1002},
      {"opcode 3", Frame(3, "x"), 1002},
      {"opcode 11", Frame(11, "x"), 1002},
      {"unmasked", Frame(1, "x", true, false), 1002},
      {"fragmented ping", Frame(9, "x", false), 1002},
      {"long ping", Frame(9, std::string(126, 'x')), 1002},
      {"lone continuation", Frame(0, "x"), 1002},
      {"text in fragmented", Frame(1, "a", false) + Frame(2, "b"), 1002},
      {"close 1 byte", Frame(8, "\x03"), 1002},
      {"close 1005", Frame(8, "\x03\xed"), 1002},
      {"close 999", Frame(8, "\x03\xe7"), 1002},
      {"close 5000", Frame(8, "\x13\x88"), 1002},
      {"close reason", Frame(8, "\x03\xe8\xff"), 1007},
      {"text utf8", Frame(1, "\xff"), 1007},
      {"truncated utf8", Frame(1, "\xe2\x82"), 1007},
      {"surrogate first fragment", Frame(1, "\xed\xa0", false), 1007},
      {"too big", Frame(1, std::string(101, 'x')), 1009},
      {"too big in fragments", Frame(1, std::string(60, 'x'), false) + Frame(0, std::string(60, 'x')), 1009},
      {"non-minimal 16-bit", std::string("\x81\xfe\x00\x05\0\0\0\0hello", 13), 1002},
      {"non-minimal 64-bit", std::string("\x82\xff\0\0\0\0\0\0\0\x05\0\0\0\0hello", 19), 1002},
      {"64-bit msb", std::string("\x82\xff\x80\0\0\0\0\0\0\0\0\0\0\0", 14), 1002},
  };
  std::mt19937 rng(3);
  for (const auto& c : cases) {
    auto events = Parse(c.bytes, 100);
    ASSERT_FALSE(events.empty()) << c.name;
    EXPECT_EQ(events.back(), absl::StrCat("error:", c.code)) << c.name;
    EXPECT_EQ(ParseInPieces(c.bytes, &rng, 100), events) << c.name << " in pieces";
  }
}

TEST(WsFrameParser, NothingIsParsedAfterACloseOrAnError) {
  EXPECT_EQ(Parse(Frame(8, "\x03\xe8") + Frame(1, "after")).size(), 1u);
  EXPECT_EQ(Parse(Frame(3, "") + Frame(1, "after")).size(), 1u);
}

TEST(IsValidCloseCode, FollowsRfc6455AndTheIanaRegistry) {
  for (int c : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999}) {
    EXPECT_TRUE(IsValidCloseCode(static_cast<uint16_t>(c))) << c;
  }
  for (int c : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}) {
    EXPECT_FALSE(IsValidCloseCode(static_cast<uint16_t>(c))) << c;
  }
}

}  // namespace
}  // namespace fanout
