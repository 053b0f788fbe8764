#include "core/history.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fanout {

absl::StatusOr<HistoryConfig> HistoryConfig::Parse(HistoryPolicy default_policy,
                                                   absl::string_view overrides,
                                                   size_t max_topic_length) {
  HistoryConfig config;
  config.default_ = default_policy;
  for (absl::string_view entry : absl::StrSplit(overrides, ',', absl::SkipWhitespace())) {
    // PATTERN:SIZE:TTL, split from the right: ':' is a topic character.
    size_t last = entry.rfind(':');
    size_t middle = last == absl::string_view::npos || last == 0 ? absl::string_view::npos
                                                                  : entry.rfind(':', last - 1);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--history entry '", entry, "': ", why, " (expected PATTERN:SIZE:TTL)"));
    };
    if (middle == absl::string_view::npos) return bad("not PATTERN:SIZE:TTL");
    absl::string_view pattern_text = entry.substr(0, middle);
    absl::string_view size_text = entry.substr(middle + 1, last - middle - 1);
    absl::string_view ttl_text = entry.substr(last + 1);
    absl::StatusOr<TopicPattern> pattern = TopicPattern::Parse(pattern_text, max_topic_length);
    if (!pattern.ok()) return bad(pattern.status().message());
    HistoryPolicy policy;
    if (!absl::SimpleAtoi(size_text, &policy.size)) return bad("SIZE is not a whole number");
    if (!absl::ParseDuration(ttl_text, &policy.ttl) || policy.ttl < absl::ZeroDuration()) {
      return bad("TTL is not a duration such as 90s, 10m or 1h");
    }
    // First match wins: a rule every one of whose topics an earlier rule
    // already takes would never apply, which is a mistake, not a setting.
    for (const auto& [earlier, unused] : config.overrides_) {
      if (pattern->IsCoveredBy(earlier)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--history entry '", entry, "' never applies: '", earlier.text(),
            "' comes first and takes every topic it matches (first match wins: put the "
            "narrower rule first)"));
      }
    }
    config.overrides_.emplace_back(*std::move(pattern), policy);
  }
  return config;
}

HistoryPolicy HistoryConfig::For(absl::string_view topic) const {
  for (const auto& [pattern, policy] : overrides_) {
    if (pattern.Matches(topic)) return policy;
  }
  return default_;
}

bool HistoryConfig::any() const {
  if (default_.enabled()) return true;
  return std::any_of(overrides_.begin(), overrides_.end(),
                     [](const auto& o) { return o.second.enabled(); });
}

absl::Duration HistoryConfig::longest_ttl() const {
  absl::Duration longest = default_.enabled() ? default_.ttl : absl::ZeroDuration();
  for (const auto& [pattern, policy] : overrides_) {
    if (policy.enabled()) longest = std::max(longest, policy.ttl);
  }
  return longest;
}

std::vector<HistoryConfig::Rule> HistoryConfig::rules() const {
  std::vector<Rule> out{{"", default_}};
  for (const auto& [pattern, policy] : overrides_) out.push_back({pattern.text(), policy});
  return out;
}

size_t HistoryConfig::RuleOf(absl::string_view topic) const {
  for (size_t i = 0; i < overrides_.size(); ++i) {
    if (overrides_[i].first.Matches(topic)) return i + 1;
  }
  return 0;
}

}  // namespace fanout
