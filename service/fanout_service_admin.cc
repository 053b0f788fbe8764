// fanout.v1.Fanout: Disconnect, Subscribe, Unsubscribe, GetConnection — the
// calls that act on connections, which live on their I/O threads: each call
// posts to them and finishes when every targeted connection has answered.
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/mutex.h"
#include "service/fanout_service.h"
#include "service/rpc_util.h"

namespace fanout {
namespace {

constexpr uint32_t kDefaultDisconnectCode = 4000;

// Resolves a request's `connection_id` or `user` to open connections.
template <typename Request>
absl::StatusOr<std::vector<std::shared_ptr<Subscriber>>> Targets(Hub* hub, const Request& req) {
  if (req.target_case() == Request::TARGET_NOT_SET) {
    return absl::InvalidArgumentError("set connection_id or user");
  }
  if (req.target_case() == Request::kUser) {
    if (req.user().empty()) return absl::InvalidArgumentError("user is empty");
    auto conns = hub->FindUserConnections(req.user());
    if (conns.empty()) {
      return absl::NotFoundError(absl::StrCat("user '", req.user(), "' has no open connection"));
    }
    return conns;
  }
  if (req.connection_id().empty()) return absl::InvalidArgumentError("connection_id is empty");
  uint64_t id = 0;
  std::shared_ptr<Subscriber> conn;
  if (absl::SimpleAtoi(req.connection_id(), &id)) conn = hub->FindConnection(id);
  if (!conn) {
    return absl::NotFoundError(absl::StrCat("no open connection '", req.connection_id(), "'"));
  }
  return std::vector<std::shared_ptr<Subscriber>>{std::move(conn)};
}

// Counts answers from connections and finishes the call after the last.
// Thread: answers arrive on several I/O threads.
class Gather {
 public:
  Gather(grpc::CallbackServerContext* ctx, size_t expected, std::function<absl::Status()> finish)
      : reactor_(ctx->DefaultReactor()), left_(expected), finish_(std::move(finish)) {}
  grpc::ServerUnaryReactor* reactor() const { return reactor_; }
  // Records one answer; the last one finishes the call and frees this.
  void Done() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      reactor_->Finish(ToGrpcStatus(finish_()));
      delete this;
    }
  }
  Mutex mu;

 private:
  grpc::ServerUnaryReactor* const reactor_;
  std::atomic<size_t> left_;
  std::function<absl::Status()> finish_;
};

}  // namespace

grpc::ServerUnaryReactor* FanoutServiceImpl::Disconnect(grpc::CallbackServerContext* ctx,
                                                        const v1::DisconnectRequest* req,
                                                        v1::DisconnectResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  uint32_t code = req->code() == 0 ? kDefaultDisconnectCode : req->code();
  if (code != 1000 && (code < 3000 || code > 4999)) {
    return Finish(ctx, absl::InvalidArgumentError("code must be 1000 or 3000-4999"));
  }
  if (req->reason().size() > 123) {
    return Finish(ctx, absl::InvalidArgumentError("reason is longer than 123 bytes"));
  }
  auto targets = Targets(hub_, *req);
  if (!targets.ok()) return Finish(ctx, targets.status());
  for (const auto& conn : *targets) conn->Close(static_cast<uint16_t>(code), req->reason());
  resp->set_connections(targets->size());
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Subscribe(grpc::CallbackServerContext* ctx,
                                                       const v1::SubscribeRequest* req,
                                                       v1::SubscribeResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  auto targets = Targets(hub_, *req);
  if (!targets.ok()) return Finish(ctx, targets.status());
  auto subscribed = std::make_shared<std::atomic<uint64_t>>(0);
  auto first_error = std::make_shared<absl::Status>();
  auto* gather = new Gather(ctx, targets->size(), [resp, subscribed, first_error] {
    resp->set_connections(subscribed->load());
    return *first_error;
  });
  grpc::ServerUnaryReactor* reactor = gather->reactor();
  for (const auto& conn : *targets) {
    conn->Subscribe(req->topic(), [gather, subscribed, first_error](absl::Status s) {
      if (s.ok()) {
        subscribed->fetch_add(1);
      } else {
        MutexLock lock(&gather->mu);
        // A connection that closed meanwhile is not an error for a user-wide call.
        if (first_error->ok() && !absl::IsNotFound(s)) *first_error = s;
      }
      gather->Done();
    });
  }
  return reactor;
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Unsubscribe(grpc::CallbackServerContext* ctx,
                                                         const v1::UnsubscribeRequest* req,
                                                         v1::UnsubscribeResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  auto targets = Targets(hub_, *req);
  if (!targets.ok()) return Finish(ctx, targets.status());
  auto removed = std::make_shared<std::atomic<uint64_t>>(0);
  auto* gather = new Gather(ctx, targets->size(), [resp, removed] {
    resp->set_connections(removed->load());
    return absl::OkStatus();
  });
  grpc::ServerUnaryReactor* reactor = gather->reactor();
  for (const auto& conn : *targets) {
    conn->Unsubscribe(req->topic(), [gather, removed](bool was_on) {
      if (was_on) removed->fetch_add(1);
      gather->Done();
    });
  }
  return reactor;
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GetConnection(grpc::CallbackServerContext* ctx,
                                                           const v1::GetConnectionRequest* req,
                                                           v1::Connection* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (req->connection_id().empty()) {
    return Finish(ctx, absl::InvalidArgumentError("connection_id is empty"));
  }
  uint64_t id = 0;
  std::shared_ptr<Subscriber> conn;
  if (absl::SimpleAtoi(req->connection_id(), &id)) conn = hub_->FindConnection(id);
  if (!conn) {
    return Finish(ctx, absl::NotFoundError(
                           absl::StrCat("no open connection '", req->connection_id(), "'")));
  }
  const Subscriber::Identity& identity = conn->identity();
  resp->set_connection_id(absl::StrCat(identity.id));
  resp->set_remote_address(identity.remote_address);
  resp->set_user(conn->user());
  SetTimestamp(identity.connected_at, resp->mutable_connected_at());
  resp->set_format(identity.format == DeliveryFormat::kRaw ? "raw" : "json");
  auto* reactor = ctx->DefaultReactor();
  conn->Describe([reactor, resp](Subscriber::State state) {
    if (!state.open) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "connection closed"));
      return;
    }
    for (auto& t : state.topics) resp->add_topics(std::move(t));
    resp->set_queued_bytes(state.queued_bytes);
    resp->set_messages_sent(state.messages_sent);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace fanout
