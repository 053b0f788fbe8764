#include "core/hub.h"

#include "gtest/gtest.h"
#include "tests/unit/core/fake_subscriber.h"

namespace fanout {
namespace {

TEST(Hub, PublishPostsOneTaskPerThreadWithSubscribersAndSharesOneMessage) {
  QueueDispatcher dispatcher(3);
  StandaloneHub standalone({}, &dispatcher);
  Hub& hub = standalone.hub;
  std::vector<std::shared_ptr<FakeSubscriber>> subs;
  for (uint64_t id = 1; id <= 10; ++id) {
    subs.push_back(std::make_shared<FakeSubscriber>(id, id % 2 == 0 ? 0 : 2));
    ASSERT_TRUE(hub.Subscribe("t", subs.back()).ok());
  }
  auto result = PublishNow(hub, "t", "payload");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->seq, 1u);
  EXPECT_EQ(result->subscribers, 10u);
  EXPECT_EQ(dispatcher.pending(0), 1u);
  EXPECT_EQ(dispatcher.pending(1), 0u);
  EXPECT_EQ(dispatcher.pending(2), 1u);
  dispatcher.RunAll();
  for (auto& s : subs) {
    ASSERT_EQ(s->received.size(), 1u);
    EXPECT_NE(s->received[0].find(R"("text":"payload")"), std::string::npos);
  }
  EXPECT_EQ(hub.messages_in(), 1u);
  EXPECT_EQ(hub.bytes_in(), 7u);
}

TEST(Hub, RejectsBadTopicsAndOversizedPayloads) {
  QueueDispatcher dispatcher(1);
  Limits limits;
  limits.max_payload_bytes = 4;
  StandaloneHub standalone({.limits = limits}, &dispatcher);
  Hub& hub = standalone.hub;
  EXPECT_EQ(PublishNow(hub, "bad topic", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PublishNow(hub, "t", "12345").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BroadcastNow(hub, "12345").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(PublishNow(hub, "t", "1234").ok());
  EXPECT_EQ(hub.Subscribe("", std::make_shared<FakeSubscriber>(1, 0)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Hub, BroadcastReachesRegisteredConnectionsOnly) {
  QueueDispatcher dispatcher(2);
  StandaloneHub standalone({}, &dispatcher);
  Hub& hub = standalone.hub;
  auto a = std::make_shared<FakeSubscriber>(1, 0);
  auto b = std::make_shared<FakeSubscriber>(2, 1, DeliveryFormat::kRaw);
  auto gone = std::make_shared<FakeSubscriber>(3, 1);
  for (auto& s : {a, b, gone}) ASSERT_TRUE(hub.AddConnection(s));
  EXPECT_FALSE(hub.AddConnection(a));
  hub.RemoveConnection(3);
  EXPECT_EQ(hub.connection_count(), 2u);
  auto r = BroadcastNow(hub, "hi");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->subscribers, 2u);
  dispatcher.RunAll();
  ASSERT_EQ(a->received.size(), 1u);
  ASSERT_EQ(b->received.size(), 1u);
  EXPECT_TRUE(gone->received.empty());
  EXPECT_EQ(b->received[0].substr(2), "hi") << "raw frame is the payload";
}

}  // namespace
}  // namespace fanout
