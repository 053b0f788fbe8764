#ifndef FANOUT_CORE_HUB_H_
#define FANOUT_CORE_HUB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <functional>
#include <optional>

#include "absl/strings/string_view.h"

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/broker.h"
#include "core/delivery_budget.h"
#include "core/history.h"
#include "core/presence.h"
#include "core/limits.h"
#include "core/mutex.h"
#include "core/subscriber.h"
#include "core/topic_registry.h"

namespace fanout {

// Runs work on the I/O threads that own the connections. Implemented by the
// WebSocket front end; tests may run everything inline.
// Thread: safe from any thread.
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  virtual int thread_count() const = 0;
  // Runs `fn` on I/O thread `index` (0 <= index < thread_count()), later.
  virtual void Post(int index, absl::AnyInvocable<void() &&> fn) = 0;
};

// What one entry of a connection's outbound queue costs (a reference to the
// frame's owner and a view of its bytes), for the delivery budget.
inline constexpr int64_t kQueueEntryBytes = 40;
// What one posted delivery task costs until it has run.
inline constexpr int64_t kDeliveryTaskBytes = 160;

// Where publishes meet subscribers. As the ingress, it validates and admits
// a publish and hands it to the broker; as local delivery (what the broker
// calls back), it encodes each message once and posts one delivery task per
// I/O thread. Every accepted publish is charged to the delivery budget until
// it has been written; over the budget, publishes are refused as overloaded.
// Thread: safe from any thread; never blocks beyond a stripe lock.
class Hub final : public LocalDelivery {
 public:
  // Sees every accepted publish (gRPC Watch). Thread: OnPublish runs on the
  // publishing thread and must not block or publish.
  class PublishObserver {
   public:
    virtual ~PublishObserver() = default;
    virtual bool Wants(absl::string_view topic) const = 0;
    virtual void OnPublish(absl::string_view topic, uint64_t seq, absl::string_view payload) = 0;
    // The node is stopping: end whatever stream the observer feeds.
    virtual void OnShutdown() {}
  };

  struct Options {
    Limits limits;
    size_t stripes = 64;
    // How long a topic without subscribers keeps its position (and epoch).
    absl::Duration topic_ttl = absl::Minutes(5);
    // Which topics keep history on a standalone node.
    HistoryConfig history;
    // Topics that keep presence (--presence): who is subscribed, by user.
    std::vector<TopicPattern> presence;
    // The clock of topic lifetimes and history (tests move it).
    std::function<absl::Time()> now = [] { return absl::Now(); };
  };
  // `dispatcher` and `broker` must outlive the hub; the hub attaches itself
  // to the broker.
  Hub(const Options& options, Dispatcher* dispatcher, Broker* broker);

  using PublishResult = fanout::PublishResult;
  // Whether a publish may be refused because the node is overloaded. A
  // streaming publisher is not refused: it is read no further until there is
  // room (DeliveryBudget::WhenRoom).
  enum class Admission { kRefuseWhenOverloaded, kAccept };
  struct PublishOptions {
    Admission admission = Admission::kRefuseWhenOverloaded;
    // How subscribers receive the payload (see MessageSpec::kind); unset:
    // as its bytes look.
    std::optional<PayloadKind> kind;
    // A connection the message is not delivered to (a client publishing with
    // echo off); 0: none.
    uint64_t exclude = 0;
    // Delivered live only, without seq and epoch; never kept or replayed.
    bool skip_history = false;
  };
  // Delivers `payload` to the subscribers of `topic`; `done` runs once, with
  // the result: inline with a standalone node's broker and for every error
  // found here, later (on a broker thread) in a cluster.
  // INVALID_ARGUMENT: bad topic, or payload over limits().max_payload_bytes;
  // RESOURCE_EXHAUSTED: the delivery budget is spent (kRefuseWhenOverloaded);
  // UNAVAILABLE: the broker cannot reach the rest of the cluster.
  void Publish(absl::string_view topic, absl::string_view payload, const PublishOptions& options,
               PublishDone done);
  // Delivers `payload` to every connection of the service. Errors as Publish.
  void Broadcast(absl::string_view payload, Admission admission, PublishDone done);

  // LocalDelivery, for the broker.
  PublishResult DeliverNext(const OutgoingMessage& m) override;
  uint64_t Deliver(const OutgoingMessage& m, uint64_t seq, absl::string_view epoch) override;
  uint64_t LocalSubscribers(absl::string_view topic) const override;
  Broker& broker() { return *broker_; }
  const Broker& broker() const { return *broker_; }

  // The budget every accepted delivery is charged to.
  DeliveryBudget& budget() { return *budget_; }
  const DeliveryBudget& budget() const { return *budget_; }
  // Publishes (and broadcasts) the hub refused, by reason.
  enum class Rejection { kInvalidTopic, kPayloadTooLarge, kOverloaded, kCount };
  uint64_t rejected(Rejection r) const {
    return rejected_[static_cast<int>(r)].load(std::memory_order_relaxed);
  }

  // Connection bookkeeping: every open connection is registered once, which
  // makes it a Broadcast recipient. Returns false on a duplicate id.
  bool AddConnection(std::shared_ptr<Subscriber> connection);
  void RemoveConnection(uint64_t id);
  size_t connection_count() const { return connection_count_.load(std::memory_order_relaxed); }
  // The open connection with `id`, or null.
  std::shared_ptr<Subscriber> FindConnection(uint64_t id);
  // The open connections of `user` (never of the anonymous user "").
  std::vector<std::shared_ptr<Subscriber>> FindUserConnections(absl::string_view user);
  // A registered connection authenticated (again): it is now `user`'s.
  void SetUser(uint64_t id, const std::string& user);

  // Registers a publish observer; false (and nothing registered) once
  // ShutdownObservers has run, so no observer escapes the shutdown notice.
  bool AddObserver(std::shared_ptr<PublishObserver> observer);
  void RemoveObserver(const PublishObserver* observer);
  size_t observer_count() const { return observer_count_.load(std::memory_order_relaxed); }
  // Calls OnShutdown on every observer, and refuses new ones from now on.
  void ShutdownObservers();

  // Subscribes `subscriber` to `topic`, or to every topic a pattern matches
  // when `topic` has a wildcard (`orders.*`, `orders.>`; patterns recover
  // nothing). INVALID_ARGUMENT for a bad topic or pattern,
  // RESOURCE_EXHAUSTED when it would be a new topic beyond limits().max_topics.
  // Per-connection limits are the caller's (it knows its own topics).
  // With `since` (a position the client saw), `recovery` receives the
  // messages it missed, or why it cannot have them (TopicRegistry::Recovery):
  // the caller queues them before returning to its I/O thread, and every
  // later message comes as a live delivery after them. In a cluster the
  // history is in JetStream: Subscribe only subscribes and sets
  // `recovery->pending`; the caller then calls Recover.
  using Recovery = TopicRegistry::Recovery;
  absl::Status Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber,
                         const TopicPosition* since = nullptr, Recovery* recovery = nullptr);
  // A cluster's recovery for a subscriber Subscribe has just subscribed:
  // what `topic` kept after `since`, read from JetStream once this node
  // receives the topic's live messages, so that the two overlap rather than
  // leave a gap. The caller holds the topic's live messages back until
  // `done` (on a broker thread), then drops those the replay or the
  // position covers (same epoch, seq at most the last one replayed, or the
  // position's). When the read fails: not recovered, position unknown.
  using RecoveryDone = absl::AnyInvocable<void(Recovery) &&>;
  void Recover(absl::string_view topic, const TopicPosition& since, RecoveryDone done);
  // A kept message of `topic` encoded for one connection of `format` (a
  // recovery's replay).
  static std::shared_ptr<const Message> EncodeKept(absl::string_view topic,
                                                   absl::string_view epoch,
                                                   const HistoryEntry& entry,
                                                   DeliveryFormat format);
  // The kept messages of `topic` after `since` (HistoryPage): the
  // registry's, or a cluster's from JetStream. `done` runs once, inline or
  // on a broker thread.
  using HistoryDone = absl::AnyInvocable<void(absl::StatusOr<HistoryPage>) &&>;
  void History(absl::string_view topic, const TopicPosition* since, size_t limit,
               HistoryDone done);
  void Unsubscribe(absl::string_view topic, uint64_t id);

  // Presence (--presence): who is subscribed to `topic`, counted as they
  // come and go (PresenceTracker).
  const PresenceTracker& presence() const { return presence_; }
  // `subscriber`, subscribed to `topic`, hears its joins and leaves. False
  // when the topic keeps no presence or it is not subscribed there.
  bool WatchPresence(absl::string_view topic, std::shared_ptr<Subscriber> subscriber);
  // Who is on `topic` (the first `user_limit` users listed): this node's
  // counts, or in a cluster every node's, gathered within `timeout`
  // (`partial` when a node did not answer). In a cluster `users` is exact
  // while every node has at most kPresenceListed users on the topic, and
  // otherwise adds up the nodes' own counts (a user on two nodes counts
  // twice). `done` runs once, inline or on a broker thread.
  static constexpr size_t kPresenceListed = 1000;
  struct PresenceAnswer {
    PresenceTracker::Counts counts;
    bool partial = false;
  };
  using PresenceDone = absl::AnyInvocable<void(PresenceAnswer) &&>;
  void QueryPresence(absl::string_view topic, size_t user_limit, absl::Duration timeout,
                     PresenceDone done);
  // The broker's `presence` question from another node: this node's part.
  static constexpr char kPresenceVerb[] = "presence";
  std::string AnswerPresence(absl::string_view request) const;
  // Connection `id`, subscribed to `topics`, is now `user` (after SetUser).
  void MovePresence(uint64_t id, const std::string& user, const std::vector<std::string>& topics);

  const Limits& limits() const { return limits_; }
  const TopicRegistry& registry() const { return registry_; }
  absl::Status ValidateTopic(absl::string_view topic) const;

  uint64_t messages_in() const { return messages_in_.load(std::memory_order_relaxed); }
  uint64_t bytes_in() const { return bytes_in_.load(std::memory_order_relaxed); }

 private:
  absl::Status ValidatePayload(absl::string_view payload) const;
  absl::Status Admit(Admission admission);
  // Counts an accepted publish and hands it to the broker.
  void Hand(const OutgoingMessage& m, PublishDone done);
  // Encodes and posts `m` as `seq` of `epoch` to `snapshot`'s connections.
  void DeliverTo(const std::shared_ptr<const SubscriberSnapshot>& snapshot,
                 const OutgoingMessage& m, uint64_t seq, absl::string_view epoch = {});
  void ForgetUserLocked(const std::string& user, uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(connections_mu_);
  absl::Status Reject(Rejection r, absl::Status status) {
    rejected_[static_cast<int>(r)].fetch_add(1, std::memory_order_relaxed);
    return status;
  }
  // Posts one task per I/O thread that has recipients in `snapshot` (but
  // connection `exclude`).
  void Fanout(const std::shared_ptr<const SubscriberSnapshot>& snapshot,
              std::shared_ptr<const Message> message, uint64_t exclude = 0);
  void NotifyObservers(absl::string_view topic, uint64_t seq, absl::string_view payload);

  const Limits limits_;
  Dispatcher* const dispatcher_;
  Broker* const broker_;
  const std::shared_ptr<DeliveryBudget> budget_;  // shared with every message
  TopicRegistry registry_;
  PresenceTracker presence_;
  // Sends a presence event to its watchers.
  void DeliverPresence(const PresenceTracker::Event& event);

  Mutex connections_mu_;
  SubscriberSet connections_ ABSL_GUARDED_BY(connections_mu_);
  absl::flat_hash_map<std::string, std::vector<uint64_t>> users_ ABSL_GUARDED_BY(connections_mu_);

  using Observers = std::vector<std::shared_ptr<PublishObserver>>;
  Mutex observers_mu_;
  std::shared_ptr<const Observers> observers_ ABSL_GUARDED_BY(observers_mu_);
  bool observers_shut_down_ ABSL_GUARDED_BY(observers_mu_) = false;
  std::atomic<size_t> observer_count_{0};
  std::atomic<size_t> connection_count_{0};

  std::atomic<uint64_t> messages_in_{0};
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> rejected_[static_cast<int>(Rejection::kCount)]{};
};

}  // namespace fanout

#endif  // FANOUT_CORE_HUB_H_
