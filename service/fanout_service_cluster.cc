// fanout.v1.Fanout in a cluster: ListSubscribers, ListTopics and GetStats ask
// every node for its part (Broker::Gather) and merge the answers. The parts
// travel as the API's own messages, serialized.
#include <algorithm>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/fanout_service.h"
#include "service/rpc_util.h"

namespace fanout {
namespace {

constexpr char kListSubscribers[] = "list_subscribers";
constexpr char kListTopics[] = "list_topics";
constexpr char kGetStats[] = "get_stats";
// The admin calls' verbs (fanout_service_admin.cc).
constexpr char kAdminPrefix[] = "admin_";
// How long a cluster-wide answer waits for the other nodes, at most.
constexpr absl::Duration kGatherTimeout = absl::Milliseconds(500);

// The wait: kGatherTimeout, or less when the caller's deadline is nearer.
absl::Duration GatherTimeout(grpc::CallbackServerContext* ctx) {
  absl::Duration left = absl::FromChrono(ctx->deadline()) - absl::Now();
  return std::clamp(left - absl::Milliseconds(50), absl::Milliseconds(10), kGatherTimeout);
}

uint64_t ConnectionId(const v1::Subscriber& s) {
  uint64_t id = 0;
  return absl::SimpleAtoi(s.connection_id(), &id) ? id : 0;
}

}  // namespace

void FanoutServiceImpl::AnswerQuery(absl::string_view verb, absl::string_view request,
                                    QueryReply reply) {
  if (absl::StartsWith(verb, kAdminPrefix)) return AnswerAdmin(verb, request, std::move(reply));
  std::move(reply)(AnswerListing(verb, request));
}

std::string FanoutServiceImpl::AnswerListing(absl::string_view verb, absl::string_view request) {
  if (verb == kListSubscribers) {
    v1::ListSubscribersRequest req;
    v1::ListSubscribersResponse resp;
    if (req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
      auto cursor = ParseSubscriberCursor(req.page_token());
      if (cursor.ok() && hub_->ValidateTopic(req.topic()).ok() && req.page_size() > 0) {
        LocalSubscribers(req.topic(), *cursor, static_cast<size_t>(req.page_size()), &resp);
      }
    }
    return resp.SerializeAsString();
  }
  if (verb == kListTopics) {
    v1::ListTopicsRequest req;
    v1::ListTopicsResponse resp;
    if (req.ParseFromArray(request.data(), static_cast<int>(request.size())) &&
        req.page_size() > 0) {
      LocalTopics(req.prefix(), req.page_token(), static_cast<size_t>(req.page_size()), &resp);
    }
    return resp.SerializeAsString();
  }
  if (verb == Hub::kPresenceVerb) return hub_->AnswerPresence(request);
  if (verb == kGetStats) {
    v1::GetStatsResponse resp;
    LocalStats(&resp);
    return resp.SerializeAsString();
  }
  return "";  // a newer node's question: an empty answer
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GatherSubscribers(
    grpc::CallbackServerContext* ctx, const v1::ListSubscribersRequest& req, size_t page_size,
    v1::ListSubscribersResponse* resp) {
  v1::ListSubscribersRequest ask = req;
  ask.set_page_size(static_cast<int32_t>(page_size));
  AsyncUnary call(ctx);
  hub_->broker().Gather(
      kListSubscribers, ask.SerializeAsString(), GatherTimeout(ctx),
      call.Finisher([resp, page_size](Gathered g) {
        // Every node's part, in (node, id) order; a node that had more
        // than its part means more pages.
        std::vector<v1::Subscriber> all;
        bool more = false;
        for (const auto& a : g.answers) {
          v1::ListSubscribersResponse part;
          if (!part.ParseFromString(a.body)) continue;
          if (!part.next_page_token().empty()) more = true;
          for (auto& s : *part.mutable_subscribers()) all.push_back(std::move(s));
        }
        std::sort(all.begin(), all.end(), [](const v1::Subscriber& x, const v1::Subscriber& y) {
          if (x.node_id() != y.node_id()) return x.node_id() < y.node_id();
          return ConnectionId(x) < ConnectionId(y);
        });
        if (all.size() > page_size) {
          all.resize(page_size);
          more = true;
        }
        for (auto& s : all) *resp->add_subscribers() = std::move(s);
        if (more && !all.empty()) {
          const v1::Subscriber& last = resp->subscribers(resp->subscribers_size() - 1);
          resp->set_next_page_token(absl::StrCat(last.node_id(), "/", last.connection_id()));
        }
        resp->set_partial(g.partial);
        return absl::OkStatus();
      }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GatherTopics(grpc::CallbackServerContext* ctx,
                                                          const v1::ListTopicsRequest& req,
                                                          size_t page_size,
                                                          v1::ListTopicsResponse* resp) {
  v1::ListTopicsRequest ask = req;
  ask.set_page_size(static_cast<int32_t>(page_size));
  AsyncUnary call(ctx);
  hub_->broker().Gather(
      kListTopics, ask.SerializeAsString(), GatherTimeout(ctx),
      call.Finisher([resp, page_size](Gathered g) {
        // Counts add up over nodes. A node that had more topics than its
        // part knows nothing past its last one, so the page stops there.
        std::map<std::string, uint64_t> counts;
        std::optional<std::string> cutoff;
        for (const auto& a : g.answers) {
          v1::ListTopicsResponse part;
          if (!part.ParseFromString(a.body)) continue;
          for (const auto& t : part.topics()) counts[t.topic()] += t.subscribers();
          if (!part.next_page_token().empty() && part.topics_size() > 0) {
            const std::string& last = part.topics(part.topics_size() - 1).topic();
            if (!cutoff || last < *cutoff) cutoff = last;
          }
        }
        bool more = cutoff.has_value();
        for (const auto& [topic, n] : counts) {
          if (cutoff && topic > *cutoff) break;
          if (static_cast<size_t>(resp->topics_size()) == page_size) {
            more = true;
            break;
          }
          v1::TopicInfo* out = resp->add_topics();
          out->set_topic(topic);
          out->set_subscribers(n);
        }
        if (more && resp->topics_size() > 0) {
          resp->set_next_page_token(resp->topics(resp->topics_size() - 1).topic());
        }
        resp->set_partial(g.partial);
        return absl::OkStatus();
      }));
  return call.Return();
}

grpc::ServerUnaryReactor* FanoutServiceImpl::GatherStats(grpc::CallbackServerContext* ctx,
                                                         v1::GetStatsResponse* resp) {
  AsyncUnary call(ctx);
  hub_->broker().Gather(
      kGetStats, "", GatherTimeout(ctx), call.Finisher([this, resp](Gathered g) {
        std::vector<v1::GetStatsResponse> nodes;
        for (const auto& a : g.answers) {
          v1::GetStatsResponse part;
          if (part.ParseFromString(a.body)) nodes.push_back(std::move(part));
        }
        std::sort(nodes.begin(), nodes.end(),
                  [](const auto& x, const auto& y) { return x.node_id() < y.node_id(); });
        LocalStats(resp);  // this node's id and uptime
        resp->clear_connections();
        resp->clear_topics();
        resp->clear_subscriptions();
        resp->clear_messages_in();
        resp->clear_bytes_in();
        resp->clear_messages_out();
        resp->clear_bytes_out();
        resp->clear_slow_client_disconnects();
        for (auto& n : nodes) {
          resp->set_connections(resp->connections() + n.connections());
          resp->set_topics(resp->topics() + n.topics());
          resp->set_subscriptions(resp->subscriptions() + n.subscriptions());
          resp->set_messages_in(resp->messages_in() + n.messages_in());
          resp->set_bytes_in(resp->bytes_in() + n.bytes_in());
          resp->set_messages_out(resp->messages_out() + n.messages_out());
          resp->set_bytes_out(resp->bytes_out() + n.bytes_out());
          resp->set_slow_client_disconnects(resp->slow_client_disconnects() +
                                            n.slow_client_disconnects());
          *resp->add_nodes() = std::move(n);
        }
        resp->set_partial(g.partial);
        return absl::OkStatus();
      }));
  return call.Return();
}

}  // namespace fanout
