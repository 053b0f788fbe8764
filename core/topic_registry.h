#ifndef FANOUT_CORE_TOPIC_REGISTRY_H_
#define FANOUT_CORE_TOPIC_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/history.h"
#include "core/mutex.h"
#include "core/pattern_index.h"
#include "core/subscriber.h"

namespace fanout {

// Maps topic -> subscribers, position and history, split into stripes by a
// hash of the topic so that unrelated topics never contend. A stripe's lock
// is held only to change a topic or to take its snapshot, never during
// delivery.
//
// A topic is known from its first subscriber (or, when its history policy
// keeps messages, its first publish) until it has had no subscriber for
// --topic_ttl (and its history, if any, has expired): while it is known its
// sequence continues, so a client that comes back can tell what it missed.
// Forgotten, it starts a new epoch when it is next known.
// Thread: safe from any thread.
class TopicRegistry {
 public:
  struct Options {
    size_t stripes = 64;
    int io_threads = 1;
    // Most topics with at least one subscriber at once.
    size_t max_topics = SIZE_MAX;
    // Most topics kept without subscribers (their position and history);
    // beyond it, a topic losing its last subscriber is forgotten at once.
    size_t max_retained_topics = 100'000;
    // How long a topic without subscribers keeps its position.
    absl::Duration topic_ttl = absl::Minutes(5);
    // Which topics keep history, and how much.
    HistoryConfig history;
    // Most bytes all histories may hold; beyond it a topic's oldest
    // messages go first (and its recovery reaches back less far).
    int64_t max_history_bytes = int64_t{64} << 20;
    // Told (under the topic's stripe lock, so in order per topic) when a
    // topic gains its first subscriber (true) or loses its last (false).
    std::function<void(absl::string_view topic, bool active)> on_interest;
    // The clock (tests move it).
    std::function<absl::Time()> now = [] { return absl::Now(); };
  };
  explicit TopicRegistry(Options options);

  // A position a client saw, to recover from.
  using Since = TopicPosition;
  // What a subscribe with `since` found: `recovered` when every message after
  // since.seq is in `missed` (in order; possibly none), else nothing to
  // replay and `position` is where the topic stands.
  struct Recovery {
    // A cluster's: to be read from JetStream (Hub::Recover), nothing yet.
    bool pending = false;
    bool recovered = false;
    TopicPosition position;
    std::vector<std::shared_ptr<const HistoryEntry>> missed;
  };

  // Adds `subscriber` to `topic`; OK also when it was already there (then
  // nothing is recovered). With `since`, fills `recovery` under the same lock
  // that numbers publishes, so that the missed messages and the live ones
  // that follow neither overlap nor leave a gap. RESOURCE_EXHAUSTED when
  // the topic has no subscriber yet and the registry already holds
  // max_topics topics with subscribers.
  absl::Status Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber,
                         const Since* since = nullptr, Recovery* recovery = nullptr);
  // Removes subscriber `id` from `topic`; returns false if it was not there.
  bool Unsubscribe(absl::string_view topic, uint64_t id);

  // Wildcard subscriptions (`orders.*`, `orders.>`): every topic the pattern
  // matches reaches `subscriber`, once even when it is also subscribed to
  // the topic or to another matching pattern. OK also when it was there
  // already. on_interest hears of the pattern as of a topic.
  absl::Status SubscribePattern(const TopicPattern& pattern, std::shared_ptr<Subscriber> subscriber);
  bool UnsubscribePattern(absl::string_view pattern, uint64_t id);
  size_t pattern_count() const { return patterns_.pattern_count(); }

  // What a publish needs: the topic's next sequence number, its epoch and
  // its current subscribers (null when it has none). A numbered publish is
  // kept in the topic's history when its policy says so; an unnumbered one
  // (skip_history) gets seq 0 and is neither counted nor kept. seq is 0 too
  // when the topic is not known.
  struct PublishPlan {
    uint64_t seq = 0;
    std::string epoch;
    std::shared_ptr<const SubscriberSnapshot> snapshot;
  };
  PublishPlan PlanPublish(absl::string_view topic, absl::string_view payload = {},
                          std::optional<PayloadKind> kind = std::nullopt, bool numbered = true);
  // The current recipients of `topic` (null when it has none), for a
  // message whose sequence number was assigned elsewhere (a cluster).
  // `stream_seq` (when not 0) is the message's position in the cluster's
  // stream: a message that arrives again (through a topic subscription and
  // a matching pattern's) gets null the second time.
  std::shared_ptr<const SubscriberSnapshot> Recipients(absl::string_view topic,
                                                       uint64_t stream_seq = 0);
  // How many connections receive `topic`'s messages (pattern subscribers
  // included).
  size_t SubscriberCount(absl::string_view topic) const;

  // The kept messages of `topic` after `since` (all kept messages when
  // unset), oldest first, at most `limit`. `complete` is false when the
  // history does not reach back to since.seq + 1, or since names another
  // epoch (then `entries` is empty).
  using HistoryPage = ::fanout::HistoryPage;
  HistoryPage History(absl::string_view topic, const Since* since, size_t limit);

  // Up to `limit` recipients of `topic` (its subscribers and those of the
  // patterns it matches) with id > `after_id`, by id.
  struct SubscriberPage {
    std::vector<std::shared_ptr<Subscriber>> subscribers;
    bool more = false;
  };
  SubscriberPage ListSubscribers(absl::string_view topic, uint64_t after_id, size_t limit) const;

  struct TopicCount {
    std::string topic;
    size_t subscribers = 0;
  };
  // Up to `limit` topics with subscribers starting with `prefix` and ordering
  // after `after`.
  std::vector<TopicCount> ListTopics(absl::string_view prefix, absl::string_view after, size_t limit,
                                     bool* more) const;

  // Topics with at least one subscriber.
  size_t topic_count() const { return topic_count_.load(std::memory_order_relaxed); }
  // Topics known without subscribers (position and history kept).
  size_t retained_count() const { return retained_count_.load(std::memory_order_relaxed); }
  size_t subscription_count() const { return subscription_count_.load(std::memory_order_relaxed); }
  int64_t history_bytes() const { return history_bytes_.load(std::memory_order_relaxed); }
  uint64_t history_messages() const { return history_messages_.load(std::memory_order_relaxed); }
  // Kept messages dropped early to stay within max_history_bytes.
  uint64_t history_evicted() const { return history_evicted_.load(std::memory_order_relaxed); }
  const HistoryConfig& history_config() const { return options_.history; }

 private:
  struct Topic {
    SubscriberSet subscribers;
    TopicPosition position;
    HistoryPolicy policy;
    KeptMessages history;
    // While the topic has no subscriber: when it is forgotten.
    absl::Time expires = absl::InfiniteFuture();
    // With wildcard subscriptions: the recipients (own subscribers and the
    // matching patterns'), built from `base` (the own snapshot) as of the
    // patterns' `generation`. Made on the first publish while patterns
    // exist: a topic is small without it.
    struct Merged {
      std::shared_ptr<const SubscriberSnapshot> recipients;
      std::shared_ptr<const SubscriberSnapshot> base;
      uint64_t generation = UINT64_MAX;
    };
    std::unique_ptr<Merged> merged;
    // A cluster's stream position of the last message delivered (Recipients).
    uint64_t last_stream_seq = 0;
  };
  struct alignas(64) Stripe {
    mutable Mutex mu;
    absl::flat_hash_map<std::string, Topic> topics ABSL_GUARDED_BY(mu);
    absl::Time next_sweep ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  };
  Stripe& StripeFor(absl::string_view topic) const;
  std::string NewEpoch();
  // A new topic entry, its epoch fresh.
  Topic MakeTopic(absl::string_view topic);
  // Drops kept messages past their policy (count, age); all of them with
  // `all`. Returns nothing; counts what it released.
  void Trim(Topic& t, absl::Time now, bool all = false);
  // Forgets the expired topics of a stripe, trims every history, at most
  // once a second per stripe.
  void MaybeSweep(Stripe& s, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // The topic has just lost its last subscriber (or was made without one):
  // retains it, or returns false when it must be forgotten now.
  bool Retain(Topic& t, absl::Time now);
  void Forget(Topic& t);
  void Replay(const Topic& t, const Since& since, Recovery* recovery) const;
  // The topic's recipients, pattern subscribers merged in (cached).
  std::shared_ptr<const SubscriberSnapshot> RecipientsOf(Topic& t, absl::string_view topic);
  // A snapshot of `base`'s members (may be null) and `extra`, each once.
  std::shared_ptr<const SubscriberSnapshot> Merge(const SubscriberSnapshot* base,
                                                  std::vector<std::shared_ptr<Subscriber>> extra) const;
  // The matching patterns' subscribers of a topic the registry does not know.
  std::vector<std::shared_ptr<Subscriber>> PatternRecipients(absl::string_view topic) const;

  const Options options_;
  std::unique_ptr<Stripe[]> stripes_;
  const size_t stripe_count_;
  const std::string boot_;  // this process's part of every epoch
  PatternIndex patterns_;
  std::atomic<uint64_t> epochs_{0};
  std::atomic<size_t> topic_count_{0};
  std::atomic<size_t> retained_count_{0};
  std::atomic<size_t> subscription_count_{0};
  std::atomic<int64_t> history_bytes_{0};
  std::atomic<uint64_t> history_messages_{0};
  std::atomic<uint64_t> history_evicted_{0};
};

}  // namespace fanout

#endif  // FANOUT_CORE_TOPIC_REGISTRY_H_
