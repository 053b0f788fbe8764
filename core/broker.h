#ifndef FANOUT_CORE_BROKER_H_
#define FANOUT_CORE_BROKER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/delivery_budget.h"
#include "core/history.h"
#include "core/message.h"

namespace fanout {

// The three stages of a publish (docs/design.md): the ingress (Hub::Publish,
// called by gRPC and by clients) validates and admits it, a Broker assigns
// its sequence number and carries it to every node with interest, and local
// delivery (the Hub again, as LocalDelivery) encodes it once per node and
// hands it to that node's subscribers. core/ knows only these interfaces;
// the brokers live in cluster/.

// What the ingress hands a broker. The views are valid during Publish only: a
// broker that answers later copies what it needs first.
struct OutgoingMessage {
  absl::string_view topic;  // empty for a broadcast
  bool broadcast = false;
  absl::string_view payload;
  std::optional<PayloadKind> kind;  // unset: as the payload's bytes look
  // A connection of the publishing node not to deliver to (a client
  // publishing with echo off); 0: none.
  uint64_t exclude = 0;
  // Delivered live only: not numbered, not kept in history (Publish's
  // skip_history).
  bool skip_history = false;
  // A cluster's delivery: the message's position in the stream, by which a
  // copy arriving twice (through a topic's subscription and a matching
  // pattern's) is delivered once; 0: unknown.
  uint64_t stream_seq = 0;
};

// What a publish answers: its sequence number in the topic (or in the
// broadcasts; 0 when not numbered), the topic's epoch, and how many
// subscribers it was handed to.
struct PublishResult {
  uint64_t seq = 0;
  uint64_t subscribers = 0;
  std::string epoch;
};
using PublishDone = absl::AnyInvocable<void(absl::StatusOr<PublishResult>) &&>;

// A node's subscribers, as a broker sees them. Implemented by Hub.
// Thread: safe from any thread; never blocks beyond a registry stripe lock.
class LocalDelivery {
 public:
  virtual ~LocalDelivery() = default;
  // Takes the topic's next local sequence number and delivers under it, in
  // one step (the in-process broker: the sequence lives with the subscribers).
  virtual PublishResult DeliverNext(const OutgoingMessage& m) = 0;
  // Delivers a message whose sequence number (in `epoch`) the broker
  // assigned (a cluster); returns how many local subscribers it was handed
  // to.
  virtual uint64_t Deliver(const OutgoingMessage& m, uint64_t seq, absl::string_view epoch) = 0;
  // How many local subscribers `topic` has (every connection for a
  // broadcast, `topic` empty).
  virtual uint64_t LocalSubscribers(absl::string_view topic) const = 0;
};

// A question for every node of the service (ListSubscribers, ListTopics,
// GetStats in a cluster), and what each node answered. The broker moves the
// bytes; the service decides what they mean.
struct NodeAnswer {
  std::string node_id;
  std::string body;
};
struct Gathered {
  std::vector<NodeAnswer> answers;  // this node's included
  bool partial = false;             // a known node did not answer in time
};
// Answers `request` for `verb` from this node's own state, by calling
// `reply` once, at once or later from any thread (an admin action answers
// once the connection's I/O thread has acted). Thread: a broker thread; must
// not block.
using QueryReply = absl::AnyInvocable<void(std::string body) &&>;
using QueryHandler =
    std::function<void(absl::string_view verb, absl::string_view request, QueryReply reply)>;

// Carries publishes from the ingress of any node to local delivery on every
// node with interest. Thread: safe from any thread; no call blocks on the
// network, and callbacks never block.
class Broker {
 public:
  virtual ~Broker() = default;
  // Called once by the hub, before any other call. What a broker holds for
  // publishes it has not answered yet is charged to `budget`.
  virtual void Attach(LocalDelivery* delivery, DeliveryBudget* budget) = 0;
  // Assigns `m` its sequence number and delivers it everywhere; `done` runs
  // exactly once, inline or later on a broker thread.
  // UNAVAILABLE: the broker has no connection (nothing was delivered), or the
  // outcome is unknown (the message may have been delivered).
  virtual void Publish(const OutgoingMessage& m, PublishDone done) = 0;
  // The registry's news: `topic` gained its first local subscriber, or lost
  // its last. Called under the topic's registry stripe lock, in order per
  // topic: must not block or call back into the registry.
  virtual void OnTopicActive(absl::string_view topic) = 0;
  virtual void OnTopicIdle(absl::string_view topic) = 0;
  // Whether publishes can reach the whole service now.
  virtual bool connected() const = 0;
  // Whether other nodes exist to ask (a cluster broker).
  virtual bool clustered() const = 0;
  // Registers what answers other nodes' questions; call once, before
  // serving.
  virtual void SetQueryHandler(QueryHandler handler) = 0;
  // Asks every node for `verb` and gathers the answers that arrive within
  // `timeout`; `done` runs once, on a broker thread (inline when standalone).
  virtual void Gather(absl::string_view verb, std::string request, absl::Duration timeout,
                      absl::AnyInvocable<void(Gathered) &&> done) = 0;
  // Prometheus text for the broker's own metrics (may append nothing).
  virtual void AppendMetrics(std::string* out) const = 0;

  // Whether the broker keeps the topics' positions and history (a cluster:
  // in JetStream, readable from any node); otherwise the hub's registry
  // does.
  virtual bool keeps_history() const { return false; }
  // Reads `topic`'s kept messages after `since` (HistoryPage), at most
  // `limit`; `done` runs once, on a broker thread. With `after_interest`,
  // the read starts only once this node receives the topic's new messages
  // (its interest, announced by OnTopicActive before this call, is in
  // place), so that a reader that also takes live messages misses none
  // between the two. UNIMPLEMENTED unless keeps_history().
  virtual void ReadHistory(absl::string_view topic, const TopicPosition* since, size_t limit,
                           bool after_interest,
                           absl::AnyInvocable<void(absl::StatusOr<HistoryPage>) &&> done) {
    std::move(done)(absl::UnimplementedError("this broker keeps no history"));
  }
};

}  // namespace fanout

#endif  // FANOUT_CORE_BROKER_H_
