#include "cluster/nats_subjects.h"

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace fanout {
namespace {

TEST(NatsSubjects, SegmentsBecomeTokensAndEmptySegmentsTilde) {
  EXPECT_EQ(DeliverySubject("chat.room-1"), "fanout.d.chat.room-1");
  EXPECT_EQ(IngestSubject("user:42/inbox@x"), "fanout.t.user:42/inbox@x");
  EXPECT_EQ(DeliverySubject("a..b"), "fanout.d.a.~.b");
  EXPECT_EQ(DeliverySubject(".a."), "fanout.d.~.a.~");
  EXPECT_EQ(DeliverySubject("."), "fanout.d.~.~");
  EXPECT_EQ(DeliverySubject(""), "fanout.d.~b");
  EXPECT_EQ(IngestSubject(""), "fanout.t.~b");
}

TEST(NatsSubjects, TheMappingIsOneToOne) {
  // Topics that differ only where a naive mapping would merge them.
  const char* topics[] = {"a.b", "a..b", "a...b", ".a.b", "a.b.", "ab", "a", ".", "..", "~"};
  std::set<std::string> seen;
  for (const char* t : topics) {
    std::string subject = DeliverySubject(t);
    EXPECT_TRUE(seen.insert(subject).second) << t << " -> " << subject;
    std::string back;
    bool broadcast = true;
    if (std::string(t) == "~") continue;  // not a valid topic; never mapped
    ASSERT_TRUE(TopicOfSubject(subject, &back, &broadcast)) << subject;
    EXPECT_FALSE(broadcast);
    EXPECT_EQ(back, t);
  }
  std::string topic;
  bool broadcast = false;
  EXPECT_FALSE(TopicOfSubject("fanout.d.~b", &topic, &broadcast));
  EXPECT_TRUE(broadcast);
  EXPECT_FALSE(TopicOfSubject("other.d.a", &topic, &broadcast));
  EXPECT_FALSE(TopicOfSubject("fanout.d.a.~x", &topic, &broadcast));
  EXPECT_FALSE(TopicOfSubject("fanout.d.", &topic, &broadcast));
}

TEST(NatsSubjects, EachHistoryRuleHasItsOwnSubjects) {
  EXPECT_EQ(HistoryRuleId(""), "d");
  const std::string chat = HistoryRuleId("chat.>");
  EXPECT_EQ(chat.size(), 8u);
  EXPECT_EQ(chat, HistoryRuleId("chat.>"));  // stable: nodes must agree
  EXPECT_NE(chat, HistoryRuleId("news.*"));
  EXPECT_EQ(IngestSubject("chat.1", HistoryIngestPrefix("d")), "fanout.hd.chat.1");
  EXPECT_EQ(IngestSubject("a..b", HistoryIngestPrefix(chat)), "fanout.h" + chat + ".a.~.b");
  std::string topic;
  bool broadcast = true;
  ASSERT_TRUE(TopicOfSubject("fanout.h" + chat + ".a.~.b", &topic, &broadcast));
  EXPECT_EQ(topic, "a..b");
  EXPECT_FALSE(broadcast);
  EXPECT_FALSE(TopicOfSubject("fanout.h.a", &topic, &broadcast));  // no rule id
  EXPECT_FALSE(TopicOfSubject("fanout.hX.a", &topic, &broadcast));
  EXPECT_FALSE(TopicOfSubject("fanout.hd", &topic, &broadcast));
}

}  // namespace
}  // namespace fanout
