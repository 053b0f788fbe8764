#include "core/topic_pattern.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

TopicPattern P(const std::string& text) {
  auto p = TopicPattern::Parse(text, 256);
  EXPECT_TRUE(p.ok()) << text << ": " << p.status();
  return *p;
}

TEST(TopicPattern, MatchesExactOneSegmentAndTheRest) {
  EXPECT_TRUE(P("orders").Matches("orders"));
  EXPECT_FALSE(P("orders").Matches("orders.eu"));
  EXPECT_TRUE(P("orders.*").Matches("orders.eu"));
  EXPECT_FALSE(P("orders.*").Matches("orders"));
  EXPECT_FALSE(P("orders.*").Matches("orders.eu.1"));
  EXPECT_TRUE(P("orders.>").Matches("orders.eu"));
  EXPECT_TRUE(P("orders.>").Matches("orders.eu.1"));
  EXPECT_FALSE(P("orders.>").Matches("orders"));
  EXPECT_FALSE(P("orders.>").Matches("ordersx.eu"));
  EXPECT_TRUE(P("*.eu").Matches("orders.eu"));
  EXPECT_TRUE(P(">").Matches("anything.at.all"));
  EXPECT_TRUE(P("a.*.c").Matches("a.b.c"));
  EXPECT_FALSE(P("a.*.c").Matches("a.b.d"));
  EXPECT_TRUE(P("chat/room-1").exact());
  EXPECT_FALSE(P("chat.*").exact());
}

TEST(TopicPattern, RefusesMalformedPatternsWithAReason) {
  for (const char* bad : {"", "a.>.b", "a*", "a.*b", ">x", "bad topic", "caf\xc3\xa9"}) {
    auto p = TopicPattern::Parse(bad, 256);
    EXPECT_FALSE(p.ok()) << bad;
    EXPECT_FALSE(p.status().message().empty());
  }
  EXPECT_FALSE(TopicPattern::Parse(std::string(300, 'a'), 256).ok());
}

TEST(TopicPattern, CoverageIsWhatPermissionsOfPatternsNeed) {
  EXPECT_TRUE(P("orders.eu").IsCoveredBy(P("orders.*")));
  EXPECT_TRUE(P("orders.*").IsCoveredBy(P("orders.>")));
  EXPECT_TRUE(P("orders.>").IsCoveredBy(P("orders.>")));
  EXPECT_TRUE(P("orders.*.x").IsCoveredBy(P("orders.>")));
  EXPECT_FALSE(P("orders.>").IsCoveredBy(P("orders.*")));
  EXPECT_FALSE(P("orders.*").IsCoveredBy(P("orders.eu")));
  EXPECT_FALSE(P(">").IsCoveredBy(P("orders.>")));
  EXPECT_TRUE(P("a.b").IsCoveredBy(P(">")));
  EXPECT_FALSE(P("a").IsCoveredBy(P("a.>")));
}

// Brute force: coverage agrees with "every topic one matches, the other does
// too" over every topic of up to three segments from a small alphabet.
TEST(TopicPattern, CoverageAgreesWithMatchingOverAllSmallTopics) {
  std::vector<std::string> topics;
  const char* seg[] = {"a", "b"};
  for (int n = 1; n <= 4; ++n) {
    for (int code = 0; code < (1 << n); ++code) {
      std::vector<std::string> parts;
      for (int i = 0; i < n; ++i) parts.push_back(seg[(code >> i) & 1]);
      topics.push_back(absl::StrJoin(parts, "."));
    }
  }
  std::vector<std::string> patterns;
  const char* pseg[] = {"a", "b", "*"};
  for (int n = 1; n <= 3; ++n) {
    int total = 1;
    for (int i = 0; i < n; ++i) total *= 3;
    for (int code = 0; code < total; ++code) {
      std::vector<std::string> parts;
      int c = code;
      for (int i = 0; i < n; ++i, c /= 3) parts.push_back(pseg[c % 3]);
      patterns.push_back(absl::StrJoin(parts, "."));
      parts.back() = ">";
      patterns.push_back(absl::StrJoin(parts, "."));
    }
  }
  for (const auto& narrow : patterns) {
    for (const auto& wide : patterns) {
      bool every = true;
      for (const auto& t : topics) {
        if (P(narrow).Matches(t) && !P(wide).Matches(t)) every = false;
      }
      // Topics here have at most 4 segments; ">" patterns reach further, but
      // the answer does not change past one segment more than the patterns.
      EXPECT_EQ(P(narrow).IsCoveredBy(P(wide)), every) << narrow << " by " << wide;
    }
  }
}

TEST(Permissions, SubjectFillsOneSegmentAndNeverAWildcard) {
  auto ok = ParsePermissionPatterns({"user.{sub}.>", "public.*"}, "42", 256);
  ASSERT_EQ(ok.size(), 2u);
  Permissions p(ok, {});
  EXPECT_TRUE(p.MaySubscribe("user.42.inbox"));
  EXPECT_FALSE(p.MaySubscribe("user.43.inbox"));
  EXPECT_TRUE(p.MaySubscribe("public.news"));
  EXPECT_FALSE(p.MayPublish("public.news"));
  // A subject that would widen the pattern drops it.
  for (const char* evil : {"*", ">", "42.43", "", "a b"}) {
    std::vector<std::string> why;
    EXPECT_TRUE(ParsePermissionPatterns({"user.{sub}.>"}, evil, 256, &why).empty()) << evil;
    EXPECT_EQ(why.size(), 1u);
  }
  Permissions all = Permissions::SubscribeAnything({});
  EXPECT_TRUE(all.MaySubscribe("x"));
  EXPECT_TRUE(all.MaySubscribePattern(P("a.>")));
  EXPECT_FALSE(all.MayPublish("x"));
}

}  // namespace
}  // namespace fanout
