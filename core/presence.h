#ifndef FANOUT_CORE_PRESENCE_H_
#define FANOUT_CORE_PRESENCE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "core/mutex.h"
#include "core/subscriber.h"
#include "core/topic_pattern.h"

namespace fanout {

// Who is on a topic (--presence): for every topic one of the node's
// presence patterns matches, the connections subscribed to it and the users
// behind them, kept up to date on every subscribe and unsubscribe so that a
// question costs the same at ten subscribers and at a hundred thousand.
// Subscribers who ask (watchers) hear when a user joins (their first
// connection on the topic) or leaves (their last). Pattern subscriptions
// are not presence: a pattern says what a connection receives, not where it
// is. Striped by topic like the registry.
// Thread: safe from any thread.
class PresenceTracker {
 public:
  PresenceTracker(std::vector<TopicPattern> patterns, int io_threads, size_t stripes = 64);

  // Whether any topic keeps presence.
  bool enabled() const { return !patterns_.empty(); }
  // Whether `topic` keeps presence.
  bool Covers(absl::string_view topic) const;

  // A user's first connection joined, or their last one left: what the
  // watchers receive. Returned so the caller delivers it after every lock.
  struct Event {
    std::string topic;
    std::string user;
    bool join = false;
    std::shared_ptr<const SubscriberSnapshot> watchers;
  };
  // Connection `id` of `user` (empty: anonymous) subscribed to `topic`;
  // nothing when it was counted already or the topic keeps no presence.
  std::optional<Event> Join(absl::string_view topic, uint64_t id, const std::string& user);
  // Connection `id` left `topic` (also as a watcher).
  std::optional<Event> Leave(absl::string_view topic, uint64_t id);
  // Connection `id`, on `topic`, is now `user` (it authenticated or
  // refreshed its token as someone else): a leave and a join.
  std::vector<Event> SetUser(absl::string_view topic, uint64_t id, const std::string& user);
  // `watcher`, counted on `topic` (Join first), hears the topic's later
  // joins and leaves until it leaves. False when it is not counted there.
  bool Watch(absl::string_view topic, std::shared_ptr<Subscriber> watcher);

  struct Counts {
    bool enabled = false;  // the topic keeps presence
    uint64_t connections = 0;
    uint64_t users = 0;      // distinct users among the connections
    uint64_t anonymous = 0;  // connections without a user
    // The first `user_limit` users by name, with their connections.
    std::vector<std::pair<std::string, uint64_t>> user_list;
    bool more_users = false;  // user_list stopped at user_limit
  };
  Counts Get(absl::string_view topic, size_t user_limit) const;

  // Topics with at least one counted connection.
  size_t topic_count() const;

 private:
  struct TopicPresence {
    absl::flat_hash_map<uint64_t, std::string> user_of;  // by connection id
    absl::btree_map<std::string, uint64_t> users;        // user -> connections
    uint64_t anonymous = 0;
    SubscriberSet watchers;
  };
  struct alignas(64) Stripe {
    mutable Mutex mu;
    absl::flat_hash_map<std::string, TopicPresence> topics ABSL_GUARDED_BY(mu);
  };
  Stripe& StripeFor(absl::string_view topic) const;
  // Counts `user` in (or out of) `p`; an event when the user came or went.
  std::optional<Event> Add(TopicPresence& p, absl::string_view topic, uint64_t id,
                           const std::string& user);
  std::optional<Event> Remove(TopicPresence& p, absl::string_view topic, uint64_t id);
  std::optional<Event> MakeEvent(TopicPresence& p, absl::string_view topic,
                                 const std::string& user, bool join);

  const std::vector<TopicPattern> patterns_;
  const int io_threads_;
  const size_t stripe_count_;
  std::unique_ptr<Stripe[]> stripes_;
};

// The frame a watcher receives: {"op":"join"|"leave","topic":..,"user":..}.
std::string PresenceEventJson(const PresenceTracker::Event& event);

}  // namespace fanout

#endif  // FANOUT_CORE_PRESENCE_H_
