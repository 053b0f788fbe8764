#include "core/presence.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/core/fake_subscriber.h"

namespace fanout {
namespace {

std::vector<TopicPattern> Patterns(std::vector<std::string> texts) {
  std::vector<TopicPattern> out;
  for (const auto& t : texts) out.push_back(*TopicPattern::Parse(t, 256));
  return out;
}

TEST(PresenceTracker, CountsConnectionsUsersAndAnonymousOnCoveredTopicsOnly) {
  PresenceTracker p(Patterns({"room.>"}), 1);
  EXPECT_TRUE(p.Covers("room.1"));
  EXPECT_FALSE(p.Covers("news"));
  EXPECT_FALSE(p.Join("news", 1, "alice"));
  p.Join("room.1", 1, "alice");
  p.Join("room.1", 2, "alice");
  p.Join("room.1", 2, "alice");  // the same connection again: counted once
  p.Join("room.1", 3, "bob");
  p.Join("room.1", 4, "");
  PresenceTracker::Counts c = p.Get("room.1", 1);
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.connections, 4u);
  EXPECT_EQ(c.users, 2u);
  EXPECT_EQ(c.anonymous, 1u);
  ASSERT_EQ(c.user_list.size(), 1u);
  EXPECT_EQ(c.user_list[0], (std::pair<std::string, uint64_t>("alice", 2)));
  EXPECT_TRUE(c.more_users);
  EXPECT_FALSE(p.Get("news", 10).enabled);
  EXPECT_EQ(p.topic_count(), 1u);
  for (uint64_t id : {1, 2, 3, 4}) p.Leave("room.1", id);
  EXPECT_EQ(p.Get("room.1", 10).connections, 0u);
  EXPECT_EQ(p.topic_count(), 0u);  // nothing held for a topic nobody is on
}

TEST(PresenceTracker, WatchersHearFirstJoinsAndLastLeavesOfUsers) {
  PresenceTracker p(Patterns({"room.*"}), 1);
  auto watcher = std::make_shared<FakeSubscriber>(9, 0);
  EXPECT_FALSE(p.Watch("room.1", watcher));  // not on the topic
  p.Join("room.1", 9, "carol");
  EXPECT_TRUE(p.Watch("room.1", watcher));
  auto join = p.Join("room.1", 1, "alice");
  ASSERT_TRUE(join);
  EXPECT_TRUE(join->join);
  EXPECT_EQ(join->watchers->size, 1u);
  EXPECT_EQ(PresenceEventJson(*join), R"({"op":"join","topic":"room.1","user":"alice"})");
  EXPECT_FALSE(p.Join("room.1", 2, "alice"));  // her second connection
  EXPECT_FALSE(p.Join("room.1", 3, ""));       // anonymous
  EXPECT_FALSE(p.Leave("room.1", 1));          // she still has one
  auto leave = p.Leave("room.1", 2);
  ASSERT_TRUE(leave);
  EXPECT_FALSE(leave->join);
  // Authenticating as someone else: a leave and a join, the watcher kept.
  p.Join("room.1", 4, "dave");
  auto moved = p.SetUser("room.1", 4, "erin");
  ASSERT_EQ(moved.size(), 2u);
  EXPECT_EQ(PresenceEventJson(moved[0]), R"({"op":"leave","topic":"room.1","user":"dave"})");
  EXPECT_EQ(PresenceEventJson(moved[1]), R"({"op":"join","topic":"room.1","user":"erin"})");
  auto watcher_moved = p.SetUser("room.1", 9, "carol2");
  EXPECT_TRUE(watcher_moved.empty());  // told to nobody else: it is the only watcher...
  EXPECT_TRUE(p.Join("room.1", 5, "frank"));  // ...and still one
  // A watcher that leaves hears nothing more, and its own leave goes to no one.
  EXPECT_FALSE(p.Leave("room.1", 9));
  EXPECT_FALSE(p.Join("room.1", 6, "gina"));
}

TEST(PresenceTracker, ConcurrentJoinsAndLeavesBalance) {
  PresenceTracker p(Patterns({">"}), 2, 4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&p, t] {
      for (int round = 0; round < 2000; ++round) {
        const std::string topic = "t." + std::to_string(round % 7);
        const uint64_t id = static_cast<uint64_t>(t) * 100000 + round;
        p.Join(topic, id, "u" + std::to_string(round % 5));
        p.Get(topic, 3);
        p.Leave(topic, id);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(p.topic_count(), 0u);
}

}  // namespace
}  // namespace fanout
