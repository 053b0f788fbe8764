#include "core/topic_registry.h"

#include <algorithm>
#include <random>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fanout {
namespace {

// Eight hex digits that differ from one start of the process to the next.
std::string BootId() {
  std::random_device rd;
  uint32_t v = rd();
  return absl::StrCat(absl::Hex(v, absl::kZeroPad8));
}

constexpr absl::Duration kSweepInterval = absl::Seconds(1);

}  // namespace

TopicRegistry::TopicRegistry(Options options)
    : options_(std::move(options)),
      stripes_(new Stripe[std::max<size_t>(1, options_.stripes)]),
      stripe_count_(std::max<size_t>(1, options_.stripes)),
      boot_(BootId()),
      patterns_(options_.on_interest) {}

TopicRegistry::Stripe& TopicRegistry::StripeFor(absl::string_view topic) const {
  return stripes_[absl::Hash<absl::string_view>{}(topic) % stripe_count_];
}

std::string TopicRegistry::NewEpoch() {
  // Short enough to stay in std::string's inline buffer (15 bytes) for the
  // first 36^6 topics a process makes.
  uint64_t n = epochs_.fetch_add(1, std::memory_order_relaxed);
  std::string suffix;
  do {
    suffix.push_back("0123456789abcdefghijklmnopqrstuvwxyz"[n % 36]);
    n /= 36;
  } while (n > 0);
  std::reverse(suffix.begin(), suffix.end());
  return absl::StrCat(boot_, "-", suffix);
}

TopicRegistry::Topic TopicRegistry::MakeTopic(absl::string_view topic) {
  Topic t;
  t.position.epoch = NewEpoch();
  if (options_.history.any()) t.policy = options_.history.For(topic);
  return t;
}

void TopicRegistry::Trim(Topic& t, absl::Time now, bool all) {
  while (!t.history.empty() &&
         (all || t.history.size() > t.policy.size || t.history.front()->at + t.policy.ttl <= now)) {
    history_bytes_.fetch_sub(t.history.front()->cost(), std::memory_order_relaxed);
    history_messages_.fetch_sub(1, std::memory_order_relaxed);
    t.history.pop_front();
  }
}

bool TopicRegistry::Retain(Topic& t, absl::Time now) {
  absl::Duration keep = options_.topic_ttl;
  if (t.policy.enabled()) keep = std::max(keep, t.policy.ttl);
  if (keep <= absl::ZeroDuration() ||
      retained_count_.load(std::memory_order_relaxed) >= options_.max_retained_topics) {
    return false;
  }
  retained_count_.fetch_add(1, std::memory_order_relaxed);
  t.expires = now + keep;
  return true;
}

void TopicRegistry::Forget(Topic& t) { Trim(t, absl::InfiniteFuture(), /*all=*/true); }

void TopicRegistry::MaybeSweep(Stripe& s, absl::Time now) {
  if (now < s.next_sweep) return;
  s.next_sweep = now + kSweepInterval;
  for (auto it = s.topics.begin(); it != s.topics.end();) {
    Topic& t = it->second;
    if (t.subscribers.empty() && t.expires <= now) {
      Forget(t);
      retained_count_.fetch_sub(1, std::memory_order_relaxed);
      s.topics.erase(it++);
      continue;
    }
    Trim(t, now);
    ++it;
  }
}

void TopicRegistry::Replay(const Topic& t, const Since& since, Recovery* recovery) const {
  recovery->position = t.position;
  recovery->recovered = false;
  if (since.epoch != t.position.epoch || since.seq > t.position.seq) return;
  if (since.seq == t.position.seq) {
    recovery->recovered = true;  // nothing was missed
    return;
  }
  // The kept messages are contiguous (only the oldest ones ever go), so the
  // history reaches back when its first message is at most since.seq + 1.
  if (t.history.empty() || t.history.front()->seq > since.seq + 1) return;
  for (const auto& e : t.history) {
    if (e->seq > since.seq) recovery->missed.push_back(e);
  }
  recovery->recovered = true;
}

std::shared_ptr<const SubscriberSnapshot> TopicRegistry::Merge(
    const SubscriberSnapshot* base, std::vector<std::shared_ptr<Subscriber>> extra) const {
  auto snap = std::make_shared<SubscriberSnapshot>();
  snap->by_thread.resize(static_cast<size_t>(options_.io_threads));
  absl::flat_hash_set<uint64_t> seen;
  auto add = [&](const std::shared_ptr<Subscriber>& sub) {
    if (!seen.insert(sub->id()).second) return;
    snap->by_thread[static_cast<size_t>(sub->io_index())].push_back(sub);
    if (sub->identity().format == DeliveryFormat::kRaw) {
      ++snap->raw_count;
    } else {
      ++snap->json_count;
    }
    ++snap->size;
  };
  if (base != nullptr) {
    for (const auto& thread : base->by_thread) {
      for (const auto& sub : thread) add(sub);
    }
  }
  for (const auto& sub : extra) add(sub);
  return snap;
}

std::vector<std::shared_ptr<Subscriber>> TopicRegistry::PatternRecipients(
    absl::string_view topic) const {
  std::vector<std::shared_ptr<Subscriber>> out;
  patterns_.Match(topic, &out);
  return out;
}

std::shared_ptr<const SubscriberSnapshot> TopicRegistry::RecipientsOf(Topic& t,
                                                                      absl::string_view topic) {
  std::shared_ptr<const SubscriberSnapshot> base =
      t.subscribers.empty() ? nullptr : t.subscribers.Snapshot(options_.io_threads);
  if (patterns_.pattern_count() == 0) return base;
  // Read before matching: a pattern changing meanwhile moves it again, and
  // the next publish looks once more.
  const uint64_t generation = patterns_.generation();
  if (!t.merged) t.merged = std::make_unique<Topic::Merged>();
  Topic::Merged& m = *t.merged;
  if (m.generation == generation && m.base == base) return m.recipients;
  std::vector<std::shared_ptr<Subscriber>> extra = PatternRecipients(topic);
  m.recipients = extra.empty() ? base : Merge(base.get(), std::move(extra));
  m.base = base;
  m.generation = generation;
  return m.recipients;
}

absl::Status TopicRegistry::SubscribePattern(const TopicPattern& pattern,
                                             std::shared_ptr<Subscriber> subscriber) {
  bool first = false;
  if (patterns_.Add(pattern, std::move(subscriber), &first)) {
    subscription_count_.fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

bool TopicRegistry::UnsubscribePattern(absl::string_view pattern, uint64_t id) {
  bool last = false;
  if (!patterns_.Remove(pattern, id, &last)) return false;
  subscription_count_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

absl::Status TopicRegistry::Subscribe(absl::string_view topic,
                                      std::shared_ptr<Subscriber> subscriber, const Since* since,
                                      Recovery* recovery) {
  const absl::Time now = options_.now();
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  MaybeSweep(s, now);
  auto it = s.topics.find(topic);
  if (it == s.topics.end() || it->second.subscribers.empty()) {
    // Checked per stripe without a global lock: concurrent subscribers to new
    // topics on other stripes may overshoot by their number, never more.
    if (topic_count_.load(std::memory_order_relaxed) >= options_.max_topics) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the node already has the limit of ", options_.max_topics, " topics"));
    }
    if (it == s.topics.end()) {
      it = s.topics.try_emplace(topic, MakeTopic(topic)).first;
    } else {
      retained_count_.fetch_sub(1, std::memory_order_relaxed);
      it->second.expires = absl::InfiniteFuture();
    }
    topic_count_.fetch_add(1, std::memory_order_relaxed);
    if (options_.on_interest) options_.on_interest(topic, true);
  }
  Topic& t = it->second;
  if (t.subscribers.Add(std::move(subscriber))) {
    subscription_count_.fetch_add(1, std::memory_order_relaxed);
    if (since != nullptr && recovery != nullptr) {
      Trim(t, now);
      Replay(t, *since, recovery);
    }
  } else if (recovery != nullptr) {
    recovery->position = t.position;
  }
  if (recovery != nullptr && since == nullptr) recovery->position = t.position;
  return absl::OkStatus();
}

bool TopicRegistry::Unsubscribe(absl::string_view topic, uint64_t id) {
  const absl::Time now = options_.now();
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end() || !it->second.subscribers.Remove(id)) return false;
  subscription_count_.fetch_sub(1, std::memory_order_relaxed);
  if (it->second.subscribers.empty()) {
    if (options_.on_interest) options_.on_interest(topic, false);
    topic_count_.fetch_sub(1, std::memory_order_relaxed);
    if (!Retain(it->second, now)) {
      Forget(it->second);
      s.topics.erase(it);
    }
  }
  MaybeSweep(s, now);
  return true;
}

TopicRegistry::PublishPlan TopicRegistry::PlanPublish(absl::string_view topic,
                                                      absl::string_view payload,
                                                      std::optional<PayloadKind> kind,
                                                      bool numbered) {
  const absl::Time now = options_.now();
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  MaybeSweep(s, now);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) {
    // Nobody listens and nobody can come back for it, unless the topic
    // keeps history or a pattern subscription matches it: then its first
    // publish makes it known.
    const bool keeps_history =
        numbered && options_.history.any() && options_.history.For(topic).enabled();
    std::vector<std::shared_ptr<Subscriber>> by_pattern;
    if (!keeps_history) {
      by_pattern = PatternRecipients(topic);
      if (by_pattern.empty()) return {};
    }
    Topic t = MakeTopic(topic);
    if (!Retain(t, now)) {
      // No room to remember the topic: its pattern subscribers still get the
      // message, unnumbered.
      if (by_pattern.empty()) return {};
      PublishPlan plan;
      plan.snapshot = Merge(nullptr, std::move(by_pattern));
      return plan;
    }
    it = s.topics.try_emplace(topic, std::move(t)).first;
  }
  Topic& t = it->second;
  PublishPlan plan;
  if (numbered) {
    plan.seq = ++t.position.seq;
    plan.epoch = t.position.epoch;
    if (t.policy.enabled()) {
      auto entry = std::make_shared<HistoryEntry>();
      entry->seq = plan.seq;
      entry->at = now;
      entry->payload = std::string(payload);
      entry->kind = kind;
      const int64_t cost = entry->cost();
      t.history.push_back(std::move(entry));
      history_bytes_.fetch_add(cost, std::memory_order_relaxed);
      history_messages_.fetch_add(1, std::memory_order_relaxed);
      Trim(t, now);
      // Over the node's budget: this topic's oldest messages go first (all of
      // them, this one included, when other topics hold the budget).
      while (history_bytes_.load(std::memory_order_relaxed) > options_.max_history_bytes &&
             !t.history.empty()) {
        history_bytes_.fetch_sub(t.history.front()->cost(), std::memory_order_relaxed);
        history_messages_.fetch_sub(1, std::memory_order_relaxed);
        history_evicted_.fetch_add(1, std::memory_order_relaxed);
        t.history.pop_front();
      }
      if (t.subscribers.empty()) t.expires = std::max(t.expires, now + t.policy.ttl);
    }
  }
  plan.snapshot = RecipientsOf(t, topic);
  // A topic that only patterns follow stays known while it is published to.
  if (plan.snapshot && t.subscribers.empty()) {
    t.expires = std::max(t.expires, now + options_.topic_ttl);
  }
  return plan;
}

std::shared_ptr<const SubscriberSnapshot> TopicRegistry::Recipients(absl::string_view topic,
                                                                     uint64_t stream_seq) {
  const absl::Time now = options_.now();
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) {
    if (patterns_.pattern_count() == 0) return nullptr;
    std::vector<std::shared_ptr<Subscriber>> by_pattern = PatternRecipients(topic);
    if (by_pattern.empty()) return nullptr;
    // Known from now on, so that a second copy (a second matching pattern's
    // subscription) is recognised.
    Topic t = MakeTopic(topic);
    if (!Retain(t, now)) return Merge(nullptr, std::move(by_pattern));
    it = s.topics.try_emplace(topic, std::move(t)).first;
  }
  Topic& t = it->second;
  if (stream_seq != 0) {
    if (stream_seq <= t.last_stream_seq) return nullptr;  // delivered already
    t.last_stream_seq = stream_seq;
  }
  auto recipients = RecipientsOf(t, topic);
  if (recipients && t.subscribers.empty()) {
    t.expires = std::max(t.expires, now + options_.topic_ttl);
  }
  return recipients;
}

size_t TopicRegistry::SubscriberCount(absl::string_view topic) const {
  std::vector<std::shared_ptr<Subscriber>> by_pattern = PatternRecipients(topic);
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  size_t own = it == s.topics.end() ? 0 : it->second.subscribers.size();
  if (by_pattern.empty()) return own;
  absl::flat_hash_set<uint64_t> extra;
  for (const auto& sub : by_pattern) {
    if (own == 0 || !it->second.subscribers.Find(sub->id())) extra.insert(sub->id());
  }
  return own + extra.size();
}

TopicRegistry::HistoryPage TopicRegistry::History(absl::string_view topic, const Since* since,
                                                  size_t limit) {
  const absl::Time now = options_.now();
  HistoryPage page;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return page;
  Topic& t = it->second;
  Trim(t, now);
  page.known = true;
  page.position = t.position;
  uint64_t after = 0;
  if (since != nullptr) {
    if (since->epoch != t.position.epoch || since->seq > t.position.seq) return page;
    after = since->seq;
  }
  page.complete = after >= t.position.seq ||
                  (!t.history.empty() && t.history.front()->seq <= after + 1);
  for (const auto& e : t.history) {
    if (page.entries.size() >= limit) break;
    if (e->seq > after) page.entries.push_back(e);
  }
  return page;
}

TopicRegistry::SubscriberPage TopicRegistry::ListSubscribers(absl::string_view topic,
                                                             uint64_t after_id,
                                                             size_t limit) const {
  SubscriberPage page;
  std::vector<std::shared_ptr<Subscriber>> by_pattern = PatternRecipients(topic);
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (by_pattern.empty()) {
    if (it != s.topics.end()) {
      page.more = it->second.subscribers.Page(after_id, limit, &page.subscribers);
    }
    return page;
  }
  // Admin path: the topic's own subscribers and the patterns', by id, once.
  absl::btree_map<uint64_t, std::shared_ptr<Subscriber>> all;
  for (auto& sub : by_pattern) all.try_emplace(sub->id(), std::move(sub));
  if (it != s.topics.end()) {
    std::vector<std::shared_ptr<Subscriber>> own;
    it->second.subscribers.Page(0, SIZE_MAX, &own);
    for (auto& sub : own) all.try_emplace(sub->id(), std::move(sub));
  }
  for (auto i = all.upper_bound(after_id); i != all.end(); ++i) {
    if (page.subscribers.size() == limit) {
      page.more = true;
      break;
    }
    page.subscribers.push_back(i->second);
  }
  return page;
}

std::vector<TopicRegistry::TopicCount> TopicRegistry::ListTopics(absl::string_view prefix,
                                                                 absl::string_view after,
                                                                 size_t limit, bool* more) const {
  // Admin path: gather the matching names from every stripe, then order them.
  std::vector<TopicCount> all;
  for (size_t i = 0; i < stripe_count_; ++i) {
    MutexLock lock(&stripes_[i].mu);
    for (const auto& [name, t] : stripes_[i].topics) {
      if (t.subscribers.empty()) continue;
      if (absl::StartsWith(name, prefix) && name > after) {
        all.push_back({name, t.subscribers.size()});
      }
    }
  }
  std::sort(all.begin(), all.end(),
            [](const TopicCount& a, const TopicCount& b) { return a.topic < b.topic; });
  *more = all.size() > limit;
  if (all.size() > limit) all.resize(limit);
  return all;
}

}  // namespace fanout
