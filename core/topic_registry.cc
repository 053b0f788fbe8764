#include "core/topic_registry.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fanout {

TopicRegistry::TopicRegistry(const Options& options)
    : io_threads_(options.io_threads),
      max_topics_(options.max_topics),
      on_interest_(options.on_interest),
      stripes_(new Stripe[std::max<size_t>(1, options.stripes)]),
      stripe_count_(std::max<size_t>(1, options.stripes)) {}

TopicRegistry::Stripe& TopicRegistry::StripeFor(absl::string_view topic) const {
  return stripes_[absl::Hash<absl::string_view>{}(topic) % stripe_count_];
}

absl::Status TopicRegistry::Subscribe(absl::string_view topic,
                                      std::shared_ptr<Subscriber> subscriber) {
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) {
    // Checked per stripe without a global lock: concurrent subscribers to new
    // topics on other stripes may overshoot by their number, never more.
    if (topic_count_.load(std::memory_order_relaxed) >= max_topics_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the node already has the limit of ", max_topics_, " topics"));
    }
    it = s.topics.try_emplace(topic).first;
    topic_count_.fetch_add(1, std::memory_order_relaxed);
    if (on_interest_) on_interest_(topic, true);
  }
  if (it->second.Add(std::move(subscriber))) {
    subscription_count_.fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

bool TopicRegistry::Unsubscribe(absl::string_view topic, uint64_t id) {
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end() || !it->second.Remove(id)) return false;
  subscription_count_.fetch_sub(1, std::memory_order_relaxed);
  if (it->second.empty()) {
    if (on_interest_) on_interest_(topic, false);
    s.topics.erase(it);
    topic_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  return true;
}

TopicRegistry::PublishPlan TopicRegistry::PlanPublish(absl::string_view topic) {
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return {};
  return {it->second.NextSeq(), it->second.Snapshot(io_threads_)};
}

std::shared_ptr<const SubscriberSnapshot> TopicRegistry::Recipients(absl::string_view topic) {
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it == s.topics.end()) return nullptr;
  return it->second.Snapshot(io_threads_);
}

size_t TopicRegistry::SubscriberCount(absl::string_view topic) const {
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  return it == s.topics.end() ? 0 : it->second.size();
}

TopicRegistry::SubscriberPage TopicRegistry::ListSubscribers(absl::string_view topic,
                                                             uint64_t after_id,
                                                             size_t limit) const {
  SubscriberPage page;
  Stripe& s = StripeFor(topic);
  MutexLock lock(&s.mu);
  auto it = s.topics.find(topic);
  if (it != s.topics.end()) page.more = it->second.Page(after_id, limit, &page.subscribers);
  return page;
}

std::vector<TopicRegistry::TopicCount> TopicRegistry::ListTopics(absl::string_view prefix,
                                                                 absl::string_view after,
                                                                 size_t limit, bool* more) const {
  // Admin path: gather the matching names from every stripe, then order them.
  std::vector<TopicCount> all;
  for (size_t i = 0; i < stripe_count_; ++i) {
    MutexLock lock(&stripes_[i].mu);
    for (const auto& [name, set] : stripes_[i].topics) {
      if (absl::StartsWith(name, prefix) && name > after) all.push_back({name, set.size()});
    }
  }
  std::sort(all.begin(), all.end(),
            [](const TopicCount& a, const TopicCount& b) { return a.topic < b.topic; });
  *more = all.size() > limit;
  if (all.size() > limit) all.resize(limit);
  return all;
}

}  // namespace fanout
