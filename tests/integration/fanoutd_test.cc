// Integration tests: the real fanoutd binary, real Beast WebSocket clients and
// a real gRPC client, asserting what a user of the product would notice.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/parse.hpp>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fanout/v1/fanout.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/fixture.h"

namespace fanout {
namespace {

using ::testing::HasSubstr;

TEST_F(FanoutdTest, PublishReachesEverySubscriberOfTheTopicAndNoOneElse) {
  auto a1 = Connect("/ws?topics=sports");
  auto a2 = Connect("/ws?topics=weather,sports");
  auto other = Connect("/ws?topics=weather");
  ASSERT_TRUE(a1 && a2 && other);

  v1::PublishResponse resp = MustPublish("sports", R"({"score":[1,2]})");
  EXPECT_EQ(resp.seq(), 1u);
  EXPECT_EQ(resp.subscribers(), 2u);
  for (auto* c : {a1.get(), a2.get()}) {
    auto f = c->Read();
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE(f->text);
    EXPECT_EQ(f->data, R"({"topic":"sports","seq":1,"data":{"score":[1,2]}})");
  }
  // The other client gets the next weather message first, not the sports one.
  MustPublish("weather", "sunny");
  auto f = other->Read();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data, R"({"topic":"weather","seq":1,"text":"sunny"})");
}

TEST_F(FanoutdTest, PayloadKindsAreLosslessInJsonAndExactInRaw) {
  auto json = Connect("/ws?topics=kinds");
  auto raw = Connect("/ws?topics=kinds&format=raw");
  ASSERT_TRUE(json && raw);
  const std::string binary("\xff\x00\x01", 3);
  const std::string text = "h\xC3\xA9llo \"quoted\"\n";
  MustPublish("kinds", binary);
  MustPublish("kinds", text);
  MustPublish("kinds", "[1, 2]");

  EXPECT_EQ(json->Read()->data, R"({"topic":"kinds","seq":1,"b64":"/wAB"})");
  EXPECT_EQ(json->Read()->data, "{\"topic\":\"kinds\",\"seq\":2,\"text\":\"h\xC3\xA9llo \\\"quoted\\\"\\n\"}");
  EXPECT_EQ(json->Read()->data, R"({"topic":"kinds","seq":3,"data":[1, 2]})");

  auto f1 = raw->Read();
  ASSERT_TRUE(f1.ok());
  EXPECT_FALSE(f1->text);
  EXPECT_EQ(f1->data, binary);
  auto f2 = raw->Read();
  ASSERT_TRUE(f2.ok());
  EXPECT_TRUE(f2->text);
  EXPECT_EQ(f2->data, text);
  EXPECT_EQ(raw->Read()->data, "[1, 2]");
}

TEST_F(FanoutdTest, SequenceNumbersCountPerTopicAndPublishWithoutSubscribersReturnsZero) {
  v1::PublishResponse none = MustPublish("empty-topic", "x");
  EXPECT_EQ(none.seq(), 0u);
  EXPECT_EQ(none.subscribers(), 0u);
  auto c = Connect("/ws?topics=seq");
  ASSERT_TRUE(c);
  for (uint64_t i = 1; i <= 5; ++i) {
    EXPECT_EQ(MustPublish("seq", "1").seq(), i);
    auto f = c->Read();
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(Json(f->data).at("seq").as_int64(), static_cast<int64_t>(i));
  }
}

TEST_F(FanoutdTest, BroadcastReachesEveryConnection) {
  std::vector<std::unique_ptr<WsClient>> clients;
  clients.push_back(Connect("/ws"));
  clients.push_back(Connect("/ws?topics=a"));
  clients.push_back(Connect("/ws?topics=b&format=raw"));
  grpc::ClientContext ctx;
  v1::BroadcastRequest req;
  req.set_payload(R"({"maintenance":true})");
  v1::BroadcastResponse resp;
  ASSERT_TRUE(stub_->Broadcast(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.connections(), 3u);
  EXPECT_EQ(clients[0]->Read()->data, R"({"broadcast":true,"seq":1,"data":{"maintenance":true}})");
  EXPECT_EQ(clients[1]->Read()->data, R"({"broadcast":true,"seq":1,"data":{"maintenance":true}})");
  EXPECT_EQ(clients[2]->Read()->data, R"({"maintenance":true})");
}

TEST_F(FanoutdTest, ControlMessagesSubscribeUnsubscribeAndPing) {
  auto c = Connect("/ws");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c->Request(R"({"op":"subscribe","topic":"ctl","id":1})"), R"({"id":1,"ok":true})");
  EXPECT_EQ(*c->Request(R"({"op":"ping","id":"p"})"), R"({"id":"p","ok":true})");
  MustPublish("ctl", "first");
  EXPECT_EQ(c->Read()->data, R"({"topic":"ctl","seq":1,"text":"first"})");
  EXPECT_EQ(*c->Request(R"({"op":"unsubscribe","topic":"ctl","id":2})"), R"({"id":2,"ok":true})");
  EXPECT_EQ(MustPublish("ctl", "second").subscribers(), 0u);
  // Nothing arrives: the next frame is the answer to this ping.
  EXPECT_EQ(*c->Request(R"({"op":"ping","id":3})"), R"({"id":3,"ok":true})");
}

TEST_F(FanoutdTest, MalformedControlMessagesGetTypedErrorsAndTheConnectionStaysUsable) {
  auto c = Connect("/ws");
  ASSERT_TRUE(c);
  struct Case {
    std::string send;
    std::string code;
  } cases[] = {
      {"not json", "invalid_json"},
      {"[1,2]", "invalid_message"},
      {R"({"id":5})", "invalid_message"},
      {R"({"op":"dance","id":6})", "unknown_op"},
      {R"({"op":"subscribe","id":7})", "invalid_message"},
      {R"({"op":"subscribe","topic":"bad topic!","id":8})", "invalid_topic"},
      {R"({"op":"subscribe","topic":"","id":9})", "invalid_topic"},
      {R"({"op":"subscribe","topic":42,"id":10})", "invalid_message"},
      {R"({"op":"ping","id":{"x":1}})", "invalid_message"},
  };
  for (const auto& tc : cases) {
    auto reply = c->Request(tc.send);
    ASSERT_TRUE(reply.ok()) << tc.send << ": " << reply.status();
    auto doc = Json(*reply);
    EXPECT_EQ(doc.at("error").at("code").as_string(), tc.code) << tc.send << " -> " << *reply;
    EXPECT_FALSE(doc.at("error").at("message").as_string().empty());
  }
  EXPECT_EQ(Json(*c->Request(R"({"op":"subscribe","topic":"x","id":8})")).at("id").as_int64(), 8);
  ASSERT_TRUE(c->SendBinary("\x01\x02").ok());
  auto binary_reply = c->Read();
  ASSERT_TRUE(binary_reply.ok());
  EXPECT_EQ(Json(binary_reply->data).at("error").at("code").as_string(), "unsupported_frame");
  // Still subscribed and served.
  MustPublish("x", "still here");
  EXPECT_EQ(c->Read()->data, R"({"topic":"x","seq":1,"text":"still here"})");
}

TEST_F(FanoutdTest, InvalidTopicsAreRejectedOnBothSides) {
  WsClient::Refusal refusal;
  auto c = WsClient::Connect(node_->ws_address(), "/ws?topics=ok,bad%20topic", &refusal);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(refusal.http_status, 400);
  EXPECT_THAT(refusal.body, HasSubstr("invalid topic"));

  v1::PublishResponse resp;
  for (const std::string& topic : {std::string(""), std::string("a b"), std::string(300, 'x'),
                                   std::string("caf\xC3\xA9")}) {
    grpc::Status s = Publish(topic, "x", &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << topic;
  }
  grpc::ClientContext ctx;
  v1::ListSubscribersRequest req;
  req.set_topic("no spaces");
  v1::ListSubscribersResponse lresp;
  EXPECT_EQ(stub_->ListSubscribers(&ctx, req, &lresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FanoutdTest, OversizedPayloadIsInvalidArgument) {
  v1::PublishResponse resp;
  grpc::Status s = Publish("big", std::string((1 << 20) + 1, 'x'), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("larger than the limit"));
}

TEST_F(FanoutdTest, ClosingAClientRemovesItFromListSubscribers) {
  auto stay = Connect("/ws?topics=roster");
  auto leave = Connect("/ws?topics=roster");
  ASSERT_TRUE(stay && leave);
  EXPECT_EQ(ListSubscriberIds("roster", 10).size(), 2u);
  leave->Close();
  // The server unregisters when it sees the close; a publish after that
  // reports one subscriber. Poll the API the way an operator would.
  std::vector<std::string> ids;
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    ids = ListSubscriberIds("roster", 10);
  } while (ids.size() != 1 && absl::Now() < deadline);
  EXPECT_EQ(ids.size(), 1u);
  EXPECT_EQ(MustPublish("roster", "x").subscribers(), 1u);
}

TEST_F(FanoutdTest, ListSubscribersPagingIsCompleteAndStable) {
  std::vector<std::unique_ptr<WsClient>> clients;
  for (int i = 0; i < 53; ++i) clients.push_back(Connect("/ws?topics=paged"));
  std::vector<std::string> ids = ListSubscriberIds("paged", 7);
  std::set<std::string> unique(ids.begin(), ids.end());
  EXPECT_EQ(ids.size(), 53u);
  EXPECT_EQ(unique.size(), 53u);
  // The same walk twice gives the same order.
  EXPECT_EQ(ListSubscriberIds("paged", 7), ids);
  EXPECT_EQ(ListSubscriberIds("paged", 1000), ids);

  // A client that joins mid-walk appears on a later page, and nobody twice.
  grpc::ClientContext ctx;
  v1::ListSubscribersRequest req;
  req.set_topic("paged");
  req.set_page_size(10);
  v1::ListSubscribersResponse first;
  ASSERT_TRUE(stub_->ListSubscribers(&ctx, req, &first).ok());
  clients.push_back(Connect("/ws?topics=paged"));
  std::vector<std::string> rest;
  std::string token = first.next_page_token();
  while (!token.empty()) {
    grpc::ClientContext c2;
    req.set_page_token(token);
    v1::ListSubscribersResponse page;
    ASSERT_TRUE(stub_->ListSubscribers(&c2, req, &page).ok());
    for (const auto& s : page.subscribers()) rest.push_back(s.connection_id());
    token = page.next_page_token();
  }
  EXPECT_EQ(first.subscribers_size() + rest.size(), 54u);
  const auto& sub = first.subscribers(0);
  EXPECT_THAT(sub.remote_address(), HasSubstr("127.0.0.1:"));
  EXPECT_GT(sub.connected_at().seconds(), 1700000000);

  grpc::ClientContext bad;
  req.set_page_token("not-a-token");
  v1::ListSubscribersResponse resp;
  EXPECT_EQ(stub_->ListSubscribers(&bad, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FanoutdTest, ListTopicsAndGetStatsDescribeTheNode) {
  auto c1 = Connect("/ws?topics=room/1,room/2,lobby");
  auto c2 = Connect("/ws?topics=room/2");
  MustPublish("room/2", "hello");
  ASSERT_TRUE(c1->Read().ok());
  ASSERT_TRUE(c2->Read().ok());

  grpc::ClientContext ctx;
  v1::ListTopicsRequest req;
  req.set_prefix("room/");
  req.set_page_size(1);
  v1::ListTopicsResponse page1;
  ASSERT_TRUE(stub_->ListTopics(&ctx, req, &page1).ok());
  ASSERT_EQ(page1.topics_size(), 1);
  EXPECT_EQ(page1.topics(0).topic(), "room/1");
  EXPECT_EQ(page1.topics(0).subscribers(), 1u);
  grpc::ClientContext ctx2;
  req.set_page_token(page1.next_page_token());
  v1::ListTopicsResponse page2;
  ASSERT_TRUE(stub_->ListTopics(&ctx2, req, &page2).ok());
  ASSERT_EQ(page2.topics_size(), 1);
  EXPECT_EQ(page2.topics(0).topic(), "room/2");
  EXPECT_EQ(page2.topics(0).subscribers(), 2u);
  EXPECT_TRUE(page2.next_page_token().empty());

  grpc::ClientContext ctx3;
  v1::GetStatsResponse stats;
  ASSERT_TRUE(stub_->GetStats(&ctx3, v1::GetStatsRequest(), &stats).ok());
  EXPECT_EQ(stats.connections(), 2u);
  EXPECT_EQ(stats.topics(), 3u);
  EXPECT_EQ(stats.subscriptions(), 4u);
  EXPECT_EQ(stats.messages_in(), 1u);
  EXPECT_EQ(stats.bytes_in(), 5u);
  EXPECT_EQ(stats.messages_out(), 2u);
  EXPECT_FALSE(stats.node_id().empty());
}

TEST_F(FanoutdTest, OversizedInboundFrameClosesWith1009) {
  auto c = Connect("/ws");
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->SendText(std::string(70 * 1024, 'x')).ok());
  auto f = c->Read();
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(c->close_code(), 1009);
  // Everyone else keeps being served.
  auto other = Connect("/ws?topics=after");
  MustPublish("after", "ok");
  EXPECT_TRUE(other->Read().ok());
}

TEST_F(FanoutdTest, HealthzAndUnknownPaths) {
  WsClient::Refusal refusal;
  EXPECT_FALSE(WsClient::Connect(node_->ws_address(), "/nope", &refusal).ok());
  EXPECT_EQ(refusal.http_status, 404);
}

class FanoutdLimitsTest : public FanoutdTest {
 protected:
  void SetUp() override {}
};

TEST_F(FanoutdLimitsTest, SlowClientIsCutOffWhileOthersReceiveEverything) {
  Start({"--max_outbound_queue_bytes=262144", "--max_payload_bytes=65536"});
  auto slow = Connect("/ws?topics=firehose&format=raw");
  ASSERT_TRUE(slow);
  std::vector<std::unique_ptr<WsClient>> fast;
  for (int i = 0; i < 3; ++i) fast.push_back(Connect("/ws?topics=firehose&format=raw"));
  auto rss_before = node_->RssBytes();
  ASSERT_TRUE(rss_before.ok());

  // 2000 x 8 KiB = 16 MiB toward a client that does not read: far beyond
  // its queue limit plus what the kernel buffers (about 4 MiB here).
  const int kMessages = 2000;
  const std::string payload(8192, 'p');
  // The publisher stays at most kWindow messages (128 KiB) ahead of the
  // slowest reader, well inside the 256 KiB queue: the readers are never
  // slow consumers, however slow the build (sanitizers) or the machine.
  const int kWindow = 16;
  std::vector<std::atomic<int>> received(fast.size());
  std::atomic<bool> reader_failed{false};
  std::vector<std::thread> readers;
  for (size_t i = 0; i < fast.size(); ++i) {
    readers.emplace_back([&, i] {
      while (received[i].load() < kMessages) {
        auto f = fast[i]->Read(absl::Seconds(30));
        if (!f.ok() || f->data.size() != payload.size()) {
          reader_failed = true;
          break;
        }
        received[i].fetch_add(1);
      }
    });
  }
  auto slowest = [&] {
    int m = kMessages;
    for (auto& r : received) m = std::min(m, r.load());
    return m;
  };
  for (int i = 0; i < kMessages && !reader_failed; ++i) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (i - slowest() >= kWindow && !reader_failed && absl::Now() < deadline) {
      absl::SleepFor(absl::Microseconds(200));
    }
    v1::PublishResponse resp;
    ASSERT_TRUE(Publish("firehose", payload, &resp).ok());
  }
  for (auto& t : readers) t.join();
  EXPECT_FALSE(reader_failed);
  for (size_t i = 0; i < fast.size(); ++i) {
    EXPECT_EQ(received[i].load(), kMessages) << "reader " << i;
  }

  // The slow client was closed with 4008 after what fit in its queue and
  // socket buffers: reading now drains that and then reports the close.
  int slow_got = 0;
  while (true) {
    auto f = slow->Read(absl::Seconds(30));
    if (!f.ok()) break;
    ++slow_got;
  }
  EXPECT_EQ(slow->close_code(), 4008);
  EXPECT_LT(slow_got, kMessages);

  grpc::ClientContext ctx;
  v1::GetStatsResponse stats;
  ASSERT_TRUE(stub_->GetStats(&ctx, v1::GetStatsRequest(), &stats).ok());
  EXPECT_EQ(stats.slow_client_disconnects(), 1u);
  // Memory stayed bounded: far less than the 16 MiB sent. (Sanitizer
  // builds shadow every allocation, so their RSS says nothing here.)
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  auto rss_after = node_->RssBytes();
  ASSERT_TRUE(rss_after.ok());
  EXPECT_LT(static_cast<int64_t>(*rss_after) - static_cast<int64_t>(*rss_before), 12 << 20);
#endif
}

TEST_F(FanoutdLimitsTest, ClientFloodIsClosedWith1008) {
  Start({"--client_messages_per_second=5", "--client_message_burst=10"});
  auto flooder = Connect("/ws");
  auto calm = Connect("/ws?topics=calm");
  ASSERT_TRUE(flooder && calm);
  int answered = 0;
  for (int i = 0; i < 50; ++i) {
    if (!flooder->SendText(R"({"op":"ping"})").ok()) break;
  }
  while (true) {
    auto f = flooder->Read();
    if (!f.ok()) break;
    ++answered;
  }
  EXPECT_EQ(flooder->close_code(), 1008);
  EXPECT_GE(answered, 9);
  EXPECT_LT(answered, 50);
  MustPublish("calm", "fine");
  EXPECT_TRUE(calm->Read().ok());
}

TEST_F(FanoutdLimitsTest, OriginAllowlistRefusesOtherOrigins) {
  Start({"--allowed_origins=https://app.example"});
  WsClient::Refusal refusal;
  EXPECT_FALSE(WsClient::Connect(node_->ws_address(), "/ws", &refusal, "https://evil.example").ok());
  EXPECT_EQ(refusal.http_status, 403);
  EXPECT_TRUE(WsClient::Connect(node_->ws_address(), "/ws", nullptr, "https://app.example").ok());
}

TEST_F(FanoutdLimitsTest, SubscriptionLimitPerConnection) {
  Start({"--max_subscriptions_per_connection=2"});
  auto c = Connect("/ws?topics=a,b");
  ASSERT_TRUE(c);
  auto reply = c->Request(R"({"op":"subscribe","topic":"c","id":1})");
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(Json(*reply).at("error").at("code").as_string(), "too_many_subscriptions");
  WsClient::Refusal refusal;
  EXPECT_FALSE(WsClient::Connect(node_->ws_address(), "/ws?topics=a,b,c", &refusal).ok());
  EXPECT_EQ(refusal.http_status, 400);
}

TEST_F(FanoutdLimitsTest, ConnectionLimitAnswers503) {
  Start({"--max_connections=2"});
  auto c1 = Connect("/ws");
  auto c2 = Connect("/ws");
  WsClient::Refusal refusal;
  EXPECT_FALSE(WsClient::Connect(node_->ws_address(), "/ws", &refusal).ok());
  EXPECT_EQ(refusal.http_status, 503);
}

TEST_F(FanoutdLimitsTest, SigtermClosesClientsWith1001AndHealthGoesNotServing) {
  Start({"--drain_timeout=120s"});
  auto c1 = Connect("/ws?topics=a");
  auto c2 = Connect("/ws");
  ASSERT_TRUE(c1 && c2);

  // An operator's Health.Watch stream sees NOT_SERVING before it ends.
  auto health = grpc::health::v1::Health::NewStub(node_->channel());
  grpc::ClientContext watch_ctx;
  grpc::health::v1::HealthCheckRequest hreq;
  hreq.set_service("fanout.v1.Fanout");
  auto watch = health->Watch(&watch_ctx, hreq);
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(watch->Read(&hresp));
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  absl::Time signalled = absl::Now();
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  for (auto* c : {c1.get(), c2.get()}) {
    EXPECT_FALSE(c->Read().ok());
    EXPECT_EQ(c->close_code(), 1001);
  }
  bool saw_not_serving = false;
  while (watch->Read(&hresp)) {
    if (hresp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING) saw_not_serving = true;
  }
  EXPECT_TRUE(saw_not_serving);
  auto code = node_->Stop(0);  // already signalled; just wait for the exit
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << node_->Stderr();
  // Clients that answer the close and a health watcher do not hold the
  // drain until its deadline.
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(60));
}

TEST_F(FanoutdLimitsTest, BadFlagsPrintOneLineAndExitNonZero) {
  auto p = FanoutdProcess::Start({"--max_topic_length=0"});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("max_topic_length"));
}

// --write_delay: a connection that has just been written to holds what follows
// for the delay and sends it together; one that has been quiet for longer
// than the delay is written to at once. The waits here are the flag's own
// time (what a user of it would see), not guesses at readiness.
TEST_F(FanoutdLimitsTest, WriteDelayHoldsMessagesToABusyClientButNotToAQuietOne) {
  // Long enough that a loaded machine (tests run in parallel, sanitizers)
  // does not stall between two steps for as long.
  Start({"--write_delay=2s"});
  auto c = ::fanout::testing::RawWs::Connect(node_->ws_address(), "/ws?topics=busy&format=raw");
  ASSERT_TRUE(c.ok()) << c.status();
  MustPublish("busy", "m0");
  auto f = (*c)->ReadFrame(absl::Seconds(5));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->payload, "m0");

  // m0 has just been written: what follows waits for the delay.
  for (const char* m : {"m1", "m2", "m3"}) MustPublish("busy", m);
  auto early = (*c)->ReadFrame(absl::Milliseconds(500));
  EXPECT_TRUE(absl::IsDeadlineExceeded(early.status()))
      << "m1 reached the client well inside --write_delay: " << early.status();
  for (const char* m : {"m1", "m2", "m3"}) {
    if (absl::IsDeadlineExceeded(early.status())) {
      f = (*c)->ReadFrame(absl::Seconds(5));
    } else {
      f = std::move(early);
      early = absl::DeadlineExceededError("");
    }
    ASSERT_TRUE(f.ok()) << m << ": " << f.status();
    EXPECT_EQ(f->payload, m);
  }

  // Quiet for longer than the delay: the next message is not held.
  absl::SleepFor(absl::Milliseconds(2200));
  MustPublish("busy", "m4");
  f = (*c)->ReadFrame(absl::Milliseconds(1500));
  ASSERT_TRUE(f.ok()) << "a client quiet for longer than --write_delay waited for it: " << f.status();
  EXPECT_EQ(f->payload, "m4");

  // m4 has just been written, so m5 is held; 16 KiB queued behind it end the wait.
  const std::string big(20000, 'b');
  MustPublish("busy", "m5");
  MustPublish("busy", big);
  f = (*c)->ReadFrame(absl::Milliseconds(1500));
  ASSERT_TRUE(f.ok()) << "a held message with 16 KiB queued behind it waited for --write_delay: "
                      << f.status();
  EXPECT_EQ(f->payload, "m5");
  f = (*c)->ReadFrame(absl::Milliseconds(1500));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->payload.size(), big.size());

  auto bad = FanoutdProcess::Start({"--write_delay=-5ms"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("write_delay"));
}

}  // namespace
}  // namespace fanout
