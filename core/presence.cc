#include "core/presence.h"

#include <boost/json.hpp>

#include "absl/hash/hash.h"

namespace fanout {

PresenceTracker::PresenceTracker(std::vector<TopicPattern> patterns, int io_threads,
                                 size_t stripes)
    : patterns_(std::move(patterns)),
      io_threads_(io_threads),
      stripe_count_(stripes == 0 ? 1 : stripes),
      stripes_(new Stripe[stripe_count_]) {}

PresenceTracker::Stripe& PresenceTracker::StripeFor(absl::string_view topic) const {
  return stripes_[absl::Hash<absl::string_view>{}(topic) % stripe_count_];
}

bool PresenceTracker::Covers(absl::string_view topic) const {
  for (const auto& p : patterns_) {
    if (p.Matches(topic)) return true;
  }
  return false;
}

std::optional<PresenceTracker::Event> PresenceTracker::MakeEvent(TopicPresence& p,
                                                                 absl::string_view topic,
                                                                 const std::string& user,
                                                                 bool join) {
  if (user.empty() || p.watchers.empty()) return std::nullopt;
  return Event{std::string(topic), user, join, p.watchers.Snapshot(io_threads_)};
}

std::optional<PresenceTracker::Event> PresenceTracker::Add(TopicPresence& p,
                                                           absl::string_view topic, uint64_t id,
                                                           const std::string& user) {
  if (!p.user_of.try_emplace(id, user).second) return std::nullopt;
  if (user.empty()) {
    ++p.anonymous;
    return std::nullopt;
  }
  if (++p.users[user] != 1) return std::nullopt;
  return MakeEvent(p, topic, user, /*join=*/true);
}

std::optional<PresenceTracker::Event> PresenceTracker::Remove(TopicPresence& p,
                                                              absl::string_view topic,
                                                              uint64_t id) {
  auto it = p.user_of.find(id);
  if (it == p.user_of.end()) return std::nullopt;
  std::string user = std::move(it->second);
  p.user_of.erase(it);
  p.watchers.Remove(id);
  if (user.empty()) {
    --p.anonymous;
    return std::nullopt;
  }
  auto u = p.users.find(user);
  if (u == p.users.end() || --u->second != 0) return std::nullopt;
  p.users.erase(u);
  return MakeEvent(p, topic, user, /*join=*/false);
}

std::optional<PresenceTracker::Event> PresenceTracker::Join(absl::string_view topic, uint64_t id,
                                                            const std::string& user) {
  if (!Covers(topic)) return std::nullopt;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) it = s.topics.try_emplace(topic).first;
  return Add(it->second, topic, id, user);
}

std::optional<PresenceTracker::Event> PresenceTracker::Leave(absl::string_view topic,
                                                             uint64_t id) {
  if (!enabled()) return std::nullopt;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return std::nullopt;
  std::optional<Event> event = Remove(it->second, topic, id);
  if (it->second.user_of.empty()) s.topics.erase(it);
  return event;
}

std::vector<PresenceTracker::Event> PresenceTracker::SetUser(absl::string_view topic, uint64_t id,
                                                             const std::string& user) {
  std::vector<Event> events;
  if (!enabled()) return events;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return events;
  TopicPresence& p = it->second;
  auto member = p.user_of.find(id);
  if (member == p.user_of.end() || member->second == user) return events;
  // The watcher stays one: it is the same connection.
  std::shared_ptr<Subscriber> watcher = p.watchers.Find(id);
  if (auto e = Remove(p, topic, id)) events.push_back(*std::move(e));
  if (auto e = Add(p, topic, id, user)) events.push_back(*std::move(e));
  if (watcher) p.watchers.Add(std::move(watcher));
  return events;
}

bool PresenceTracker::Watch(absl::string_view topic, std::shared_ptr<Subscriber> watcher) {
  if (!enabled()) return false;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end() || !it->second.user_of.contains(watcher->id())) return false;
  it->second.watchers.Add(std::move(watcher));
  return true;
}

PresenceTracker::Counts PresenceTracker::Get(absl::string_view topic, size_t user_limit) const {
  Counts c;
  c.enabled = Covers(topic);
  if (!c.enabled) return c;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return c;
  const TopicPresence& p = it->second;
  c.connections = p.user_of.size();
  c.users = p.users.size();
  c.anonymous = p.anonymous;
  for (const auto& [user, n] : p.users) {
    if (c.user_list.size() >= user_limit) {
      c.more_users = true;
      break;
    }
    c.user_list.emplace_back(user, n);
  }
  return c;
}

size_t PresenceTracker::topic_count() const {
  size_t n = 0;
  for (size_t i = 0; i < stripe_count_; ++i) {
    MutexLock lock(&stripes_[i].mu);
    n += stripes_[i].topics.size();
  }
  return n;
}

std::string PresenceEventJson(const PresenceTracker::Event& event) {
  boost::json::object o;
  o["op"] = event.join ? "join" : "leave";
  o["topic"] = event.topic;
  o["user"] = event.user;
  return boost::json::serialize(o);
}

}  // namespace fanout
