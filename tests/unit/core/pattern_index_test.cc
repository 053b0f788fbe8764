#include "core/pattern_index.h"

#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/topic_registry.h"
#include "gtest/gtest.h"
#include "tests/unit/core/fake_subscriber.h"

namespace fanout {
namespace {

TopicPattern P(absl::string_view text) { return *TopicPattern::Parse(text, 256); }

std::set<uint64_t> Ids(const std::vector<std::shared_ptr<Subscriber>>& subs) {
  std::set<uint64_t> out;
  for (const auto& s : subs) out.insert(s->id());
  return out;
}

std::set<uint64_t> Ids(const SubscriberSnapshot* snap) {
  std::set<uint64_t> out;
  if (snap == nullptr) return out;
  for (const auto& t : snap->by_thread) {
    for (const auto& s : t) EXPECT_TRUE(out.insert(s->id()).second) << "twice: " << s->id();
  }
  EXPECT_EQ(out.size(), snap->size);
  return out;
}

TEST(PatternIndex, MatchesOneSegmentStarsAndTrailingRest) {
  std::vector<std::pair<std::string, bool>> events;
  PatternIndex index([&](absl::string_view p, bool active) { events.emplace_back(p, active); });
  bool first = false;
  ASSERT_TRUE(index.Add(P("orders.*"), std::make_shared<FakeSubscriber>(1, 0), &first));
  EXPECT_TRUE(first);
  ASSERT_TRUE(index.Add(P("orders.>"), std::make_shared<FakeSubscriber>(2, 0), &first));
  ASSERT_TRUE(index.Add(P("*.eu"), std::make_shared<FakeSubscriber>(3, 0), &first));
  EXPECT_FALSE(index.Add(P("orders.*"), std::make_shared<FakeSubscriber>(1, 0), &first));
  auto match = [&](absl::string_view topic) {
    std::vector<std::shared_ptr<Subscriber>> out;
    index.Match(topic, &out);
    return Ids(out);
  };
  EXPECT_EQ(match("orders.eu"), (std::set<uint64_t>{1, 2, 3}));
  EXPECT_EQ(match("orders.eu.1"), (std::set<uint64_t>{2}));
  EXPECT_EQ(match("orders"), (std::set<uint64_t>{})) << "> needs one segment or more";
  EXPECT_EQ(match("news.eu"), (std::set<uint64_t>{3}));
  bool last = false;
  EXPECT_TRUE(index.Remove("orders.*", 1, &last));
  EXPECT_TRUE(last);
  EXPECT_FALSE(index.Remove("orders.*", 1, &last));
  EXPECT_EQ(match("orders.eu"), (std::set<uint64_t>{2, 3}));
  EXPECT_EQ(index.pattern_count(), 2u);
  EXPECT_EQ(events, (std::vector<std::pair<std::string, bool>>{
                        {"orders.*", true}, {"orders.>", true}, {"*.eu", true}, {"orders.*", false}}));
}

// The trie against the brute force (TopicPattern::Matches over every
// pattern) on random patterns, topics, subscribes and unsubscribes.
TEST(PatternIndex, AgreesWithBruteForceOnRandomPatternsAndTopics) {
  std::mt19937 rng(20261202);
  const std::vector<std::string> words = {"a", "b", "c", "", "ab"};
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto random_topic = [&] {
    std::vector<std::string> segs;
    for (size_t i = 0, n = 1 + pick(4); i < n; ++i) segs.push_back(words[pick(words.size())]);
    return absl::StrJoin(segs, ".");
  };
  auto random_pattern = [&] {
    std::vector<std::string> segs;
    size_t n = 1 + pick(4);
    for (size_t i = 0; i < n; ++i) {
      size_t r = pick(10);
      if (r < 3) {
        segs.push_back("*");
      } else if (r < 4 && i + 1 == n) {
        segs.push_back(">");
      } else {
        segs.push_back(words[pick(words.size())]);
      }
    }
    if (std::none_of(segs.begin(), segs.end(), [](auto& s) { return s == "*" || s == ">"; })) {
      segs.back() = ">";
    }
    return absl::StrJoin(segs, ".");
  };
  PatternIndex index(nullptr);
  std::vector<std::pair<std::string, uint64_t>> live;  // the oracle's view
  for (int round = 0; round < 3000; ++round) {
    if (live.empty() || pick(3) != 0) {
      std::string text = random_pattern();
      uint64_t id = 1 + pick(40);
      bool first = false;
      bool added = index.Add(P(text), std::make_shared<FakeSubscriber>(id, 0), &first);
      bool known = std::find(live.begin(), live.end(), std::make_pair(text, id)) != live.end();
      ASSERT_EQ(added, !known) << text << " " << id;
      if (added) live.emplace_back(text, id);
    } else {
      size_t k = pick(live.size());
      bool last = false;
      ASSERT_TRUE(index.Remove(live[k].first, live[k].second, &last));
      live.erase(live.begin() + static_cast<long>(k));
    }
    for (int probe = 0; probe < 5; ++probe) {
      std::string topic = random_topic();
      std::set<uint64_t> want;
      for (const auto& [text, id] : live) {
        if (P(text).Matches(topic)) want.insert(id);
      }
      std::vector<std::shared_ptr<Subscriber>> got;
      index.Match(topic, &got);
      ASSERT_EQ(Ids(got), want) << "topic '" << topic << "' after round " << round;
    }
  }
  // Emptied, the trie holds nothing (pruned) and matches nothing.
  for (const auto& [text, id] : live) {
    bool last = false;
    ASSERT_TRUE(index.Remove(text, id, &last));
  }
  EXPECT_EQ(index.pattern_count(), 0u);
  EXPECT_EQ(index.subscription_count(), 0u);
}

TEST(TopicRegistryPatterns, AConnectionOnATopicAndAMatchingPatternGetsEachMessageOnce) {
  TopicRegistry reg({.stripes = 4, .io_threads = 2});
  auto both = std::make_shared<FakeSubscriber>(1, 0);
  auto by_pattern = std::make_shared<FakeSubscriber>(2, 1);
  ASSERT_TRUE(reg.Subscribe("orders.eu", both).ok());
  ASSERT_TRUE(reg.SubscribePattern(P("orders.*"), both).ok());
  ASSERT_TRUE(reg.SubscribePattern(P("orders.>"), both).ok());
  ASSERT_TRUE(reg.SubscribePattern(P("orders.*"), by_pattern).ok());
  auto plan = reg.PlanPublish("orders.eu", "x");
  EXPECT_EQ(plan.seq, 1u);
  EXPECT_EQ(Ids(plan.snapshot.get()), (std::set<uint64_t>{1, 2}));
  EXPECT_EQ(reg.SubscriberCount("orders.eu"), 2u);
  auto page = reg.ListSubscribers("orders.eu", 0, 10);
  ASSERT_EQ(page.subscribers.size(), 2u);
  EXPECT_EQ(page.subscribers[0]->id(), 1u);
  EXPECT_EQ(page.subscribers[1]->id(), 2u);

  // A topic only patterns follow is numbered too, and stays known.
  auto us1 = reg.PlanPublish("orders.us", "x");
  auto us2 = reg.PlanPublish("orders.us", "y");
  EXPECT_EQ(us1.seq, 1u);
  EXPECT_EQ(us2.seq, 2u);
  EXPECT_EQ(us1.epoch, us2.epoch);
  EXPECT_EQ(Ids(us2.snapshot.get()), (std::set<uint64_t>{1, 2}));
  EXPECT_EQ(reg.PlanPublish("other", "x").snapshot, nullptr);

  // The cached recipients follow pattern changes.
  ASSERT_TRUE(reg.UnsubscribePattern("orders.*", 2));
  EXPECT_EQ(Ids(reg.PlanPublish("orders.us", "z").snapshot.get()), (std::set<uint64_t>{1}));
  ASSERT_TRUE(reg.UnsubscribePattern("orders.*", 1));
  ASSERT_TRUE(reg.UnsubscribePattern("orders.>", 1));
  EXPECT_EQ(reg.PlanPublish("orders.us", "z").snapshot, nullptr);
  EXPECT_EQ(Ids(reg.PlanPublish("orders.eu", "z").snapshot.get()), (std::set<uint64_t>{1}));
}

TEST(TopicRegistryPatterns, AClusterCopyArrivingTwiceIsDeliveredOnce) {
  TopicRegistry reg({.stripes = 4, .io_threads = 1});
  auto sub = std::make_shared<FakeSubscriber>(1, 0);
  ASSERT_TRUE(reg.Subscribe("a.b", sub).ok());
  ASSERT_TRUE(reg.SubscribePattern(P("a.*"), sub).ok());
  EXPECT_NE(reg.Recipients("a.b", 10), nullptr);
  EXPECT_EQ(reg.Recipients("a.b", 10), nullptr) << "the same stream message again";
  EXPECT_NE(reg.Recipients("a.b", 11), nullptr);
  EXPECT_NE(reg.Recipients("a.c", 12), nullptr) << "pattern only";
  EXPECT_EQ(reg.Recipients("a.c", 12), nullptr);
}

}  // namespace
}  // namespace fanout
