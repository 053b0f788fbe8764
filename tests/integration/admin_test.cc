// Integration tests for the admin and streaming calls of fanout.v1.Fanout,
// against the real fanoutd with real WebSocket clients.
#include <string>
#include <vector>

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/fixture.h"

namespace fanout {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class AdminTest : public FanoutdTest {
 protected:
  // The connection id of the only subscriber of `topic`.
  std::string OnlySubscriber(const std::string& topic) {
    auto ids = ListSubscriberIds(topic, 10);
    EXPECT_EQ(ids.size(), 1u);
    return ids.empty() ? "" : ids[0];
  }
};

TEST_F(AdminTest, DisconnectSendsTheCloseCodeAndReason) {
  auto victim = Connect("/ws?topics=admin-a");
  auto bystander = Connect("/ws?topics=admin-b");
  std::string id = OnlySubscriber("admin-a");

  grpc::ClientContext ctx;
  v1::DisconnectRequest req;
  req.set_connection_id(id);
  req.set_code(4001);
  req.set_reason("account suspended");
  v1::DisconnectResponse resp;
  ASSERT_TRUE(stub_->Disconnect(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.connections(), 1u);
  EXPECT_FALSE(victim->Read().ok());
  EXPECT_EQ(victim->close_code(), 4001);
  EXPECT_EQ(victim->close_reason(), "account suspended");

  MustPublish("admin-b", "still served");
  EXPECT_TRUE(bystander->Read().ok());

  grpc::ClientContext again;
  EXPECT_EQ(stub_->Disconnect(&again, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext bad_code;
  req.set_code(2000);
  EXPECT_EQ(stub_->Disconnect(&bad_code, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext no_target;
  EXPECT_EQ(stub_->Disconnect(&no_target, v1::DisconnectRequest(), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext no_user;
  v1::DisconnectRequest by_user;
  by_user.set_user("nobody");
  EXPECT_EQ(stub_->Disconnect(&no_user, by_user, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminTest, ServerSideSubscribeAndUnsubscribe) {
  auto c = Connect("/ws?topics=home");
  std::string id = OnlySubscriber("home");

  grpc::ClientContext ctx;
  v1::SubscribeRequest sub;
  sub.set_connection_id(id);
  sub.set_topic("pushed");
  v1::SubscribeResponse sresp;
  ASSERT_TRUE(stub_->Subscribe(&ctx, sub, &sresp).ok());
  EXPECT_EQ(sresp.connections(), 1u);
  EXPECT_EQ(MustPublish("pushed", "you were subscribed").subscribers(), 1u);
  EXPECT_EQ(c->Read()->data, R"({"topic":"pushed","seq":1,"text":"you were subscribed"})");

  grpc::ClientContext uctx;
  v1::UnsubscribeRequest unsub;
  unsub.set_connection_id(id);
  unsub.set_topic("pushed");
  v1::UnsubscribeResponse uresp;
  ASSERT_TRUE(stub_->Unsubscribe(&uctx, unsub, &uresp).ok());
  EXPECT_EQ(uresp.connections(), 1u);
  EXPECT_EQ(MustPublish("pushed", "gone").subscribers(), 0u);

  grpc::ClientContext bad;
  sub.set_topic("no spaces allowed");
  EXPECT_EQ(stub_->Subscribe(&bad, sub, &sresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext missing;
  sub.set_topic("t");
  sub.set_connection_id("999999");
  EXPECT_EQ(stub_->Subscribe(&missing, sub, &sresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminTest, ServerSideSubscribeRespectsTheSubscriptionLimit) {
  Start({"--max_subscriptions_per_connection=1"});
  auto c = Connect("/ws?topics=one");
  grpc::ClientContext ctx;
  v1::SubscribeRequest sub;
  sub.set_connection_id(OnlySubscriber("one"));
  sub.set_topic("two");
  v1::SubscribeResponse resp;
  EXPECT_EQ(stub_->Subscribe(&ctx, sub, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(AdminTest, GetConnectionDescribesTopicsAndTraffic) {
  auto c = Connect("/ws?topics=zeta,alpha&format=raw");
  std::string id = OnlySubscriber("alpha");
  MustPublish("alpha", "1");
  MustPublish("zeta", "2");
  ASSERT_TRUE(c->Read().ok());
  ASSERT_TRUE(c->Read().ok());

  grpc::ClientContext ctx;
  v1::GetConnectionRequest req;
  req.set_connection_id(id);
  v1::Connection conn;
  ASSERT_TRUE(stub_->GetConnection(&ctx, req, &conn).ok());
  EXPECT_EQ(conn.connection_id(), id);
  EXPECT_THAT(conn.topics(), ElementsAre("alpha", "zeta"));
  EXPECT_EQ(conn.messages_sent(), 2u);
  EXPECT_EQ(conn.queued_bytes(), 0u);
  EXPECT_EQ(conn.format(), "raw");
  EXPECT_THAT(conn.remote_address(), HasSubstr("127.0.0.1:"));

  grpc::ClientContext missing;
  req.set_connection_id("424242");
  EXPECT_EQ(stub_->GetConnection(&missing, req, &conn).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminTest, PublishBatchGivesEachMessageItsOwnResult) {
  auto c = Connect("/ws?topics=batch");
  grpc::ClientContext ctx;
  v1::PublishBatchRequest req;
  for (const auto& [topic, payload] : std::vector<std::pair<std::string, std::string>>{
           {"batch", "a"}, {"bad topic", "b"}, {"batch", "c"}}) {
    auto* m = req.add_messages();
    m->set_topic(topic);
    m->set_payload(payload);
  }
  v1::PublishBatchResponse resp;
  ASSERT_TRUE(stub_->PublishBatch(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).seq(), 1u);
  EXPECT_EQ(resp.results(0).code(), 0);
  EXPECT_EQ(resp.results(1).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_FALSE(resp.results(1).error().empty());
  EXPECT_EQ(resp.results(2).seq(), 2u);
  EXPECT_EQ(c->Read()->data, R"({"topic":"batch","seq":1,"text":"a"})");
  EXPECT_EQ(c->Read()->data, R"({"topic":"batch","seq":2,"text":"c"})");
}

TEST_F(AdminTest, PublishStreamAnswersEveryMessageInOrderAndSurvivesBadOnes) {
  auto c = Connect("/ws?topics=stream&format=raw");
  grpc::ClientContext ctx;
  auto stream = stub_->PublishStream(&ctx);
  constexpr int kMessages = 3000;
  std::thread writer([&] {
    for (int i = 0; i < kMessages; ++i) {
      v1::PublishRequest req;
      req.set_topic(i == 100 ? "bad topic" : "stream");
      req.set_payload(absl::StrCat(i));
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
  });
  uint64_t expected_seq = 1;
  int results = 0;
  v1::PublishResult result;
  while (stream->Read(&result)) {
    if (results == 100) {
      EXPECT_EQ(result.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    } else {
      EXPECT_EQ(result.code(), 0) << result.error();
      EXPECT_EQ(result.seq(), expected_seq++);
      EXPECT_EQ(result.subscribers(), 1u);
    }
    ++results;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(results, kMessages);
  for (int i = 0; i < kMessages; ++i) {
    if (i == 100) continue;
    auto f = c->Read();
    ASSERT_TRUE(f.ok()) << "message " << i;
    ASSERT_EQ(f->data, absl::StrCat(i));
  }
}

// A producer that sends a burst and then waits for every result before the
// next burst: the node batches results of back-to-back requests, and must
// still answer the last one of each burst though no request follows it.
TEST_F(AdminTest, PublishStreamAnswersEveryBurstWhileTheProducerWaits) {
  auto c = Connect("/ws?topics=bursts&format=raw");  // a topic with a subscriber numbers messages
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub_->PublishStream(&ctx);
  constexpr int kBursts = 20;
  constexpr int kBurst = 200;
  uint64_t expected_seq = 1;
  for (int b = 0; b < kBursts; ++b) {
    for (int i = 0; i < kBurst; ++i) {
      v1::PublishRequest req;
      req.set_topic("bursts");
      req.set_payload(absl::StrCat(b, ".", i));
      // Leave together, so the node reads them back to back.
      auto options = i + 1 < kBurst ? grpc::WriteOptions().set_buffer_hint() : grpc::WriteOptions();
      ASSERT_TRUE(stream->Write(req, options)) << "burst " << b;
    }
    for (int i = 0; i < kBurst; ++i) {
      v1::PublishResult result;
      ASSERT_TRUE(stream->Read(&result)) << "burst " << b << ", result " << i << " never came";
      EXPECT_EQ(result.code(), 0) << result.error();
      EXPECT_EQ(result.seq(), expected_seq++);
      EXPECT_EQ(result.subscribers(), 1u);
    }
  }
  stream->WritesDone();
  v1::PublishResult extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(AdminTest, WatchTailsATopicOrAPrefix) {
  grpc::ClientContext ctx_topic;
  v1::WatchRequest by_topic;
  by_topic.set_topic("orders/eu");
  auto topic_watch = stub_->Watch(&ctx_topic, by_topic);
  grpc::ClientContext ctx_prefix;
  v1::WatchRequest by_prefix;
  by_prefix.set_prefix("orders/");
  auto prefix_watch = stub_->Watch(&ctx_prefix, by_prefix);
  // The streams are open once the headers arrived.
  topic_watch->WaitForInitialMetadata();
  prefix_watch->WaitForInitialMetadata();

  MustPublish("orders/us", "1");
  MustPublish("orders/eu", "2");
  MustPublish("billing", "3");
  MustPublish("orders/eu", std::string("\x00\xff", 2));

  v1::WatchEvent e;
  ASSERT_TRUE(topic_watch->Read(&e));
  EXPECT_EQ(e.topic(), "orders/eu");
  EXPECT_EQ(e.payload(), "2");
  EXPECT_GT(e.published_at().seconds(), 1700000000);
  ASSERT_TRUE(topic_watch->Read(&e));
  EXPECT_EQ(e.payload(), std::string("\x00\xff", 2));
  std::vector<std::string> seen;
  for (int i = 0; i < 3 && prefix_watch->Read(&e); ++i) seen.push_back(e.topic() + "=" + e.payload().substr(0, 1));
  EXPECT_THAT(seen, ElementsAre("orders/us=1", "orders/eu=2", std::string("orders/eu=\0", 11)));
  ctx_topic.TryCancel();
  ctx_prefix.TryCancel();

  grpc::ClientContext both;
  v1::WatchRequest bad;
  bad.set_topic("a");
  bad.set_prefix("b");
  auto refused = stub_->Watch(&both, bad);
  EXPECT_FALSE(refused->Read(&e));
  EXPECT_EQ(refused->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminTest, WatchTakesATopicPattern) {
  grpc::ClientContext ctx;
  v1::WatchRequest req;
  req.set_topic("orders.*");
  auto watch = stub_->Watch(&ctx, req);
  watch->WaitForInitialMetadata();
  MustPublish("orders.eu", "1");
  MustPublish("orders.eu.paris", "2");  // two segments: not orders.*
  MustPublish("billing.eu", "3");
  MustPublish("orders.us", "4");
  v1::WatchEvent e;
  std::vector<std::string> seen;
  for (int i = 0; i < 2 && watch->Read(&e); ++i) seen.push_back(e.topic() + "=" + e.payload());
  EXPECT_THAT(seen, ElementsAre("orders.eu=1", "orders.us=4"));
  ctx.TryCancel();

  grpc::ClientContext bad_ctx;
  v1::WatchRequest bad;
  bad.set_topic("orders.>.eu");
  auto refused = stub_->Watch(&bad_ctx, bad);
  EXPECT_FALSE(refused->Read(&e));
  EXPECT_EQ(refused->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminTest, HealthPerServiceName) {
  auto health = grpc::health::v1::Health::NewStub(node_->channel());
  for (const char* service : {"", "fanout.v1.Fanout"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminTest, SigtermEndsWatchStreams) {
  grpc::ClientContext ctx;
  v1::WatchRequest req;
  req.set_prefix("");
  auto watch = stub_->Watch(&ctx, req);
  watch->WaitForInitialMetadata();
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  v1::WatchEvent e;
  while (watch->Read(&e)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  auto code = node_->Stop(0);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace fanout

namespace fanout {
namespace {

TEST_F(AdminTest, SigtermEndsAnIdlePublishStreamWithUnavailable) {
  // A long drain deadline: the node must not need it for an idle producer.
  Start({"--drain_timeout=300s"});
  grpc::ClientContext ctx;
  auto stream = stub_->PublishStream(&ctx);
  v1::PublishRequest req;
  req.set_topic("idle");
  req.set_payload("x");
  ASSERT_TRUE(stream->Write(req));
  v1::PublishResult result;
  ASSERT_TRUE(stream->Read(&result));
  EXPECT_EQ(result.code(), 0);
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  EXPECT_FALSE(stream->Read(&result));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "node is shutting down");
  auto code = node_->Stop(0, absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// Reflection streams, v1 and v1alpha, answer and then end at SIGTERM even when
// idle: here so that they run under the sanitizers too (the e2e tests of
// reflection run only on the release build).
TEST_F(AdminTest, ReflectionAnswersAndSigtermEndsIdleReflectionStreams) {
  Start({"--drain_timeout=300s"});
  auto v1_stub = grpc::reflection::v1::ServerReflection::NewStub(node_->channel());
  auto alpha_stub = grpc::reflection::v1alpha::ServerReflection::NewStub(node_->channel());
  grpc::ClientContext c1, c2;
  auto s1 = v1_stub->ServerReflectionInfo(&c1);
  auto s2 = alpha_stub->ServerReflectionInfo(&c2);
  grpc::reflection::v1::ServerReflectionRequest r1;
  r1.set_file_containing_symbol("fanout.v1.Fanout.Publish");
  ASSERT_TRUE(s1->Write(r1));
  grpc::reflection::v1::ServerReflectionResponse a1;
  ASSERT_TRUE(s1->Read(&a1));
  ASSERT_TRUE(a1.has_file_descriptor_response());
  EXPECT_GE(a1.file_descriptor_response().file_descriptor_proto_size(), 1);
  grpc::reflection::v1alpha::ServerReflectionRequest r2;
  r2.set_list_services("");
  ASSERT_TRUE(s2->Write(r2));
  grpc::reflection::v1alpha::ServerReflectionResponse a2;
  ASSERT_TRUE(s2->Read(&a2));
  EXPECT_GE(a2.list_services_response().service_size(), 3);
  // Both streams idle now.
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  EXPECT_FALSE(s1->Read(&a1));
  EXPECT_FALSE(s2->Read(&a2));
  EXPECT_EQ(s1->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s2->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  auto code = node_->Stop(0, absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST_F(AdminTest, EmptyConnectionIdIsInvalidArgument) {
  grpc::ClientContext ctx;
  v1::SubscribeRequest req;
  req.set_connection_id("");
  req.set_topic("t");
  v1::SubscribeResponse resp;
  EXPECT_EQ(stub_->Subscribe(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace fanout
