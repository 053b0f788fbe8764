#ifndef FANOUT_CORE_HISTORY_H_
#define FANOUT_CORE_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/message.h"
#include "core/topic_pattern.h"

namespace fanout {

// Where a topic stands: the `seq` of its latest message within `epoch`, a
// string that changes only when the topic's history is lost (a standalone
// node restarting, a topic forgotten after --topic_ttl). A client that saw
// (epoch, seq) can tell a gap (same epoch, a later seq) from a reset (a new
// epoch).
struct TopicPosition {
  uint64_t seq = 0;
  std::string epoch;
};

// How much of a topic's past the node keeps: the last `size` messages, none
// older than `ttl`. Off when either is zero.
struct HistoryPolicy {
  size_t size = 0;
  absl::Duration ttl = absl::ZeroDuration();
  bool enabled() const { return size > 0 && ttl > absl::ZeroDuration(); }
};

// The policies of a node: a default (--history_size, --history_ttl) and
// overrides by pattern (--history=chat.>:100:10m,news.*:10:1h), the first
// matching override winning.
// Immutable after Parse. Thread: safe from any thread.
class HistoryConfig {
 public:
  HistoryConfig() = default;
  // `overrides` is PATTERN:SIZE:TTL,... (TTL as an absl duration: 90s, 10m,
  // 1h); INVALID_ARGUMENT naming the bad entry otherwise.
  static absl::StatusOr<HistoryConfig> Parse(HistoryPolicy default_policy,
                                             absl::string_view overrides, size_t max_topic_length);
  HistoryPolicy For(absl::string_view topic) const;
  // Whether any topic can have history.
  bool any() const;
  // The longest ttl of any policy (how long a retained topic may need to stay).
  absl::Duration longest_ttl() const;
  // The policies one by one: the default first (`pattern` empty), then the
  // overrides in order. RuleOf says which one decides a topic's history: 0
  // for the default, i + 1 for the i-th override (the first that matches).
  struct Rule {
    std::string pattern;
    HistoryPolicy policy;
  };
  std::vector<Rule> rules() const;
  size_t RuleOf(absl::string_view topic) const;

 private:
  HistoryPolicy default_;
  std::vector<std::pair<TopicPattern, HistoryPolicy>> overrides_;
};

// One kept message, as published: it is encoded again for whoever recovers it
// (recovery is rare, and the formats wanted then are not known now).
// Immutable; shared between a topic's history and the recoveries reading it.
struct HistoryEntry {
  uint64_t seq = 0;
  absl::Time at;
  std::string payload;
  std::optional<PayloadKind> kind;
  // What the entry costs the history budget (--max_history_bytes).
  int64_t cost() const { return static_cast<int64_t>(sizeof(HistoryEntry) + 32 + payload.size()); }
};

// A topic's kept messages, oldest first: a std::deque made only when the
// first message is kept and freed when the last one goes. libstdc++'s deque
// allocates about 600 bytes as it is constructed, which every topic without
// history (most of them, one per connection in some apps) would otherwise pay.
// Thread: not thread-safe; its topic's stripe lock guards it.
class KeptMessages {
 public:
  using Entry = std::shared_ptr<const HistoryEntry>;
  using const_iterator = std::deque<Entry>::const_iterator;

  bool empty() const { return q_ == nullptr; }
  size_t size() const { return q_ ? q_->size() : 0; }
  const Entry& front() const { return q_->front(); }
  void push_back(Entry e) {
    if (!q_) q_ = std::make_unique<std::deque<Entry>>();
    q_->push_back(std::move(e));
  }
  void pop_front() {
    q_->pop_front();
    if (q_->empty()) q_.reset();
  }
  const_iterator begin() const { return q_ ? q_->cbegin() : None().cbegin(); }
  const_iterator end() const { return q_ ? q_->cend() : None().cend(); }

 private:
  static const std::deque<Entry>& None() {
    static const std::deque<Entry>* none = new std::deque<Entry>();
    return *none;
  }
  std::unique_ptr<std::deque<Entry>> q_;  // null when empty
};

// A topic's kept messages after a position (all of them without one), oldest
// first: what History answers and a recovery replays. `complete` is false
// when they do not reach back to since.seq + 1, or since names another epoch
// (then `entries` is empty). `known`: the topic has a position.
struct HistoryPage {
  bool known = false;
  TopicPosition position;
  std::vector<std::shared_ptr<const HistoryEntry>> entries;
  bool complete = false;
};

}  // namespace fanout

#endif  // FANOUT_CORE_HISTORY_H_
