// Nothing a client or a publisher does can leak, balloon or stall the node:
// one regression test per defect of the reliability issue, and every way a
// connection can end, against the real fanoutd.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpc/grpc.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "fanout/v1/fanout.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/fixture.h"
#include "tests/testing/raw_ws.h"

namespace fanout {
namespace {

using ::fanout::testing::RawWs;
using ::testing::HasSubstr;

constexpr uint8_t kClose = 8;

class ReliabilityTest : public FanoutdTest {
 protected:
  void SetUp() override { RaiseOpenFilesLimit(); }

  std::unique_ptr<RawWs> Raw(const std::string& target, int receive_buffer = 0) {
    RawWs::Options o;
    o.receive_buffer = receive_buffer;
    auto c = RawWs::Connect(node_->ws_address(), target, o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Waits until no connection is registered or subscribed, and no socket is
  // left in a close handshake.
  bool WaitForNoConnections(absl::Duration timeout) {
    return WaitFor(
        [&] {
          auto s = Stats();
          return s.connections() == 0 && s.subscriptions() == 0 && s.topics() == 0;
        },
        timeout);
  }
};

// Defect 1: a client that sends a close frame and then resets the TCP
// connection was never cleaned up, and such clients filled --max_connections.
TEST_F(ReliabilityTest, CloseThenResetIsCleanedUpAndDoesNotFillTheNode) {
  Start({"--max_connections=50"});
  for (int i = 0; i < 200; ++i) {
    auto c = Raw("/ws?topics=t");
    ASSERT_TRUE(c) << "client " << i << " refused: leaked sessions fill --max_connections";
    ASSERT_TRUE(c->SendClose(1000).ok());
    c->Reset();
  }
  EXPECT_TRUE(WaitForNoConnections(absl::Seconds(2)))
      << "connections: " << Stats().connections();
  EXPECT_TRUE(WaitFor([&] { return Metric("fanout_connections_closing") == 0; }));
  auto ok = Connect("/ws?topics=t");
  ASSERT_TRUE(ok);
  EXPECT_EQ(MustPublish("t", "x").subscribers(), 1u);
}

// Every way a connection can end removes it from the registry, the gauges
// and ListSubscribers within a second.
enum class Ending {
  kClientClose,
  kCloseThenReset,
  kReset,
  kHalfClose,
  kIdleTimeout,
  kDisconnect,
  kSlowConsumer,
};

std::string EndingName(const ::testing::TestParamInfo<Ending>& info) {
  switch (info.param) {
    case Ending::kClientClose: return "ClientClose";
    case Ending::kCloseThenReset: return "CloseThenReset";
    case Ending::kReset: return "Reset";
    case Ending::kHalfClose: return "HalfClose";
    case Ending::kIdleTimeout: return "IdleTimeout";
    case Ending::kDisconnect: return "Disconnect";
    case Ending::kSlowConsumer: return "SlowConsumer";
  }
  return "?";
}

class EndingTest : public ReliabilityTest, public ::testing::WithParamInterface<Ending> {};

TEST_P(EndingTest, LeavesTheRegistryAndGaugesWithinASecond) {
  const Ending ending = GetParam();
  std::vector<std::string> args = {"--max_outbound_queue_bytes=65536",
                                   "--max_payload_bytes=32768"};
  if (ending == Ending::kIdleTimeout) args.push_back("--idle_timeout=1s");
  Start(args);
  constexpr int kClients = 20;
  std::vector<std::unique_ptr<RawWs>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(Raw("/ws?topics=end", /*receive_buffer=*/4096));
    ASSERT_TRUE(clients.back());
  }
  ASSERT_EQ(ListSubscriberIds("end", 100).size(), static_cast<size_t>(kClients));

  absl::Duration allowed = absl::Seconds(1);
  switch (ending) {
    case Ending::kClientClose:
      for (auto& c : clients) ASSERT_TRUE(c->SendClose(1000).ok());
      break;
    case Ending::kCloseThenReset:
      for (auto& c : clients) {
        ASSERT_TRUE(c->SendClose(1000).ok());
        c->Reset();
      }
      break;
    case Ending::kReset:
      for (auto& c : clients) c->Reset();
      break;
    case Ending::kHalfClose:
      for (auto& c : clients) c->ShutdownWrite();
      break;
    case Ending::kIdleTimeout:
      // Nothing to do: the clients answer no ping. Ping at 0.5 s, close at 1 s.
      allowed = absl::Seconds(2);
      break;
    case Ending::kDisconnect:
      for (const auto& id : ListSubscriberIds("end", 100)) {
        grpc::ClientContext ctx;
        v1::DisconnectRequest req;
        req.set_connection_id(id);
        v1::DisconnectResponse resp;
        ASSERT_TRUE(stub_->Disconnect(&ctx, req, &resp).ok());
      }
      break;
    case Ending::kSlowConsumer: {
      // The clients never read: a few 16 KiB messages overflow their queues.
      const std::string payload(16384, 's');
      for (int i = 0; i < 300 && Stats().slow_client_disconnects() < kClients; ++i) {
        v1::PublishResponse resp;
        ASSERT_TRUE(Publish("end", payload, &resp).ok());
      }
      ASSERT_EQ(Stats().slow_client_disconnects(), static_cast<uint64_t>(kClients));
      break;
    }
  }
  absl::Time start = absl::Now();
  EXPECT_TRUE(WaitForNoConnections(allowed))
      << "after " << (absl::Now() - start) << ": connections " << Stats().connections();
  EXPECT_TRUE(ListSubscriberIds("end", 100).empty());
  EXPECT_EQ(Metric("fanout_connections"), 0);
  if (ending == Ending::kDisconnect) {
    // Like any client library: answer the server's close frame.
    for (auto& c : clients) {
      absl::StatusOr<RawWs::Frame> f;
      do {
        f = c->ReadFrame();
        ASSERT_TRUE(f.ok()) << f.status();
      } while (f->opcode != kClose);
      EXPECT_EQ(f->close_code(), 4000);
      ASSERT_TRUE(c->SendClose(4000).ok());
    }
  }
  if (ending == Ending::kSlowConsumer) {
    // Defect 8: it left the registry at the cut-off, while its close
    // handshake is still waiting for a client that does not read.
    EXPECT_EQ(Metric("fanout_connections_closing"), kClients);
  } else {
    EXPECT_TRUE(WaitFor([&] { return Metric("fanout_connections_closing") == 0; },
                        absl::Seconds(2)));
  }
  // The node still serves.
  auto after = Connect("/ws?topics=after");
  ASSERT_TRUE(after);
  MustPublish("after", "ok");
  EXPECT_TRUE(after->Read().ok());
}

// The other side of the idle timeout: a client that sends nothing but
// answers the node's pings stays connected for as long as it likes.
TEST_F(ReliabilityTest, AClientThatAnswersPingsIsNeverIdle) {
  Start({"--idle_timeout=1s"});
  auto c = Raw("/ws?topics=quiet");
  ASSERT_TRUE(c);
  int pings = 0;
  absl::Time until = absl::Now() + absl::Milliseconds(3500);
  while (absl::Now() < until) {
    auto f = c->ReadFrame(until - absl::Now());
    if (!f.ok()) {
      ASSERT_EQ(f.status().code(), absl::StatusCode::kDeadlineExceeded) << f.status();
      break;
    }
    ASSERT_EQ(f->opcode, 9) << "closed: " << f->close_code() << " " << f->close_reason();
    ++pings;
    ASSERT_TRUE(c->SendFrame(10, f->payload).ok());
  }
  EXPECT_GE(pings, 4) << "a ping every half second";
  EXPECT_EQ(Stats().connections(), 1u);
  MustPublish("quiet", "still here");
  auto f = c->ReadFrame();
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->opcode, 1);
}

INSTANTIATE_TEST_SUITE_P(EveryEnding, EndingTest,
                         ::testing::Values(Ending::kClientClose, Ending::kCloseThenReset,
                                           Ending::kReset, Ending::kHalfClose,
                                           Ending::kIdleTimeout, Ending::kDisconnect,
                                           Ending::kSlowConsumer),
                         EndingName);

// Defect 3: after a client's own close, deliveries were still queued behind
// the close frame, and a Disconnect (or SIGTERM) in that window started a
// second close. One close frame per direction, never data after ours.
TEST_F(ReliabilityTest, ClientCloseRacingDisconnectAndPublishesGivesOneCloseAndNoDataAfterIt) {
  Start({});
  constexpr int kClients = 100;
  std::vector<std::unique_ptr<RawWs>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(Raw("/ws?topics=race"));
    ASSERT_TRUE(clients.back());
  }
  std::vector<std::string> ids = ListSubscriberIds("race", 100);  // in connection order
  ASSERT_EQ(ids.size(), static_cast<size_t>(kClients));
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    while (!stop) {
      v1::PublishResponse resp;
      Publish("race", "data", &resp).IgnoreError();
    }
  });
  ASSERT_TRUE(WaitFor([&] { return Stats().messages_out() > 0; }));  // deliveries flow
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i]->SendClose(4100).ok());
    grpc::ClientContext ctx;
    v1::DisconnectRequest req;
    req.set_connection_id(ids[static_cast<size_t>(i)]);
    req.set_code(4200);
    v1::DisconnectResponse resp;
    stub_->Disconnect(&ctx, req, &resp).IgnoreError();  // NOT_FOUND once it left: fine
  }
  for (int i = 0; i < kClients; ++i) {
    RawWs::Rest rest = clients[i]->ReadUntilEnd();
    int closes = 0;
    bool data_after_close = false;
    for (const auto& f : rest.frames) {
      if (f.opcode == kClose) {
        ++closes;
      } else if (closes > 0) {
        data_after_close = true;
      }
    }
    EXPECT_EQ(closes, 1) << "client " << i;
    EXPECT_FALSE(data_after_close) << "client " << i;
    EXPECT_EQ(rest.end.code(), absl::StatusCode::kOutOfRange) << rest.end;
  }
  stop = true;
  publisher.join();
  EXPECT_TRUE(WaitForNoConnections(absl::Seconds(1)));
}

TEST_F(ReliabilityTest, SigtermRacingClientClosesGivesOneCloseEachAndExitsZero) {
  Start({});
  constexpr int kClients = 40;
  std::vector<std::unique_ptr<RawWs>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(Raw("/ws?topics=race"));
    ASSERT_TRUE(clients.back());
  }
  for (int i = 0; i < kClients / 2; ++i) ASSERT_TRUE(clients[i]->SendClose(1000).ok());
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  for (int i = kClients / 2; i < kClients; ++i) clients[i]->SendClose(1000).IgnoreError();
  for (int i = 0; i < kClients; ++i) {
    RawWs::Rest rest = clients[i]->ReadUntilEnd();
    int closes = 0;
    for (const auto& f : rest.frames) closes += f.opcode == kClose;
    EXPECT_EQ(closes, 1) << "client " << i;
  }
  auto code = node_->Stop(SIGTERM, absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// Defect 4: pongs bypassed --max_outbound_queue_bytes, so a client that
// floods pings and never reads made the node queue without limit. Now the
// node owes one pong at a time, and pings count against the message rate.
TEST_F(ReliabilityTest, PingFloodFromAClientThatNeverReadsIsBoundedAndClosed) {
  Start({"--client_messages_per_second=1000", "--client_message_burst=1000"});
  auto flooder = Raw("/ws", /*receive_buffer=*/4096);
  ASSERT_TRUE(flooder);
  auto witness = Connect("/ws?topics=w");
  ASSERT_TRUE(witness);
  auto rss_before = node_->RssBytes();
  ASSERT_TRUE(rss_before.ok());
  const std::string ping = RawWs::BuildFrame(9, std::string(125, 'p'));
  std::string burst;
  for (int i = 0; i < 900; ++i) burst += ping;
  // Within the burst allowance: the node answers and holds at most one pong.
  ASSERT_TRUE(flooder->SendRaw(burst).ok());
  ASSERT_TRUE(WaitFor([&] { return Stats().connections() == 2; }));
  grpc::ClientContext ctx;
  v1::GetConnectionRequest req;
  req.set_connection_id("1");
  v1::Connection conn;
  ASSERT_TRUE(stub_->GetConnection(&ctx, req, &conn).ok());
  EXPECT_LE(conn.queued_bytes(), 127u) << "pongs pile up for a client that does not read";
  // Past it: closed for the rate, like any flood.
  for (int i = 0; i < 20 && Stats().connections() == 2; ++i) {
    if (!flooder->SendRaw(burst, absl::Seconds(5)).ok()) break;
  }
  EXPECT_TRUE(WaitFor([&] { return Stats().connections() == 1; }));  // the witness
  EXPECT_EQ(Metric("fanout_rate_limit_disconnects_total"), 1);
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  auto rss_after = node_->RssBytes();
  ASSERT_TRUE(rss_after.ok());
  EXPECT_LT(static_cast<int64_t>(*rss_after) - static_cast<int64_t>(*rss_before), 8 << 20);
#endif
  MustPublish("w", "still served");
  auto f = witness->Read();
  ASSERT_TRUE(f.ok());
  EXPECT_THAT(f->data, HasSubstr("still served"));
}

// Defect 2: a publisher that outruns delivery grew memory without bound and
// every call was answered OK. Now the publisher is told (RESOURCE_EXHAUSTED),
// memory stays bounded, the node stays responsive, subscribers that read are
// not cut off, and everything accepted is delivered.
TEST_F(ReliabilityTest, PublisherThatOutrunsDeliveryIsToldAndNothingAcceptedIsLost) {
  Start({"--io_threads=1", "--max_pending_publish_bytes=4194304"});
  constexpr int kSubscribers = 1500;
  std::vector<std::unique_ptr<RawWs>> subs;
  for (int i = 0; i < kSubscribers; ++i) {
    subs.push_back(Raw("/ws?topics=flood&format=raw"));
    ASSERT_TRUE(subs.back());
  }
  auto rss_before = node_->RssBytes();
  ASSERT_TRUE(rss_before.ok());

  // Readers: one thread polls every subscriber and counts data frames.
  std::atomic<bool> publishing{true};
  std::vector<int64_t> received(kSubscribers, 0);
  std::vector<int> close_codes(kSubscribers, 0);
  std::atomic<int64_t> accepted{0};
  std::thread reader([&] {
    std::vector<RawWs::Frame> frames;
    while (true) {
      int64_t total = 0;
      for (int i = 0; i < kSubscribers; ++i) {
        frames.clear();
        subs[i]->ReadAvailable(&frames);
        for (const auto& f : frames) {
          if (f.opcode == kClose) close_codes[i] = f.close_code();
          if (f.opcode == 1 || f.opcode == 2) ++received[i];  // not the node's pings
        }
        total += received[i];
      }
      if (!publishing && total == accepted.load() * kSubscribers) break;
    }
  });

  std::atomic<int64_t> rejected{0}, other_errors{0};
  std::atomic<int64_t> worst_health_ms{0};
  std::vector<std::thread> publishers;
  absl::Time until = absl::Now() + absl::Seconds(3);
  for (int p = 0; p < 4; ++p) {
    publishers.emplace_back([&] {
      auto stub = v1::Fanout::NewStub(node_->channel());
      while (absl::Now() < until) {
        grpc::ClientContext ctx;
        v1::PublishRequest req;
        req.set_topic("flood");
        req.set_payload(std::string(64, 'x'));
        v1::PublishResponse resp;
        grpc::Status s = stub->Publish(&ctx, req, &resp);
        if (s.ok()) {
          accepted.fetch_add(1);
        } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          EXPECT_THAT(s.error_message(), HasSubstr("overloaded"));
          rejected.fetch_add(1);
        } else {
          other_errors.fetch_add(1);
        }
      }
    });
  }
  // Health answers quickly throughout.
  std::thread health([&] {
    auto stub = grpc::health::v1::Health::NewStub(node_->channel());
    while (absl::Now() < until) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      absl::Time t0 = absl::Now();
      EXPECT_TRUE(stub->Check(&ctx, req, &resp).ok());
      int64_t ms = absl::ToInt64Milliseconds(absl::Now() - t0);
      if (ms > worst_health_ms) worst_health_ms = ms;
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  for (auto& t : publishers) t.join();
  health.join();
  auto rss_peak = node_->RssBytes();
  publishing = false;
  reader.join();

  EXPECT_GT(rejected.load(), 0) << "accepted " << accepted << ": the node was never overloaded";
  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_LT(worst_health_ms.load(), 1000);
  EXPECT_EQ(Metric("fanout_publish_rejected_total{reason=\"overloaded\"}"), rejected.load());
  EXPECT_EQ(Stats().slow_client_disconnects(), 0u) << "readers that keep up were cut off";
  for (int i = 0; i < kSubscribers; ++i) {
    ASSERT_EQ(received[i], accepted.load()) << "subscriber " << i;
    ASSERT_EQ(close_codes[i], 0);
  }
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  ASSERT_TRUE(rss_peak.ok());
  // 4 MiB of pending deliveries, with room for allocator slack.
  EXPECT_LT(static_cast<int64_t>(*rss_peak) - static_cast<int64_t>(*rss_before), 64 << 20);
#endif
  EXPECT_TRUE(WaitFor([&] { return Metric("fanout_pending_publish_bytes") == 0; }));
}

// PublishStream is slowed, not failed: every message of a fast stream is
// accepted and delivered, however far it outruns delivery.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kSanitizerSlowdown = 5;  // the same story, smaller: sanitizers are slow
#else
constexpr int kSanitizerSlowdown = 1;
#endif

TEST_F(ReliabilityTest, PublishStreamIsSlowedNotFailedWhenTheNodeIsOverloaded) {
  Start({"--io_threads=1", "--max_pending_publish_bytes=1048576"});
  constexpr int kSubscribers = 500 / kSanitizerSlowdown;
  constexpr int kMessages = 5000 / kSanitizerSlowdown;
  std::vector<std::unique_ptr<RawWs>> subs;
  for (int i = 0; i < kSubscribers; ++i) {
    subs.push_back(Raw("/ws?topics=stream&format=raw"));
    ASSERT_TRUE(subs.back());
  }
  std::vector<int64_t> received(kSubscribers, 0);
  std::thread reader([&] {
    std::vector<RawWs::Frame> frames;
    int64_t total = 0;
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (total < int64_t{kMessages} * kSubscribers && absl::Now() < deadline) {
      total = 0;
      for (int i = 0; i < kSubscribers; ++i) {
        frames.clear();
        subs[i]->ReadAvailable(&frames);
        for (const auto& f : frames) received[i] += f.opcode == 1 || f.opcode == 2;
        total += received[i];
      }
    }
  });
  grpc::ClientContext ctx;
  auto stream = stub_->PublishStream(&ctx);
  std::thread writer([&] {
    v1::PublishRequest req;
    req.set_topic("stream");
    req.set_payload(std::string(256, 'y'));
    for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(stream->Write(req));
    stream->WritesDone();
  });
  int ok = 0, failed = 0;
  v1::PublishResult result;
  while (stream->Read(&result)) (result.code() == 0 ? ok : failed)++;
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ok, kMessages);
  EXPECT_EQ(failed, 0);
  reader.join();
  for (int i = 0; i < kSubscribers; ++i) ASSERT_EQ(received[i], kMessages) << "subscriber " << i;
  EXPECT_EQ(Metric("fanout_publish_rejected_total{reason=\"overloaded\"}"), 0);
}

// Defect 5a: a cancelled watcher lingered until the next matching publish.
TEST_F(ReliabilityTest, CancelledWatchIsReleasedAtOnce) {
  Start({});
  grpc::ClientContext ctx;
  v1::WatchRequest req;
  req.set_topic("quiet");
  auto reader = stub_->Watch(&ctx, req);
  reader->WaitForInitialMetadata();
  ASSERT_TRUE(WaitFor([&] { return Metric("fanout_watchers") == 1; }));
  ctx.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return Metric("fanout_watchers") == 0; }, absl::Seconds(1)))
      << "no publish to the topic should be needed to let it go";
}

// Defect 5b: a Watch opened during shutdown escaped the shutdown notice and
// could keep the process alive.
TEST_F(ReliabilityTest, WatchOpenedDuringShutdownEndsAtOnce) {
  Start({"--drain_timeout=3s"});
  // A client that never answers our close keeps the drain going for 3 s.
  auto stalled = Raw("/ws", /*receive_buffer=*/4096);
  ASSERT_TRUE(stalled);
  auto health = grpc::health::v1::Health::NewStub(node_->channel());
  ASSERT_EQ(kill(node_->pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor([&] {
    grpc::ClientContext c;
    grpc::health::v1::HealthCheckRequest r;
    grpc::health::v1::HealthCheckResponse resp;
    return health->Check(&c, r, &resp).ok() &&
           resp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
  }));
  absl::Time t0 = absl::Now();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::WatchRequest req;
  req.set_prefix("");
  auto reader = stub_->Watch(&ctx, req);
  v1::WatchEvent e;
  while (reader->Read(&e)) {
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  auto code = node_->Stop(SIGTERM, absl::Seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// Defect 5c: the watcher queue bounded payload bytes only, so empty
// payloads queued without limit.
TEST_F(ReliabilityTest, WatcherThatDoesNotReadIsCutOffEvenForEmptyPayloads) {
  Start({"--max_watch_queue_messages=500"});
  // A client that does not read: its HTTP/2 window stays at 16 KiB (no
  // window growth by bandwidth probing), so what the node cannot write waits
  // in the watcher's queue. With the default channel, gRPC's client may
  // accept the whole flood into its own buffers when the node is slow (as in
  // sanitizer builds), and nothing would ever be cut off.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 * 1024);
  auto watch_stub = v1::Fanout::NewStub(
      grpc::CreateCustomChannel(node_->grpc_address(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::WatchRequest req;
  req.set_topic("empty");
  auto reader = watch_stub->Watch(&ctx, req);
  reader->WaitForInitialMetadata();
  ASSERT_TRUE(WaitFor([&] { return Metric("fanout_watchers") == 1; }));
  // 50,000 empty payloads while the watcher reads nothing.
  for (int b = 0; b < 50; ++b) {
    grpc::ClientContext c;
    v1::PublishBatchRequest batch;
    for (int i = 0; i < 1000; ++i) batch.add_messages()->set_topic("empty");
    v1::PublishBatchResponse resp;
    ASSERT_TRUE(stub_->PublishBatch(&c, batch, &resp).ok());
  }
  int events = 0;
  v1::WatchEvent e;
  while (reader->Read(&e)) ++events;
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_LT(events, 50000);
  EXPECT_TRUE(WaitFor([&] { return Metric("fanout_watchers") == 0; }));
}

// Defect 6: the default outbound queue equalled the payload limit, so a
// maximum-size binary payload to a JSON client (base64 is 4/3 larger) could
// cut off a client that reads well. Defaults now fit, and a configuration
// that cannot fit its largest frame is refused at start-up.
TEST_F(ReliabilityTest, MaximumSizeBinaryPayloadsReachAJsonClientWithDefaults) {
  Start({});
  // A client on an ordinary link (Ethernet segments, a small receive buffer)
  // that reads steadily.
  RawWs::Options link;
  link.receive_buffer = 8192;
  link.max_segment = 1460;
  auto connected = RawWs::Connect(node_->ws_address(), "/ws?topics=big", link);
  ASSERT_TRUE(connected.ok()) << connected.status();
  auto json = std::move(*connected);
  std::string payload(1 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(0x80 | (i * 7));
  MustPublish("big", payload);
  MustPublish("big", payload);
  for (int i = 0; i < 2; ++i) {
    auto f = json->ReadFrame(absl::Seconds(30));
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ(f->opcode, 1) << "close " << f->close_code() << " " << f->close_reason();
    EXPECT_THAT(f->payload.substr(0, 80), HasSubstr(R"("b64":")"));
    EXPECT_GT(f->payload.size(), 4 * (payload.size() / 3));
  }
  EXPECT_EQ(Stats().slow_client_disconnects(), 0u);
}

TEST_F(ReliabilityTest, AQueueThatCannotHoldTheLargestFrameIsRefusedAtStartUp) {
  auto p = ::fanout::testing::FanoutdProcess::Start({"--max_outbound_queue_bytes=1048576"});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("--max_outbound_queue_bytes=1048576 cannot hold the largest frame"));
}

// Defect 7: sockets that never finish their handshake were counted nowhere
// and each held for --handshake_timeout. Now they are bounded, the oldest
// dropped to make room, and real clients still get in.
TEST_F(ReliabilityTest, HalfSentHandshakesAreBoundedAndTheOldestDropped) {
  Start({"--max_pending_handshakes=100"});
  std::vector<std::unique_ptr<RawWs>> stalled;
  for (int i = 0; i < 1000; ++i) {
    auto c = RawWs::ConnectTcp(node_->ws_address(), {});
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE((*c)->SendRaw("GET /ws?topics=x HTTP/1.1\r\nHost: x\r\n").ok());
    stalled.push_back(std::move(*c));
  }
  ASSERT_TRUE(WaitFor([&] { return Metric("fanout_handshakes_dropped_total") >= 900; }))
      << Metric("fanout_handshakes_dropped_total");
  // The scrape itself is one more handshake in progress.
  EXPECT_LE(Metric("fanout_handshakes_in_progress"), 101);
  // The first ones were dropped: their sockets are closed.
  auto end = stalled.front()->ReadFrame(absl::Seconds(5));
  EXPECT_FALSE(end.ok());
  EXPECT_NE(end.status().code(), absl::StatusCode::kDeadlineExceeded) << end.status();
  auto real = Connect("/ws?topics=real");
  ASSERT_TRUE(real);
  MustPublish("real", "in");
  EXPECT_TRUE(real->Read().ok());
}

TEST_F(ReliabilityTest, HandshakesThatTimeOutAreDroppedAndCounted) {
  Start({"--handshake_timeout=300ms"});
  auto c = RawWs::ConnectTcp(node_->ws_address(), {});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->SendRaw("GET /ws HTTP/1.1\r\n").ok());
  auto end = (*c)->ReadFrame(absl::Seconds(5));
  EXPECT_EQ(end.status().code(), absl::StatusCode::kOutOfRange) << end.status();
  EXPECT_EQ(Metric("fanout_handshake_timeouts_total"), 1);
}

TEST_F(ReliabilityTest, ConnectionsPerAddressAreLimitedWhenAsked) {
  Start({"--max_connections_per_ip=3"});
  std::vector<std::unique_ptr<RawWs>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(Raw("/ws"));
    ASSERT_TRUE(held.back());
  }
  auto fourth = RawWs::Connect(node_->ws_address(), "/ws");
  ASSERT_FALSE(fourth.ok());
  EXPECT_THAT(std::string(fourth.status().message()), HasSubstr("429"));
  EXPECT_THAT(std::string(fourth.status().message()),
              HasSubstr("too many connections from 127.0.0.1"));
  EXPECT_EQ(Metric("fanout_connections_rejected_total{reason=\"too_many_per_address\"}"), 1);
  held[0]->Reset();
  EXPECT_TRUE(WaitFor([&] {
    auto again = RawWs::Connect(node_->ws_address(), "/ws");
    return again.ok();
  }));
}

TEST_F(ReliabilityTest, TheNodesTopicLimitRefusesNewTopicsEverywhere) {
  Start({"--max_topics=2"});
  auto a = Connect("/ws?topics=t1,t2");
  ASSERT_TRUE(a);
  auto refused = RawWs::Connect(node_->ws_address(), "/ws?topics=t3");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("503"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("limit of 2 topics"));
  auto reply = a->Request(R"({"op":"subscribe","topic":"t4","id":1})");
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(Json(*reply).at("error").at("code").as_string(), "too_many_topics");
  auto b = Connect("/ws?topics=t1");  // an existing topic is fine
  ASSERT_TRUE(b);
  EXPECT_EQ(MustPublish("t1", "x").subscribers(), 2u);
}

// A SIGTERM ends with exit 0 within the drain deadline plus a few seconds,
// whatever is connected or streaming.
TEST_F(ReliabilityTest, SigtermExitsZeroWhateverIsConnectedOrStreaming) {
  Start({"--drain_timeout=2s"});
  auto stalled_reader = Raw("/ws?topics=s", /*receive_buffer=*/4096);
  ASSERT_TRUE(stalled_reader);
  std::vector<std::unique_ptr<RawWs>> half_open;
  for (int i = 0; i < 20; ++i) {
    auto c = RawWs::ConnectTcp(node_->ws_address(), {});
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->SendRaw("GET /ws HTTP/1.1\r\n").ok());
    half_open.push_back(std::move(*c));
  }
  grpc::ClientContext watch_ctx;
  v1::WatchRequest watch_req;
  auto watch = stub_->Watch(&watch_ctx, watch_req);  // never read
  watch->WaitForInitialMetadata();
  grpc::ClientContext stream_ctx;
  auto stream = stub_->PublishStream(&stream_ctx);  // idle
  for (int i = 0; i < 100; ++i) MustPublish("s", std::string(1000, 'z'));
  absl::Time t0 = absl::Now();
  auto code = node_->Stop(SIGTERM, absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2 + 3));
}

}  // namespace
}  // namespace fanout
