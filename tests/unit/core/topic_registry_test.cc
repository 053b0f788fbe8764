#include "core/topic_registry.h"

#include "gtest/gtest.h"
#include "tests/unit/core/fake_subscriber.h"

namespace fanout {
namespace {

TEST(TopicRegistry, SubscribeUnsubscribeCountsAndForgetsEmptyTopics) {
  TopicRegistry reg({.stripes = 4, .io_threads = 2});
  auto a = std::make_shared<FakeSubscriber>(1, 0);
  auto b = std::make_shared<FakeSubscriber>(2, 1);
  EXPECT_TRUE(reg.Subscribe("t", a).ok());
  EXPECT_TRUE(reg.Subscribe("t", a).ok());
  EXPECT_EQ(reg.subscription_count(), 1u) << "second subscribe is a no-op";
  EXPECT_TRUE(reg.Subscribe("t", b).ok());
  EXPECT_TRUE(reg.Subscribe("u", a).ok());
  EXPECT_EQ(reg.topic_count(), 2u);
  EXPECT_EQ(reg.subscription_count(), 3u);
  EXPECT_TRUE(reg.Unsubscribe("u", 1));
  EXPECT_FALSE(reg.Unsubscribe("u", 1));
  EXPECT_EQ(reg.topic_count(), 1u);
  EXPECT_EQ(reg.subscription_count(), 2u);
}

TEST(TopicRegistry, RefusesANewTopicAtTheTopicLimitButNotAnExistingOne) {
  TopicRegistry reg({.stripes = 4, .io_threads = 1, .max_topics = 2});
  auto a = std::make_shared<FakeSubscriber>(1, 0);
  auto b = std::make_shared<FakeSubscriber>(2, 0);
  ASSERT_TRUE(reg.Subscribe("t1", a).ok());
  ASSERT_TRUE(reg.Subscribe("t2", a).ok());
  absl::Status s = reg.Subscribe("t3", a);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("limit of 2 topics"), absl::string_view::npos) << s;
  EXPECT_TRUE(reg.Subscribe("t1", b).ok()) << "an existing topic takes more subscribers";
  EXPECT_EQ(reg.topic_count(), 2u);
  ASSERT_TRUE(reg.Unsubscribe("t2", 1));
  EXPECT_TRUE(reg.Subscribe("t3", a).ok()) << "room again once a topic is gone";
}

TEST(TopicRegistry, PlanPublishGroupsByThreadAndRestartsSequenceAfterEmpty) {
  TopicRegistry reg({.stripes = 4, .io_threads = 3});
  EXPECT_EQ(reg.PlanPublish("t").snapshot, nullptr);
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(1, 0));
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(2, 2));
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(3, 2, DeliveryFormat::kRaw));
  auto p1 = reg.PlanPublish("t");
  ASSERT_NE(p1.snapshot, nullptr);
  EXPECT_EQ(p1.seq, 1u);
  EXPECT_EQ(p1.snapshot->size, 3u);
  EXPECT_EQ(p1.snapshot->by_thread[0].size(), 1u);
  EXPECT_EQ(p1.snapshot->by_thread[1].size(), 0u);
  EXPECT_EQ(p1.snapshot->by_thread[2].size(), 2u);
  EXPECT_EQ(p1.snapshot->raw_count, 1u);
  auto p2 = reg.PlanPublish("t");
  EXPECT_EQ(p2.seq, 2u);
  EXPECT_EQ(p2.snapshot, p1.snapshot) << "unchanged set shares its snapshot";
  reg.Unsubscribe("t", 3);
  auto p3 = reg.PlanPublish("t");
  EXPECT_NE(p3.snapshot, p1.snapshot);
  EXPECT_EQ(p1.snapshot->size, 3u) << "old snapshots are immutable";
  EXPECT_EQ(p3.snapshot->size, 2u);
  reg.Unsubscribe("t", 1);
  reg.Unsubscribe("t", 2);
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(4, 0));
  EXPECT_EQ(reg.PlanPublish("t").seq, 1u);
}

TEST(TopicRegistry, ListSubscribersPagesByIdWithoutRepeats) {
  TopicRegistry reg({.stripes = 8, .io_threads = 1});
  for (uint64_t id = 1; id <= 25; ++id) reg.Subscribe("t", std::make_shared<FakeSubscriber>(id, 0));
  std::vector<uint64_t> seen;
  uint64_t after = 0;
  while (true) {
    auto page = reg.ListSubscribers("t", after, 10);
    for (auto& s : page.subscribers) seen.push_back(s->id());
    if (!page.more) break;
    after = page.subscribers.back()->id();
  }
  ASSERT_EQ(seen.size(), 25u);
  for (uint64_t i = 0; i < 25; ++i) EXPECT_EQ(seen[i], i + 1);
  EXPECT_TRUE(reg.ListSubscribers("missing", 0, 10).subscribers.empty());
}

TEST(TopicRegistry, ListTopicsFiltersByPrefixAndPagesByName) {
  TopicRegistry reg({.stripes = 8, .io_threads = 1});
  auto s = std::make_shared<FakeSubscriber>(1, 0);
  for (const char* t : {"b/2", "a", "b/1", "b/3", "c"}) reg.Subscribe(t, s);
  bool more = false;
  auto page = reg.ListTopics("b/", "", 2, &more);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].topic, "b/1");
  EXPECT_EQ(page[1].topic, "b/2");
  EXPECT_TRUE(more);
  page = reg.ListTopics("b/", "b/2", 2, &more);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].topic, "b/3");
  EXPECT_FALSE(more);
}

}  // namespace
}  // namespace fanout
