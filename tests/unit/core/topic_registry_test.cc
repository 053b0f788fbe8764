#include "core/topic_registry.h"

#include "absl/strings/str_cat.h"
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

TEST(TopicRegistry, PlanPublishGroupsByThreadAndForgetsAnEmptyTopicWithoutTtl) {
  TopicRegistry reg({.stripes = 4, .io_threads = 3, .topic_ttl = absl::ZeroDuration()});
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
  EXPECT_EQ(reg.retained_count(), 0u) << "--topic_ttl=0 forgets an empty topic at once";
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(4, 0));
  auto p4 = reg.PlanPublish("t");
  EXPECT_EQ(p4.seq, 1u);
  EXPECT_NE(p4.epoch, p1.epoch) << "a forgotten topic starts a new epoch";
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

namespace fanout {
namespace {

// A registry whose clock the test moves.
struct Clocked {
  absl::Time now = absl::FromUnixSeconds(1'000'000);
  TopicRegistry::Options Options(TopicRegistry::Options o) {
    o.now = [this] { return now; };
    return o;
  }
};

HistoryConfig History(size_t size, absl::Duration ttl, absl::string_view overrides = "") {
  return *HistoryConfig::Parse({.size = size, .ttl = ttl}, overrides, 256);
}

std::vector<uint64_t> Seqs(const std::vector<std::shared_ptr<const HistoryEntry>>& entries) {
  std::vector<uint64_t> out;
  for (const auto& e : entries) out.push_back(e->seq);
  return out;
}

TEST(TopicRegistryPosition, SequenceContinuesWithinTopicTtlThenANewEpochStarts) {
  Clocked clock;
  TopicRegistry reg(clock.Options({.stripes = 2, .topic_ttl = absl::Minutes(5)}));
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(1, 0));
  auto p1 = reg.PlanPublish("t");
  EXPECT_EQ(p1.seq, 1u);
  EXPECT_FALSE(p1.epoch.empty());
  reg.Unsubscribe("t", 1);
  EXPECT_EQ(reg.topic_count(), 0u);
  EXPECT_EQ(reg.retained_count(), 1u);
  auto p2 = reg.PlanPublish("t");
  EXPECT_EQ(p2.seq, 2u) << "publishes without subscribers still count";
  EXPECT_EQ(p2.snapshot, nullptr);
  clock.now += absl::Minutes(4);
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(2, 0));
  auto p3 = reg.PlanPublish("t");
  EXPECT_EQ(p3.seq, 3u);
  EXPECT_EQ(p3.epoch, p1.epoch);
  reg.Unsubscribe("t", 2);
  clock.now += absl::Minutes(5) + absl::Seconds(1);
  EXPECT_EQ(reg.PlanPublish("t").seq, 0u) << "forgotten after --topic_ttl";
  EXPECT_EQ(reg.retained_count(), 0u);
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(3, 0));
  auto p4 = reg.PlanPublish("t");
  EXPECT_EQ(p4.seq, 1u);
  EXPECT_NE(p4.epoch, p1.epoch);
}

TEST(TopicRegistryPosition, RetainedTopicsAreBoundedByMaxRetainedTopics) {
  TopicRegistry reg({.stripes = 4, .max_retained_topics = 2});
  for (uint64_t i = 1; i <= 5; ++i) {
    std::string topic = absl::StrCat("t", i);
    reg.Subscribe(topic, std::make_shared<FakeSubscriber>(i, 0));
    reg.Unsubscribe(topic, i);
  }
  EXPECT_EQ(reg.retained_count(), 2u);
  EXPECT_EQ(reg.PlanPublish("t1").seq, 1u) << "retained: counts on without subscribers";
  EXPECT_EQ(reg.PlanPublish("t5").seq, 0u) << "beyond the limit, forgotten at once";
}

TEST(TopicRegistryHistory, RecoversExactlyTheMissedMessagesUnderTheSameLock) {
  Clocked clock;
  TopicRegistry reg(clock.Options({.stripes = 2, .history = History(10, absl::Minutes(10))}));
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(1, 0));
  std::string epoch;
  for (int i = 1; i <= 6; ++i) epoch = reg.PlanPublish("t", absl::StrCat("m", i)).epoch;
  reg.Unsubscribe("t", 1);
  reg.PlanPublish("t", "m7");  // while the client is away

  TopicRegistry::Recovery r;
  TopicPosition since{4, epoch};
  ASSERT_TRUE(reg.Subscribe("t", std::make_shared<FakeSubscriber>(2, 0), &since, &r).ok());
  EXPECT_TRUE(r.recovered);
  EXPECT_EQ(Seqs(r.missed), (std::vector<uint64_t>{5, 6, 7}));
  EXPECT_EQ(r.missed.back()->payload, "m7");
  EXPECT_EQ(r.position.seq, 7u);
  // The next publish is live, right after the replay.
  EXPECT_EQ(reg.PlanPublish("t", "m8").seq, 8u);

  TopicRegistry::Recovery up_to_date;
  TopicPosition latest{8, epoch};
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(3, 0), &latest, &up_to_date);
  EXPECT_TRUE(up_to_date.recovered);
  EXPECT_TRUE(up_to_date.missed.empty());

  TopicRegistry::Recovery other_epoch;
  TopicPosition wrong{4, "elsewhere-1"};
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(4, 0), &wrong, &other_epoch);
  EXPECT_FALSE(other_epoch.recovered);
  EXPECT_TRUE(other_epoch.missed.empty());
  EXPECT_EQ(other_epoch.position.seq, 8u);
  EXPECT_EQ(other_epoch.position.epoch, epoch);
}

TEST(TopicRegistryHistory, SaysNotRecoveredWhenTheWindowIsGone) {
  Clocked clock;
  TopicRegistry reg(clock.Options({.stripes = 2, .history = History(3, absl::Minutes(1))}));
  std::string epoch;
  for (int i = 1; i <= 5; ++i) epoch = reg.PlanPublish("t", "x").epoch;
  EXPECT_EQ(reg.history_messages(), 3u) << "the last 3 only";
  TopicRegistry::Recovery r;
  TopicPosition since{1, epoch};
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(1, 0), &since, &r);
  EXPECT_FALSE(r.recovered) << "seq 2 is gone";
  EXPECT_EQ(r.position.seq, 5u);
  TopicRegistry::Recovery r2;
  TopicPosition since2{2, epoch};
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(2, 0), &since2, &r2);
  EXPECT_TRUE(r2.recovered);
  EXPECT_EQ(Seqs(r2.missed), (std::vector<uint64_t>{3, 4, 5}));

  clock.now += absl::Minutes(2);
  TopicRegistry::Recovery r3;
  TopicPosition since3{4, epoch};
  reg.Subscribe("t", std::make_shared<FakeSubscriber>(3, 0), &since3, &r3);
  EXPECT_FALSE(r3.recovered) << "older than --history_ttl";
  EXPECT_EQ(reg.history_messages(), 0u);
}

TEST(TopicRegistryHistory, AFirstPublishMakesAHistoryTopicKnownAndSkipHistoryIsNotNumbered) {
  TopicRegistry reg({.stripes = 2, .history = History(0, absl::Minutes(1), "chat.>:5:1m")});
  EXPECT_EQ(reg.PlanPublish("news", "x").seq, 0u) << "no history, nobody listening";
  auto p = reg.PlanPublish("chat.a", "x");
  EXPECT_EQ(p.seq, 1u);
  EXPECT_EQ(reg.retained_count(), 1u);
  auto skipped = reg.PlanPublish("chat.a", "live only", std::nullopt, /*numbered=*/false);
  EXPECT_EQ(skipped.seq, 0u);
  EXPECT_TRUE(skipped.epoch.empty());
  EXPECT_EQ(reg.PlanPublish("chat.a", "y").seq, 2u) << "skip_history leaves no gap";
  auto page = reg.History("chat.a", nullptr, 100);
  EXPECT_TRUE(page.known);
  EXPECT_TRUE(page.complete);
  EXPECT_EQ(Seqs(page.entries), (std::vector<uint64_t>{1, 2}));
}

TEST(TopicRegistryHistory, TheByteBudgetEvictsTheOldestOfThePublishingTopic) {
  TopicRegistry reg({.stripes = 2,
                     .history = History(100, absl::Minutes(10)),
                     .max_history_bytes = 4 * (static_cast<int64_t>(sizeof(HistoryEntry)) + 32 + 100)});
  std::string payload(100, 'x');
  for (int i = 0; i < 10; ++i) reg.PlanPublish("a", payload);
  EXPECT_LE(reg.history_bytes(), 4 * (static_cast<int64_t>(sizeof(HistoryEntry)) + 32 + 100));
  EXPECT_EQ(reg.history_messages(), 4u);
  EXPECT_EQ(reg.history_evicted(), 6u);
  auto page = reg.History("a", nullptr, 100);
  EXPECT_EQ(Seqs(page.entries), (std::vector<uint64_t>{7, 8, 9, 10})) << "contiguous, newest kept";
  EXPECT_FALSE(page.complete);
}

TEST(HistoryConfig, ParsesOverridesAndRefusesBadOnes) {
  auto c = HistoryConfig::Parse({.size = 0, .ttl = absl::Minutes(1)}, "chat.>:100:10m,news.*:10:1h",
                                256);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->For("chat.room.1").size, 100u);
  EXPECT_EQ(c->For("news.eu").ttl, absl::Hours(1));
  EXPECT_FALSE(c->For("other").enabled());
  EXPECT_EQ(c->longest_ttl(), absl::Hours(1));
  for (const char* bad : {"chat.>", "chat.>:x:1m", "chat.>:1:soon", "a*b:1:1m"}) {
    EXPECT_FALSE(HistoryConfig::Parse({}, bad, 256).ok()) << bad;
  }
  // First match wins: a rule an earlier one shadows is refused, saying why.
  auto shadowed = HistoryConfig::Parse({}, "chat.>:500:10m,chat.vip:3:10m", 256);
  ASSERT_FALSE(shadowed.ok());
  EXPECT_EQ(shadowed.status().message(),
            "--history entry 'chat.vip:3:10m' never applies: 'chat.>' comes first and takes "
            "every topic it matches (first match wins: put the narrower rule first)");
  EXPECT_TRUE(HistoryConfig::Parse({}, "chat.vip:3:10m,chat.>:500:10m", 256).ok());
}

}  // namespace
}  // namespace fanout
