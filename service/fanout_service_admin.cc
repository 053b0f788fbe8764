// fanout.v1.Fanout: Disconnect, Subscribe, Unsubscribe, GetConnection — the
// calls that act on connections, which live on their I/O threads: each call
// posts to them and finishes when every targeted connection has answered.
#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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

// Counts answers from connections and runs `finish` after the last.
// Thread: answers arrive on several I/O threads.
class Countdown {
 public:
  Countdown(size_t expected, std::function<void()> finish)
      : left_(expected), finish_(std::move(finish)) {}
  // Records one answer; the last one finishes and frees this.
  void Done() {
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      finish_();
      delete this;
    }
  }
  Mutex mu;

 private:
  std::atomic<size_t> left_;
  std::function<void()> finish_;
};

template <typename Request>
absl::Status CheckTarget(const Request& req) {
  if (req.target_case() == Request::TARGET_NOT_SET) {
    return absl::InvalidArgumentError("set connection_id or user");
  }
  if (req.target_case() == Request::kUser && req.user().empty()) {
    return absl::InvalidArgumentError("user is empty");
  }
  if (req.target_case() == Request::kConnectionId && req.connection_id().empty()) {
    return absl::InvalidArgumentError("connection_id is empty");
  }
  return absl::OkStatus();
}

}  // namespace

// ----------------------------------------------------------- local actions

void FanoutServiceImpl::LocalDisconnect(const v1::DisconnectRequest& req,
                                        AdminDone<v1::DisconnectResponse> done) {
  auto targets = Targets(hub_, req);
  v1::DisconnectResponse resp;
  if (!targets.ok()) return done(targets.status(), resp);
  uint32_t code = req.code() == 0 ? kDefaultDisconnectCode : req.code();
  for (const auto& conn : *targets) conn->Close(static_cast<uint16_t>(code), req.reason());
  resp.set_connections(targets->size());
  done(absl::OkStatus(), resp);
}

void FanoutServiceImpl::LocalSubscribe(const v1::SubscribeRequest& req,
                                       AdminDone<v1::SubscribeResponse> done) {
  auto targets = Targets(hub_, req);
  if (!targets.ok()) return done(targets.status(), {});
  auto subscribed = std::make_shared<std::atomic<uint64_t>>(0);
  auto first_error = std::make_shared<absl::Status>();
  auto* countdown = new Countdown(targets->size(), [done, subscribed, first_error] {
    v1::SubscribeResponse resp;
    resp.set_connections(subscribed->load());
    done(*first_error, resp);
  });
  for (const auto& conn : *targets) {
    conn->Subscribe(req.topic(), [countdown, subscribed, first_error](absl::Status s) {
      if (s.ok()) {
        subscribed->fetch_add(1);
      } else {
        MutexLock lock(&countdown->mu);
        // A connection that closed meanwhile is not an error for a user-wide call.
        if (first_error->ok() && !absl::IsNotFound(s)) *first_error = s;
      }
      countdown->Done();
    });
  }
}

void FanoutServiceImpl::LocalUnsubscribe(const v1::UnsubscribeRequest& req,
                                         AdminDone<v1::UnsubscribeResponse> done) {
  auto targets = Targets(hub_, req);
  if (!targets.ok()) return done(targets.status(), {});
  auto removed = std::make_shared<std::atomic<uint64_t>>(0);
  auto* countdown = new Countdown(targets->size(), [done, removed] {
    v1::UnsubscribeResponse resp;
    resp.set_connections(removed->load());
    done(absl::OkStatus(), resp);
  });
  for (const auto& conn : *targets) {
    conn->Unsubscribe(req.topic(), [countdown, removed](bool was_on) {
      if (was_on) removed->fetch_add(1);
      countdown->Done();
    });
  }
}

void FanoutServiceImpl::LocalGetConnection(const v1::GetConnectionRequest& req,
                                           AdminDone<v1::Connection> done) {
  uint64_t id = 0;
  std::shared_ptr<Subscriber> conn;
  if (absl::SimpleAtoi(req.connection_id(), &id)) conn = hub_->FindConnection(id);
  if (!conn) {
    return done(absl::NotFoundError(absl::StrCat("no open connection '", req.connection_id(), "'")),
                {});
  }
  auto resp = std::make_shared<v1::Connection>();
  const Subscriber::Identity& identity = conn->identity();
  resp->set_connection_id(absl::StrCat(identity.id));
  resp->set_remote_address(identity.remote_address);
  resp->set_user(conn->user());
  SetTimestamp(identity.connected_at, resp->mutable_connected_at());
  resp->set_format(identity.format == DeliveryFormat::kRaw ? "raw" : "json");
  resp->set_node_id(node_id_);
  conn->Describe([done, resp](Subscriber::State state) {
    if (!state.open) return done(absl::NotFoundError("connection closed"), {});
    for (auto& t : state.topics) resp->add_topics(std::move(t));
    resp->set_queued_bytes(state.queued_bytes);
    resp->set_messages_sent(state.messages_sent);
    done(absl::OkStatus(), *resp);
  });
}

// ------------------------------------------------------------ in a cluster
// An admin call that targets a user, or a connection of another node, asks
// every node (verb admin_*); a node acts when the target is its own and
// answers "CODE\nMESSAGE\nRESPONSE" (the response serialized), or nothing
// when it is not concerned.

namespace {

bool TargetsConnection(const v1::GetConnectionRequest&) { return true; }
template <typename Request>
bool TargetsConnection(const Request& req) {
  return req.target_case() == Request::kConnectionId;
}

void Merge(v1::DisconnectResponse* into, const v1::DisconnectResponse& part) {
  into->set_connections(into->connections() + part.connections());
}
void Merge(v1::SubscribeResponse* into, const v1::SubscribeResponse& part) {
  into->set_connections(into->connections() + part.connections());
}
void Merge(v1::UnsubscribeResponse* into, const v1::UnsubscribeResponse& part) {
  into->set_connections(into->connections() + part.connections());
}
void Merge(v1::Connection* into, const v1::Connection& part) { *into = part; }

template <typename Response>
std::string EncodeAnswer(const absl::Status& s, const Response& resp) {
  std::string message(s.message());
  std::replace(message.begin(), message.end(), '\n', ' ');
  return absl::StrCat(static_cast<int>(s.code()), "\n", message, "\n",
                      s.ok() ? resp.SerializeAsString() : "");
}

template <typename Response>
bool DecodeAnswer(absl::string_view body, absl::Status* status, Response* resp) {
  size_t a = body.find('\n');
  if (a == absl::string_view::npos) return false;
  size_t b = body.find('\n', a + 1);
  if (b == absl::string_view::npos) return false;
  int code = 0;
  if (!absl::SimpleAtoi(body.substr(0, a), &code)) return false;
  *status = absl::Status(static_cast<absl::StatusCode>(code), body.substr(a + 1, b - a - 1));
  absl::string_view bytes = body.substr(b + 1);
  return resp->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

std::string TargetName(const v1::GetConnectionRequest& req) {
  return absl::StrCat("connection '", req.connection_id(), "' of node '", req.node_id(), "'");
}
template <typename Request>
std::string TargetName(const Request& req) {
  if (req.target_case() == Request::kUser) return absl::StrCat("user '", req.user(), "'");
  return absl::StrCat("connection '", req.connection_id(), "' of node '", req.node_id(), "'");
}

// How long an admin call waits for the other nodes, at most.
constexpr absl::Duration kAdminTimeout = absl::Milliseconds(500);

}  // namespace

template <typename Request, typename Response>
grpc::ServerUnaryReactor* FanoutServiceImpl::RouteAdmin(
    grpc::CallbackServerContext* ctx, absl::string_view verb, const Request& req, Response* resp,
    void (FanoutServiceImpl::*local)(const Request&, AdminDone<Response>)) {
  AsyncUnary call(ctx);
  const bool by_connection = TargetsConnection(req);
  if (!hub_->broker().clustered() ||
      (by_connection && (req.node_id().empty() || req.node_id() == node_id_))) {
    (this->*local)(req, call.Finisher([resp](absl::Status s, Response r) {
      *resp = std::move(r);
      return s;
    }));
    return call.Return();
  }
  absl::Duration left = absl::FromChrono(ctx->deadline()) - absl::Now();
  absl::Duration timeout =
      std::clamp(left - absl::Milliseconds(50), absl::Milliseconds(10), kAdminTimeout);
  hub_->broker().Gather(
      verb, req.SerializeAsString(), timeout,
      call.Finisher([resp, by_connection, target = TargetName(req)](Gathered g) {
        absl::Status error;
        bool found = false;
        for (const auto& a : g.answers) {
          if (a.body.empty()) continue;  // not that node's
          absl::Status s;
          Response part;
          if (!DecodeAnswer(a.body, &s, &part)) continue;
          if (s.ok()) {
            found = true;
            Merge(resp, part);
          } else if (!absl::IsNotFound(s) || by_connection) {
            if (error.ok()) error = s;
          }
        }
        absl::Status result;
        if (!error.ok()) {
          result = error;
        } else if (!found) {
          result = g.partial ? absl::UnavailableError(absl::StrCat(
                                   "no node that answered holds ", target,
                                   "; some nodes did not answer in time"))
                             : absl::NotFoundError(absl::StrCat("no node holds ", target));
        }
        return result;
      }));
  return call.Return();
}

void FanoutServiceImpl::AnswerAdmin(absl::string_view verb, absl::string_view request,
                                    QueryReply reply) {
  auto shared = std::make_shared<QueryReply>(std::move(reply));
  auto act = [&](auto request_type, auto local) {
    using Request = decltype(request_type);
    Request req;
    if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
      return std::move(*shared)("");
    }
    // A connection target is its node's; a user has connections anywhere.
    if (TargetsConnection(req) && req.node_id() != node_id_) return std::move(*shared)("");
    (this->*local)(req, [shared](absl::Status s, auto resp) {
      std::move(*shared)(EncodeAnswer(s, resp));
    });
  };
  if (verb == "admin_disconnect") {
    return act(v1::DisconnectRequest(), &FanoutServiceImpl::LocalDisconnect);
  }
  if (verb == "admin_subscribe") {
    return act(v1::SubscribeRequest(), &FanoutServiceImpl::LocalSubscribe);
  }
  if (verb == "admin_unsubscribe") {
    return act(v1::UnsubscribeRequest(), &FanoutServiceImpl::LocalUnsubscribe);
  }
  if (verb == "admin_get_connection") {
    return act(v1::GetConnectionRequest(), &FanoutServiceImpl::LocalGetConnection);
  }
  std::move(*shared)("");
}

// -------------------------------------------------------------- the calls

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
  if (absl::Status s = CheckTarget(*req); !s.ok()) return Finish(ctx, s);
  return RouteAdmin(ctx, "admin_disconnect", *req, resp, &FanoutServiceImpl::LocalDisconnect);
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Subscribe(grpc::CallbackServerContext* ctx,
                                                       const v1::SubscribeRequest* req,
                                                       v1::SubscribeResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = CheckTarget(*req); !s.ok()) return Finish(ctx, s);
  return RouteAdmin(ctx, "admin_subscribe", *req, resp, &FanoutServiceImpl::LocalSubscribe);
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Unsubscribe(grpc::CallbackServerContext* ctx,
                                                         const v1::UnsubscribeRequest* req,
                                                         v1::UnsubscribeResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = CheckTarget(*req); !s.ok()) return Finish(ctx, s);
  return RouteAdmin(ctx, "admin_unsubscribe", *req, resp, &FanoutServiceImpl::LocalUnsubscribe);
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GetConnection(grpc::CallbackServerContext* ctx,
                                                           const v1::GetConnectionRequest* req,
                                                           v1::Connection* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (req->connection_id().empty()) {
    return Finish(ctx, absl::InvalidArgumentError("connection_id is empty"));
  }
  return RouteAdmin(ctx, "admin_get_connection", *req, resp,
                    &FanoutServiceImpl::LocalGetConnection);
}

}  // namespace fanout
