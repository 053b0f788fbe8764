#ifndef FANOUT_CORE_TOPIC_PATTERN_H_
#define FANOUT_CORE_TOPIC_PATTERN_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout {

// A pattern over topic names, the one matcher used for permissions (and for
// wildcard subscriptions and Watch): an exact topic, or `.`-separated
// segments where a segment `*` matches exactly one segment and a final
// segment `>` matches one or more. `*`, `>`, `{` and `}` are outside the
// topic alphabet, so every topic is a pattern that matches only itself.
//   orders.*      matches orders.eu, not orders or orders.eu.1
//   orders.>      matches orders.eu and orders.eu.1, not orders
//   >             matches every topic
// Immutable; cheap to copy (the segments are shared).
// Thread: safe from any thread.
class TopicPattern {
 public:
  // INVALID_ARGUMENT (with a message naming the problem, safe to show to
  // clients): empty, over `max_length` bytes, a character outside the topic
  // alphabet and `*`/`>`, a `*` or `>` that is not a whole segment, or a `>`
  // that is not the last segment.
  static absl::StatusOr<TopicPattern> Parse(absl::string_view text, size_t max_length);

  bool Matches(absl::string_view topic) const;
  // True when every topic this pattern matches is matched by `wider` too (a
  // pattern subscription is permitted when a permission covers it).
  bool IsCoveredBy(const TopicPattern& wider) const;
  // True when the pattern has no wildcard: it names one topic.
  bool exact() const { return exact_; }
  const std::string& text() const { return text_; }

 private:
  enum class Kind : unsigned char { kLiteral, kOne, kRest };
  struct Segment {
    Kind kind;
    std::string literal;
  };
  TopicPattern() = default;

  std::string text_;
  bool exact_ = true;
  std::shared_ptr<const std::vector<Segment>> segments_;
};

// Whether `text` is a wildcard pattern (has `*` or `>`, which no topic has)
// rather than a topic name.
inline bool IsPattern(absl::string_view text) {
  return text.find_first_of("*>") != absl::string_view::npos;
}

// What a client may do: the topics it may subscribe to and publish to, as
// patterns. Empty sets permit nothing; AllowAll() permits everything.
// Immutable after construction; shared by the connections that hold it.
// Thread: safe from any thread.
class Permissions {
 public:
  Permissions() = default;
  Permissions(std::vector<TopicPattern> subscribe, std::vector<TopicPattern> publish)
      : subscribe_(std::move(subscribe)), publish_(std::move(publish)) {}

  // Subscribe to anything, publish to nothing: a node without keys.
  static Permissions SubscribeAnything(std::vector<TopicPattern> publish);

  bool MaySubscribe(absl::string_view topic) const { return Any(subscribe_, topic); }
  bool MayPublish(absl::string_view topic) const { return Any(publish_, topic); }
  // A pattern subscription: permitted when one permission covers the whole
  // pattern.
  bool MaySubscribePattern(const TopicPattern& pattern) const;
  // A subscription to `text`, a valid topic or pattern.
  bool MaySubscribeTopicOrPattern(absl::string_view text) const;

  const std::vector<TopicPattern>& subscribe() const { return subscribe_; }
  const std::vector<TopicPattern>& publish() const { return publish_; }

 private:
  static bool Any(const std::vector<TopicPattern>& patterns, absl::string_view topic);

  std::vector<TopicPattern> subscribe_;
  std::vector<TopicPattern> publish_;
};

// Parses permission patterns as a token states them, with `{sub}` standing
// for `subject`. A pattern whose `{sub}` cannot be filled safely (a subject
// that is empty or has a character outside the topic alphabet, or a `.`,
// which would let a crafted subject reach other users' topics) is dropped,
// as is one that does not parse; `dropped` (if given) receives why.
std::vector<TopicPattern> ParsePermissionPatterns(const std::vector<std::string>& patterns,
                                                  absl::string_view subject, size_t max_length,
                                                  std::vector<std::string>* dropped = nullptr);

}  // namespace fanout

#endif  // FANOUT_CORE_TOPIC_PATTERN_H_
