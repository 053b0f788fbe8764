#ifndef FANOUT_CORE_PATTERN_INDEX_H_
#define FANOUT_CORE_PATTERN_INDEX_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "core/mutex.h"
#include "core/subscriber.h"
#include "core/topic_pattern.h"

namespace fanout {

// The wildcard subscriptions of a node (`orders.*`, `orders.>`), shared by
// all connections: a trie over `.`-separated segments, so that finding the
// patterns a topic matches costs the topic's segments (times the wildcard
// branches taken), not the number of patterns. The registry caches each
// topic's merged recipients and asks again only after `generation()` moved.
// Thread: safe from any thread (one lock, taken only when a pattern changes
// or a topic's cached recipients are stale).
class PatternIndex {
 public:
  // `on_interest` (may be empty) hears, under the index's lock so in order
  // per pattern, when a pattern gains its first subscriber or loses its last.
  explicit PatternIndex(std::function<void(absl::string_view pattern, bool active)> on_interest);
  ~PatternIndex();

  // Adds `subscriber` to `pattern` (one with a wildcard). Returns false when
  // it was there already; `first` says whether the pattern is new.
  bool Add(const TopicPattern& pattern, std::shared_ptr<Subscriber> subscriber, bool* first);
  // Removes subscriber `id` from the pattern `text`; false when it was not
  // there. `last` says whether the pattern has no subscriber left.
  bool Remove(absl::string_view text, uint64_t id, bool* last);

  // Appends the subscribers of every pattern `topic` matches (a subscriber
  // of two matching patterns appears twice: the caller merges by id).
  void Match(absl::string_view topic, std::vector<std::shared_ptr<Subscriber>>* out) const;

  // Changes with every Add or Remove that changed something.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  size_t pattern_count() const { return pattern_count_.load(std::memory_order_relaxed); }
  size_t subscription_count() const { return subscription_count_.load(std::memory_order_relaxed); }

 private:
  using Members = absl::btree_map<uint64_t, std::shared_ptr<Subscriber>>;
  struct Node {
    absl::flat_hash_map<std::string, std::unique_ptr<Node>> children;
    std::unique_ptr<Node> star;  // `*` here
    Members here;                // patterns that end at this node
    Members rest;                // patterns with `>` after this node
    bool empty() const { return children.empty() && !star && here.empty() && rest.empty(); }
  };
  static void MatchFrom(const Node& node, const std::vector<absl::string_view>& segments, size_t i,
                        std::vector<std::shared_ptr<Subscriber>>* out);

  const std::function<void(absl::string_view, bool)> on_interest_;
  mutable Mutex mu_;
  Node root_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{0};
  std::atomic<size_t> pattern_count_{0};
  std::atomic<size_t> subscription_count_{0};
};

}  // namespace fanout

#endif  // FANOUT_CORE_PATTERN_INDEX_H_
