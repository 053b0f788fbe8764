#include "service/fanout_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/rpc_util.h"
#include "service/status_mapping.h"

namespace fanout {
namespace {

constexpr int32_t kDefaultPageSize = 100;
constexpr int32_t kMaxPageSize = 1000;

absl::StatusOr<size_t> PageSize(int32_t requested) {
  if (requested < 0 || requested > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be between 0 and ", kMaxPageSize));
  }
  return static_cast<size_t>(requested == 0 ? kDefaultPageSize : requested);
}

}  // namespace

FanoutServiceImpl::FanoutServiceImpl(Hub* hub, std::string node_id, NodeCounters counters,
                                     WatchLimits watch_limits, const ApiTokens* tokens)
    : hub_(hub),
      tokens_(tokens),
      watch_limits_(watch_limits),
      node_id_(std::move(node_id)),
      counters_(std::move(counters)) {
  if (hub_->broker().clustered()) {
    hub_->broker().SetQueryHandler(
        [this](absl::string_view verb, absl::string_view request, QueryReply reply) {
          AnswerQuery(verb, request, std::move(reply));
        });
  }
}

absl::Status FanoutServiceImpl::Authorize(grpc::CallbackServerContext* ctx,
                                          ApiTokens::Scope scope) const {
  if (!tokens_) return absl::OkStatus();
  const auto& metadata = ctx->client_metadata();
  auto it = metadata.find("authorization");
  std::optional<absl::string_view> value;
  if (it != metadata.end()) value = absl::string_view(it->second.data(), it->second.size());
  return tokens_->Check(value, scope);
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Publish(grpc::CallbackServerContext* ctx,
                                                     const v1::PublishRequest* req,
                                                     v1::PublishResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kPublish); !s.ok()) return Finish(ctx, s);
  if (!counters_.serving()) {
    rejected_shutting_down_.fetch_add(1, std::memory_order_relaxed);
    return Finish(ctx, absl::UnavailableError("node is shutting down"));
  }
  // Answered when the broker has numbered the message: at once on a
  // standalone node, after JetStream's acknowledgement in a cluster.
  AsyncUnary call(ctx);
  hub_->Publish(req->topic(), req->payload(), {.skip_history = req->skip_history()},
                call.Finisher([resp](absl::StatusOr<PublishResult> result) {
                  if (result.ok()) {
                    resp->set_seq(result->seq);
                    resp->set_subscribers(result->subscribers);
                    resp->set_epoch(std::move(result->epoch));
                  }
                  return result.status();
                }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::History(grpc::CallbackServerContext* ctx,
                                                     const v1::HistoryRequest* req,
                                                     v1::HistoryResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (req->limit() < 0 || req->limit() > 1000) {
    return Finish(ctx, absl::InvalidArgumentError("limit must be 0 to 1000"));
  }
  if (req->since().epoch().size() > kMaxEpochLength) {
    return Finish(ctx, absl::InvalidArgumentError("since.epoch is not an epoch of this node"));
  }
  TopicPosition since{req->since().seq(), req->since().epoch()};
  AsyncUnary call(ctx);
  hub_->History(req->topic(), req->has_since() ? &since : nullptr,
                req->limit() == 0 ? 100 : static_cast<size_t>(req->limit()),
                call.Finisher([resp](absl::StatusOr<HistoryPage> page) {
                  if (!page.ok()) return page.status();
                  if (page->known) {
                    resp->mutable_position()->set_seq(page->position.seq);
                    resp->mutable_position()->set_epoch(page->position.epoch);
                  }
                  for (const auto& e : page->entries) {
                    v1::HistoryMessage* m = resp->add_messages();
                    m->set_seq(e->seq);
                    m->set_payload(e->payload);
                    SetTimestamp(e->at, m->mutable_published_at());
                  }
                  resp->set_complete(page->complete);
                  return absl::OkStatus();
                }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Presence(grpc::CallbackServerContext* ctx,
                                                      const v1::PresenceRequest* req,
                                                      v1::PresenceResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (req->user_limit() < 0 || req->user_limit() > 1000) {
    return Finish(ctx, absl::InvalidArgumentError("user_limit must be 0 to 1000"));
  }
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  if (!hub_->presence().Covers(req->topic())) {
    return Finish(ctx, absl::FailedPreconditionError(absl::StrCat(
                           "the node keeps no presence for '", req->topic(), "' (--presence)")));
  }
  absl::Duration left = absl::FromChrono(ctx->deadline()) - absl::Now();
  AsyncUnary call(ctx);
  hub_->QueryPresence(
      req->topic(), static_cast<size_t>(req->user_limit()),
      std::clamp(left - absl::Milliseconds(50), absl::Milliseconds(10), absl::Milliseconds(500)),
      call.Finisher([resp](Hub::PresenceAnswer a) {
        resp->set_connections(a.counts.connections);
        resp->set_users(a.counts.users);
        resp->set_anonymous(a.counts.anonymous);
        for (const auto& [user, n] : a.counts.user_list) {
          v1::PresenceUser* u = resp->add_user_list();
          u->set_user(user);
          u->set_connections(n);
        }
        resp->set_more_users(a.counts.more_users);
        resp->set_partial(a.partial);
        return absl::OkStatus();
      }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::Broadcast(grpc::CallbackServerContext* ctx,
                                                       const v1::BroadcastRequest* req,
                                                       v1::BroadcastResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kPublish); !s.ok()) return Finish(ctx, s);
  if (!counters_.serving()) {
    rejected_shutting_down_.fetch_add(1, std::memory_order_relaxed);
    return Finish(ctx, absl::UnavailableError("node is shutting down"));
  }
  AsyncUnary call(ctx);
  hub_->Broadcast(req->payload(), Hub::Admission::kRefuseWhenOverloaded,
                  call.Finisher([resp](absl::StatusOr<PublishResult> result) {
                    if (result.ok()) {
                      resp->set_seq(result->seq);
                      resp->set_connections(result->subscribers);
                    }
                    return result.status();
                  }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::ListSubscribers(
    grpc::CallbackServerContext* ctx, const v1::ListSubscribersRequest* req,
    v1::ListSubscribersResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (absl::Status s = hub_->ValidateTopic(req->topic()); !s.ok()) return Finish(ctx, s);
  auto page_size = PageSize(req->page_size());
  if (!page_size.ok()) return Finish(ctx, page_size.status());
  auto cursor = ParseSubscriberCursor(req->page_token());
  if (!cursor.ok()) return Finish(ctx, cursor.status());
  if (hub_->broker().clustered()) return GatherSubscribers(ctx, *req, *page_size, resp);
  LocalSubscribers(req->topic(), *cursor, *page_size, resp);
  return Finish(ctx, absl::OkStatus());
}

absl::StatusOr<FanoutServiceImpl::SubscriberCursor> FanoutServiceImpl::ParseSubscriberCursor(
    absl::string_view token) const {
  // A standalone node's token is the last connection id of the previous
  // page: ids only grow, so paging never repeats or skips a subscriber that
  // stays subscribed. A cluster's is NODE/ID: pages go node by node.
  SubscriberCursor cursor;
  if (token.empty()) return cursor;
  absl::string_view id = token;
  if (hub_->broker().clustered()) {
    size_t slash = token.rfind('/');
    if (slash == absl::string_view::npos) {
      return absl::InvalidArgumentError("page_token is not one this server issued");
    }
    cursor.node = std::string(token.substr(0, slash));
    id = token.substr(slash + 1);
  }
  if (!absl::SimpleAtoi(id, &cursor.id)) {
    return absl::InvalidArgumentError("page_token is not one this server issued");
  }
  return cursor;
}

void FanoutServiceImpl::LocalSubscribers(absl::string_view topic, const SubscriberCursor& cursor,
                                         size_t page_size, v1::ListSubscribersResponse* resp) {
  // Node by node: this node's part comes after the cursor's node.
  if (!cursor.node.empty() && node_id_ < cursor.node) return;
  uint64_t after = cursor.node.empty() || node_id_ == cursor.node ? cursor.id : 0;
  auto page = hub_->registry().ListSubscribers(topic, after, page_size);
  for (const auto& sub : page.subscribers) {
    const Subscriber::Identity& id = sub->identity();
    v1::Subscriber* out = resp->add_subscribers();
    out->set_connection_id(absl::StrCat(id.id));
    out->set_remote_address(id.remote_address);
    out->set_user(sub->user());
    out->set_node_id(node_id_);
    SetTimestamp(id.connected_at, out->mutable_connected_at());
  }
  if (page.more && !page.subscribers.empty()) {
    resp->set_next_page_token(absl::StrCat(page.subscribers.back()->id()));
  }
}

grpc::ServerUnaryReactor* FanoutServiceImpl::ListTopics(grpc::CallbackServerContext* ctx,
                                                        const v1::ListTopicsRequest* req,
                                                        v1::ListTopicsResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  auto page_size = PageSize(req->page_size());
  if (!page_size.ok()) return Finish(ctx, page_size.status());
  // The token is the last topic name of the previous page.
  const std::string& after = req->page_token();
  if (!after.empty()) {
    if (absl::Status s = hub_->ValidateTopic(after); !s.ok()) {
      return Finish(ctx, absl::InvalidArgumentError("page_token is not one this server issued"));
    }
  }
  if (hub_->broker().clustered()) return GatherTopics(ctx, *req, *page_size, resp);
  LocalTopics(req->prefix(), after, *page_size, resp);
  return Finish(ctx, absl::OkStatus());
}

void FanoutServiceImpl::LocalTopics(absl::string_view prefix, absl::string_view after,
                                    size_t page_size, v1::ListTopicsResponse* resp) {
  bool more = false;
  auto topics = hub_->registry().ListTopics(prefix, after, page_size, &more);
  for (const auto& t : topics) {
    v1::TopicInfo* out = resp->add_topics();
    out->set_topic(t.topic);
    out->set_subscribers(t.subscribers);
  }
  if (more && !topics.empty()) resp->set_next_page_token(topics.back().topic);
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GetStats(grpc::CallbackServerContext* ctx,
                                                      const v1::GetStatsRequest* req,
                                                      v1::GetStatsResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kAdmin); !s.ok()) return Finish(ctx, s);
  if (hub_->broker().clustered()) return GatherStats(ctx, resp);
  LocalStats(resp);
  return Finish(ctx, absl::OkStatus());
}

void FanoutServiceImpl::LocalStats(v1::GetStatsResponse* resp) {
  resp->set_node_id(node_id_);
  resp->set_uptime_seconds(static_cast<uint64_t>(absl::ToInt64Seconds(absl::Now() - started_)));
  resp->set_connections(hub_->connection_count());
  resp->set_topics(hub_->registry().topic_count());
  resp->set_subscriptions(hub_->registry().subscription_count());
  resp->set_messages_in(hub_->messages_in());
  resp->set_bytes_in(hub_->bytes_in());
  resp->set_messages_out(counters_.messages_out());
  resp->set_bytes_out(counters_.bytes_out());
  resp->set_slow_client_disconnects(counters_.slow_client_disconnects());
}

}  // namespace fanout
