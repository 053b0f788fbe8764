#ifndef FANOUT_CORE_TOPIC_REGISTRY_H_
#define FANOUT_CORE_TOPIC_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "core/mutex.h"
#include "core/subscriber.h"

namespace fanout {

// Maps topic -> subscribers, split into stripes by a hash of the topic so that
// unrelated topics never contend. A stripe's lock is held only to change a
// set or to take its snapshot, never during delivery.
// Thread: safe from any thread.
class TopicRegistry {
 public:
  struct Options {
    size_t stripes = 64;
    int io_threads = 1;
    // Most topics (with at least one subscriber) at once.
    size_t max_topics = SIZE_MAX;
    // Told (under the topic's stripe lock, so in order per topic) when a
    // topic gains its first subscriber (true) or loses its last (false).
    std::function<void(absl::string_view topic, bool active)> on_interest;
  };
  explicit TopicRegistry(const Options& options);

  // Adds `subscriber` to `topic`; OK also when it was already there.
  // RESOURCE_EXHAUSTED when the topic is new and the registry already holds
  // max_topics topics.
  absl::Status Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber);
  // Removes subscriber `id` from `topic`; returns false if it was not there.
  // A topic with no subscribers left is forgotten (with its sequence).
  bool Unsubscribe(absl::string_view topic, uint64_t id);

  // What a publish needs: the topic's next sequence number and its current
  // subscribers. `snapshot` is null (and seq 0) when the topic has none.
  struct PublishPlan {
    uint64_t seq = 0;
    std::shared_ptr<const SubscriberSnapshot> snapshot;
  };
  PublishPlan PlanPublish(absl::string_view topic);
  // The current subscribers of `topic` (null when it has none), for a
  // message whose sequence number was assigned elsewhere.
  std::shared_ptr<const SubscriberSnapshot> Recipients(absl::string_view topic);
  // How many subscribers `topic` has.
  size_t SubscriberCount(absl::string_view topic) const;

  // Up to `limit` subscribers of `topic` with id > `after_id`, by id.
  struct SubscriberPage {
    std::vector<std::shared_ptr<Subscriber>> subscribers;
    bool more = false;
  };
  SubscriberPage ListSubscribers(absl::string_view topic, uint64_t after_id, size_t limit) const;

  struct TopicCount {
    std::string topic;
    size_t subscribers = 0;
  };
  // Up to `limit` topics starting with `prefix` and ordering after `after`.
  std::vector<TopicCount> ListTopics(absl::string_view prefix, absl::string_view after, size_t limit,
                                     bool* more) const;

  size_t topic_count() const { return topic_count_.load(std::memory_order_relaxed); }
  size_t subscription_count() const { return subscription_count_.load(std::memory_order_relaxed); }

 private:
  struct alignas(64) Stripe {
    mutable Mutex mu;
    absl::flat_hash_map<std::string, SubscriberSet> topics ABSL_GUARDED_BY(mu);
  };
  Stripe& StripeFor(absl::string_view topic) const;

  const int io_threads_;
  const size_t max_topics_;
  const std::function<void(absl::string_view, bool)> on_interest_;
  std::unique_ptr<Stripe[]> stripes_;
  const size_t stripe_count_;
  std::atomic<size_t> topic_count_{0};
  std::atomic<size_t> subscription_count_{0};
};

}  // namespace fanout

#endif  // FANOUT_CORE_TOPIC_REGISTRY_H_
