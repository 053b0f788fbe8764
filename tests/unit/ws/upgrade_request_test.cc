#include "ws/upgrade_request.h"

#include <boost/url/parse.hpp>

#include "gtest/gtest.h"

namespace fanout {
namespace {

constexpr UpgradeLimits kLimits = {.max_topic_length = 16, .max_topics = 3};

std::variant<UpgradeParams, UpgradeRefusal> Parse(const char* target) {
  auto url = boost::urls::parse_origin_form(target);
  EXPECT_TRUE(url) << target;
  return ParseUpgradeParams(*url, kLimits);
}

TEST(UpgradeRequest, ReadsTopicsFormatTokenAndPublish) {
  auto r = Parse("/ws?topics=a,,b&topics=c&format=raw&token=x%3Dy&publish=room&other=1");
  auto* p = std::get_if<UpgradeParams>(&r);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->topics, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(p->format, DeliveryFormat::kRaw);
  EXPECT_EQ(p->token, "x=y");
  EXPECT_EQ(p->raw_publish, "room");
}

TEST(UpgradeRequest, RefusesWithTheRepliesClientsSee) {
  auto bad_topic = std::get<UpgradeRefusal>(Parse("/ws?topics=ok,not%20ok"));
  EXPECT_EQ(bad_topic.status, 400u);
  EXPECT_TRUE(bad_topic.bad_topic);
  EXPECT_EQ(bad_topic.body,
            "invalid topic 'not ok': topic has a character outside [A-Za-z0-9_.:@/-] at byte 3\n");
  auto format = std::get<UpgradeRefusal>(Parse("/ws?format=xml"));
  EXPECT_FALSE(format.bad_topic);
  EXPECT_EQ(format.body, "format must be json or raw\n");
  EXPECT_EQ(std::get<UpgradeRefusal>(Parse("/ws?topics=a,b,c,d")).body,
            "too many topics: the limit is 3\n");
  EXPECT_EQ(std::get<UpgradeRefusal>(Parse("/ws?publish=room")).body,
            "publish= is raw hub mode: it needs format=raw\n");
  EXPECT_EQ(std::get<UpgradeRefusal>(Parse("/ws?publish=&format=raw")).body,
            "invalid publish topic '': topic is empty\n");
}

// The first bad parameter decides, in URL order.
TEST(UpgradeRequest, FirstErrorWins) {
  EXPECT_EQ(std::get<UpgradeRefusal>(Parse("/ws?format=x&topics=a%20b")).body,
            "format must be json or raw\n");
}

}  // namespace
}  // namespace fanout
