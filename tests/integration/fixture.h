#ifndef FANOUT_TESTS_INTEGRATION_FIXTURE_H_
#define FANOUT_TESTS_INTEGRATION_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <grpcpp/client_context.h>

#include "fanout/v1/fanout.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/fanoutd_process.h"
#include "tests/testing/ws_client.h"

namespace fanout {

using ::fanout::testing::FanoutdProcess;
using ::fanout::testing::WsClient;
namespace v1 = ::fanout::v1;

// Starts a real fanoutd per test and offers its clients.
inline boost::json::value Json(const std::string& s) { return boost::json::parse(s); }

class FanoutdTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(std::vector<std::string> args) {
    auto p = FanoutdProcess::Start(std::move(args));
    ASSERT_TRUE(p.ok()) << p.status();
    node_ = std::move(*p);
    stub_ = v1::Fanout::NewStub(node_->channel());
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
