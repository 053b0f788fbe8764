#include "cluster/nats_subjects.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

std::string IngestSubject(absl::string_view topic, bool history) {
  const char* prefix = history ? kHistoryIngestPrefix : kIngestPrefix;
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
      !absl::ConsumePrefix(&subject, kIngestPrefix) &&
      !absl::ConsumePrefix(&subject, kHistoryIngestPrefix)) {
    return false;
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
