#include "core/pattern_index.h"

#include "absl/strings/str_split.h"

namespace fanout {

PatternIndex::PatternIndex(std::function<void(absl::string_view, bool)> on_interest)
    : on_interest_(std::move(on_interest)) {}
PatternIndex::~PatternIndex() = default;

bool PatternIndex::Add(const TopicPattern& pattern, std::shared_ptr<Subscriber> subscriber,
                       bool* first) {
  std::vector<absl::string_view> segments = absl::StrSplit(pattern.text(), '.');
  MutexLock lock(&mu_);
  Node* node = &root_;
  Members* members = nullptr;
  for (size_t i = 0; i < segments.size(); ++i) {
    absl::string_view seg = segments[i];
    if (seg == ">") {  // always the last segment
      members = &node->rest;
      break;
    }
    std::unique_ptr<Node>& next =
        seg == "*" ? node->star : node->children[std::string(seg)];
    if (!next) next = std::make_unique<Node>();
    node = next.get();
  }
  if (members == nullptr) members = &node->here;
  *first = members->empty();
  uint64_t id = subscriber->id();
  bool added = members->try_emplace(id, std::move(subscriber)).second;
  if (added) {
    subscription_count_.fetch_add(1, std::memory_order_relaxed);
    if (*first) {
      pattern_count_.fetch_add(1, std::memory_order_relaxed);
      if (on_interest_) on_interest_(pattern.text(), true);
    }
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  return added;
}

bool PatternIndex::Remove(absl::string_view text, uint64_t id, bool* last) {
  std::vector<absl::string_view> segments = absl::StrSplit(text, '.');
  MutexLock lock(&mu_);
  // The path down, to prune the nodes left empty.
  std::vector<std::pair<Node*, absl::string_view>> path;
  Node* node = &root_;
  Members* members = nullptr;
  for (absl::string_view seg : segments) {
    if (seg == ">") {
      members = &node->rest;
      break;
    }
    Node* next = nullptr;
    if (seg == "*") {
      next = node->star.get();
    } else if (auto it = node->children.find(seg); it != node->children.end()) {
      next = it->second.get();
    }
    if (next == nullptr) return false;
    path.emplace_back(node, seg);
    node = next;
  }
  if (members == nullptr) members = &node->here;
  if (members->erase(id) == 0) return false;
  *last = members->empty();
  subscription_count_.fetch_sub(1, std::memory_order_relaxed);
  if (*last) {
    pattern_count_.fetch_sub(1, std::memory_order_relaxed);
    if (on_interest_) on_interest_(text, false);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  // Prune from the bottom: a node with nothing below or in it goes.
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    auto [parent, seg] = *it;
    Node* child = seg == "*" ? parent->star.get() : parent->children.find(seg)->second.get();
    if (!child->empty()) break;
    if (seg == "*") {
      parent->star.reset();
    } else {
      parent->children.erase(parent->children.find(seg));
    }
  }
  return true;
}

void PatternIndex::MatchFrom(const Node& node, const std::vector<absl::string_view>& segments,
                             size_t i, std::vector<std::shared_ptr<Subscriber>>* out) {
  if (i < segments.size()) {
    // `>` matches one or more remaining segments.
    for (const auto& [id, sub] : node.rest) out->push_back(sub);
  }
  if (i == segments.size()) {
    for (const auto& [id, sub] : node.here) out->push_back(sub);
    return;
  }
  if (auto it = node.children.find(segments[i]); it != node.children.end()) {
    MatchFrom(*it->second, segments, i + 1, out);
  }
  if (node.star) MatchFrom(*node.star, segments, i + 1, out);
}

void PatternIndex::Match(absl::string_view topic,
                         std::vector<std::shared_ptr<Subscriber>>* out) const {
  if (pattern_count() == 0) return;
  std::vector<absl::string_view> segments = absl::StrSplit(topic, '.');
  MutexLock lock(&mu_);
  MatchFrom(root_, segments, 0, out);
}

}  // namespace fanout
