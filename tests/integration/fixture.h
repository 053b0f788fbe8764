#ifndef FANOUT_TESTS_INTEGRATION_FIXTURE_H_
#define FANOUT_TESTS_INTEGRATION_FIXTURE_H_

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/resource.h>
#include <sys/socket.h>

#include <boost/json/parse.hpp>
#include <grpcpp/client_context.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/testing/raw_ws.h"

#include "fanout/v1/fanout.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fanoutd_process.h"
#include "tests/testing/ws_client.h"

namespace fanout {

using ::fanout::testing::FanoutdProcess;
using ::fanout::testing::WsClient;
namespace v1 = ::fanout::v1;

// A delivery's JSON envelope without its `"epoch":"..."` field, which differs
// from run to run, so that tests can compare envelopes exactly.
inline std::string WithoutEpoch(std::string envelope) {
  constexpr std::string_view kEpoch = R"(,"epoch":")";
  size_t at = envelope.find(kEpoch);
  if (at == std::string::npos) return envelope;
  size_t end = envelope.find('"', at + kEpoch.size());
  if (end != std::string::npos) envelope.erase(at, end + 1 - at);
  return envelope;
}

// Starts a real fanoutd per test and offers its clients.
inline boost::json::value Json(const std::string& s) { return boost::json::parse(s); }

// Polls `done` until it holds or `timeout` passes; returns whether it held.
// For states the node reaches on its own (a gauge coming down), where there
// is nothing to wait on but the state itself.
template <typename Pred>
bool WaitFor(Pred done, absl::Duration timeout = absl::Seconds(5)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Tests with thousands of sockets need more than the usual soft limit of
// open files; fanoutd, a child, inherits the raised limit.
inline void RaiseOpenFilesLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

class FanoutdTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  // Starts the node; a node that does not start ends the test (an exception
  // gtest reports), since nothing after it could run.
  void Start(std::vector<std::string> args) {
    auto p = FanoutdProcess::Start(std::move(args));
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      throw std::runtime_error("fanoutd did not start");
    }
    node_ = std::move(*p);
    stub_ = v1::Fanout::NewStub(node_->channel());
  }

  v1::GetStatsResponse Stats() {
    grpc::ClientContext ctx;
    v1::GetStatsResponse resp;
    grpc::Status s = stub_->GetStats(&ctx, v1::GetStatsRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // The node's /metrics text, fetched like a scraper would.
  std::string MetricsText() {
    auto c = ::fanout::testing::RawWs::ConnectTcp(node_->ws_address(), {});
    if (!c.ok()) return "";
    if (!(*c)->SendRaw("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()) return "";
    std::string text;
    char buf[65536];
    while (true) {
      ssize_t n = ::recv((*c)->fd(), buf, sizeof(buf), 0);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    return text;
  }

  // The value of one series line of /metrics (`name` with its labels, as
  // written), or -1 when absent.
  double Metric(const std::string& series) {
    for (absl::string_view line : absl::StrSplit(MetricsText(), '\n')) {
      if (line.size() > series.size() && line.substr(0, series.size()) == series &&
          line[series.size()] == ' ') {
        double v = -1;
        if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
      }
    }
    return -1;
  }

  std::unique_ptr<WsClient> Connect(const std::string& target) {
    auto c = WsClient::Connect(node_->ws_address(), target);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  grpc::Status Publish(const std::string& topic, const std::string& payload,
                       v1::PublishResponse* resp) {
    grpc::ClientContext ctx;
    v1::PublishRequest req;
    req.set_topic(topic);
    req.set_payload(payload);
    return stub_->Publish(&ctx, req, resp);
  }

  v1::PublishResponse MustPublish(const std::string& topic, const std::string& payload) {
    v1::PublishResponse resp;
    grpc::Status s = Publish(topic, payload, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  std::vector<std::string> ListSubscriberIds(const std::string& topic, int page_size) {
    std::vector<std::string> ids;
    std::string token;
    do {
      grpc::ClientContext ctx;
      v1::ListSubscribersRequest req;
      req.set_topic(topic);
      req.set_page_size(page_size);
      req.set_page_token(token);
      v1::ListSubscribersResponse resp;
      grpc::Status s = stub_->ListSubscribers(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      EXPECT_LE(resp.subscribers_size(), page_size);
      for (const auto& sub : resp.subscribers()) ids.push_back(sub.connection_id());
      token = resp.next_page_token();
    } while (!token.empty());
    return ids;
  }

  std::unique_ptr<FanoutdProcess> node_;
  std::unique_ptr<v1::Fanout::Stub> stub_;
};

}  // namespace fanout

#endif  // FANOUT_TESTS_INTEGRATION_FIXTURE_H_
