#ifndef FANOUT_SERVICE_FANOUT_SERVICE_H_
#define FANOUT_SERVICE_FANOUT_SERVICE_H_

#include <atomic>
#include <functional>
#include <set>
#include <string>

#include "core/mutex.h"

#include "absl/time/time.h"
#include "auth/api_tokens.h"
#include "core/hub.h"
#include "fanout/v1/fanout.grpc.pb.h"

namespace fanout {

// Counters the gRPC service reports that live outside the hub.
struct NodeCounters {
  std::function<uint64_t()> messages_out;
  std::function<uint64_t()> bytes_out;
  std::function<uint64_t()> slow_client_disconnects;
  // False once the node is shutting down: publishes then fail UNAVAILABLE.
  std::function<bool()> serving;
};

// The long-lived streams of a service, so shutdown can end them.
// Thread: safe from any thread.
class StreamRegistry {
 public:
  class Stream {
   public:
    virtual ~Stream() = default;
    // Ends the stream soon; must not block or call back into the registry.
    virtual void OnNodeShutdown() = 0;
  };
  // Registers `s`; false (and nothing registered) once ShutdownAll has run:
  // the caller then ends its stream as OnNodeShutdown would.
  bool Add(Stream* s);
  void Remove(Stream* s);
  void ShutdownAll();

 private:
  Mutex mu_;
  std::set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// Bounds of one Watch stream's queue of events not yet written.
struct WatchLimits {
  int64_t max_bytes = int64_t{4} << 20;
  size_t max_messages = 10000;
  // Most Watch streams open at once; more are refused (RESOURCE_EXHAUSTED).
  size_t max_watchers = 100;
};

// fanout.v1.Fanout on gRPC's callback API. Every method finishes inline: the
// hub never blocks, so no reactor waits on I/O.
// Thread: gRPC's threads; never blocks beyond a registry stripe lock.
class FanoutServiceImpl final : public fanout::v1::Fanout::CallbackService {
 public:
  // `watch_limits` bound what a Watch stream may fall behind; `tokens`
  // (which must outlive the service) guard every call.
  FanoutServiceImpl(Hub* hub, std::string node_id, NodeCounters counters,
                    WatchLimits watch_limits, const ApiTokens* tokens);

  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* ctx,
                                    const v1::PublishRequest* req,
                                    v1::PublishResponse* resp) override;
  grpc::ServerUnaryReactor* Broadcast(grpc::CallbackServerContext* ctx,
                                      const v1::BroadcastRequest* req,
                                      v1::BroadcastResponse* resp) override;
  grpc::ServerUnaryReactor* ListSubscribers(grpc::CallbackServerContext* ctx,
                                            const v1::ListSubscribersRequest* req,
                                            v1::ListSubscribersResponse* resp) override;
  grpc::ServerUnaryReactor* ListTopics(grpc::CallbackServerContext* ctx,
                                       const v1::ListTopicsRequest* req,
                                       v1::ListTopicsResponse* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* req,
                                     v1::GetStatsResponse* resp) override;

  grpc::ServerUnaryReactor* PublishBatch(grpc::CallbackServerContext* ctx,
                                         const v1::PublishBatchRequest* req,
                                         v1::PublishBatchResponse* resp) override;
  grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResult>* PublishStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<v1::WatchEvent>* Watch(grpc::CallbackServerContext* ctx,
                                                  const v1::WatchRequest* req) override;
  grpc::ServerUnaryReactor* Disconnect(grpc::CallbackServerContext* ctx,
                                       const v1::DisconnectRequest* req,
                                       v1::DisconnectResponse* resp) override;
  grpc::ServerUnaryReactor* Subscribe(grpc::CallbackServerContext* ctx,
                                      const v1::SubscribeRequest* req,
                                      v1::SubscribeResponse* resp) override;
  grpc::ServerUnaryReactor* Unsubscribe(grpc::CallbackServerContext* ctx,
                                        const v1::UnsubscribeRequest* req,
                                        v1::UnsubscribeResponse* resp) override;
  grpc::ServerUnaryReactor* GetConnection(grpc::CallbackServerContext* ctx,
                                          const v1::GetConnectionRequest* req,
                                          v1::Connection* resp) override;
  grpc::ServerUnaryReactor* History(grpc::CallbackServerContext* ctx,
                                    const v1::HistoryRequest* req,
                                    v1::HistoryResponse* resp) override;
  grpc::ServerUnaryReactor* Presence(grpc::CallbackServerContext* ctx,
                                     const v1::PresenceRequest* req,
                                     v1::PresenceResponse* resp) override;

  // Ends open PublishStream calls with UNAVAILABLE (Watch streams end through
  // the hub's observers). Called once shutdown has begun.
  void Shutdown();

  // Publishes refused because the node was shutting down.
  uint64_t rejected_shutting_down() const {
    return rejected_shutting_down_.load(std::memory_order_relaxed);
  }

 private:
  // OK when the call's `authorization` metadata allows `scope`;
  // UNAUTHENTICATED or PERMISSION_DENIED otherwise.
  absl::Status Authorize(grpc::CallbackServerContext* ctx, ApiTokens::Scope scope) const;

  // ListSubscribers' position: after connection `id` of node `node` (a
  // standalone node's cursor has no node).
  struct SubscriberCursor {
    std::string node;
    uint64_t id = 0;
  };
  absl::StatusOr<SubscriberCursor> ParseSubscriberCursor(absl::string_view token) const;
  // This node's part of each answer, which is all of it on a standalone
  // node; next_page_token is set when the node has more.
  void LocalSubscribers(absl::string_view topic, const SubscriberCursor& cursor, size_t page_size,
                        v1::ListSubscribersResponse* resp);
  void LocalTopics(absl::string_view prefix, absl::string_view after, size_t page_size,
                   v1::ListTopicsResponse* resp);
  void LocalStats(v1::GetStatsResponse* resp);
  // A cluster: asks every node for its part and merges them
  // (fanout_service_cluster.cc).
  grpc::ServerUnaryReactor* GatherSubscribers(grpc::CallbackServerContext* ctx,
                                              const v1::ListSubscribersRequest& req,
                                              size_t page_size, v1::ListSubscribersResponse* resp);
  grpc::ServerUnaryReactor* GatherTopics(grpc::CallbackServerContext* ctx,
                                         const v1::ListTopicsRequest& req, size_t page_size,
                                         v1::ListTopicsResponse* resp);
  grpc::ServerUnaryReactor* GatherStats(grpc::CallbackServerContext* ctx,
                                        v1::GetStatsResponse* resp);
  // Answers another node's question (Broker::QueryHandler): listings at
  // once, admin actions once the connections have acted.
  void AnswerQuery(absl::string_view verb, absl::string_view request, QueryReply reply);
  std::string AnswerListing(absl::string_view verb, absl::string_view request);
  void AnswerAdmin(absl::string_view verb, absl::string_view request, QueryReply reply);

  // The admin calls' actions on this node's connections; `done` runs once,
  // on any thread (fanout_service_admin.cc).
  template <typename Response>
  using AdminDone = std::function<void(absl::Status, Response)>;
  void LocalDisconnect(const v1::DisconnectRequest& req, AdminDone<v1::DisconnectResponse> done);
  void LocalSubscribe(const v1::SubscribeRequest& req, AdminDone<v1::SubscribeResponse> done);
  void LocalUnsubscribe(const v1::UnsubscribeRequest& req,
                        AdminDone<v1::UnsubscribeResponse> done);
  void LocalGetConnection(const v1::GetConnectionRequest& req, AdminDone<v1::Connection> done);
  // An admin call: here when it targets a connection of this node (or this
  // is a standalone node), else on every node through the broker.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* RouteAdmin(grpc::CallbackServerContext* ctx, absl::string_view verb,
                                       const Request& req, Response* resp,
                                       void (FanoutServiceImpl::*local)(const Request&,
                                                                        AdminDone<Response>));

  // Publishes one request into `result`, never failing the caller; `done`
  // runs once `result` is filled in (inline, or later on a broker thread).
  // `result` must live until then.
  void PublishOne(const v1::PublishRequest& req, v1::PublishResult* result,
                  Hub::Admission admission, absl::AnyInvocable<void() &&> done);

  Hub* const hub_;
  const ApiTokens* const tokens_;
  const WatchLimits watch_limits_;
  const std::string node_id_;
  const NodeCounters counters_;
  const absl::Time started_ = absl::Now();
  StreamRegistry streams_;
  std::atomic<uint64_t> rejected_shutting_down_{0};
};

}  // namespace fanout

#endif  // FANOUT_SERVICE_FANOUT_SERVICE_H_
