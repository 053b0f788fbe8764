#include "cluster/nats_subjects.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace fanout {

std::string TopicTokens(absl::string_view topic) {
  std::string out;
  out.reserve(topic.size() + 2);
  bool first = true;
  for (absl::string_view segment : absl::StrSplit(topic, '.')) {
    if (!first) out.push_back('.');
    first = false;
    if (segment.empty()) {
      out.push_back('~');
    } else {
      out.append(segment.data(), segment.size());
    }
  }
  return out;
}

std::string HistoryRuleId(absl::string_view pattern) {
  if (pattern.empty()) return "d";
  uint32_t h = 2166136261u;  // FNV-1a, 32 bits: stable across builds and hosts
  for (unsigned char c : pattern) {
    h ^= c;
    h *= 16777619u;
  }
  return absl::StrFormat("%08x", h);
}

std::string HistoryIngestPrefix(absl::string_view rule_id) {
  return absl::StrCat(kHistoryIngestPrefix, rule_id, ".");
}

std::string IngestSubject(absl::string_view topic, absl::string_view prefix) {
  return topic.empty() ? absl::StrCat(prefix, kBroadcastToken)
                       : absl::StrCat(prefix, TopicTokens(topic));
}

std::string DeliverySubject(absl::string_view topic) {
  return topic.empty() ? absl::StrCat(kDeliveryPrefix, kBroadcastToken)
                       : absl::StrCat(kDeliveryPrefix, TopicTokens(topic));
}

bool TopicOfSubject(absl::string_view subject, std::string* topic, bool* broadcast) {
  *broadcast = false;
  if (!absl::ConsumePrefix(&subject, kDeliveryPrefix) &&
      !absl::ConsumePrefix(&subject, kIngestPrefix)) {
    // fanout.h<rule id>.<tokens>
    if (!absl::ConsumePrefix(&subject, kHistoryIngestPrefix)) return false;
    size_t dot = subject.find('.');
    if (dot == 0 || dot == absl::string_view::npos) return false;
    for (char c : subject.substr(0, dot)) {
      if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'z')) return false;
    }
    subject.remove_prefix(dot + 1);
  }
  if (subject == kBroadcastToken) {
    *broadcast = true;
    return false;
  }
  if (subject.empty()) return false;
  topic->clear();
  bool first = true;
  for (absl::string_view token : absl::StrSplit(subject, '.')) {
    if (!first) topic->push_back('.');
    first = false;
    if (token == "~") continue;  // an empty segment
    if (token.empty() || token[0] == '~') return false;
    topic->append(token.data(), token.size());
  }
  return true;
}

}  // namespace fanout
