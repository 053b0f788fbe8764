#include "ws/upgrade_request.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/topic.h"
#include "core/topic_pattern.h"

namespace fanout {

std::variant<UpgradeParams, UpgradeRefusal> ParseUpgradeParams(const boost::urls::url_view& target,
                                                                const UpgradeLimits& limits) {
  UpgradeParams p;
  for (auto param : target.params()) {
    if (param.key == "token") {
      p.token = param.value;
    } else if (param.key == "publish") {
      if (absl::Status s = ValidateTopic(param.value, limits.max_topic_length); !s.ok()) {
        return UpgradeRefusal{
            400, absl::StrCat("invalid publish topic '", param.value, "': ", s.message(), "\n"), true};
      }
      p.raw_publish = param.value;
    } else if (param.key == "topics") {
      for (absl::string_view t : absl::StrSplit(param.value, ',', absl::SkipEmpty())) {
        absl::Status s = IsPattern(t) ? TopicPattern::Parse(t, limits.max_topic_length).status()
                                      : ValidateTopic(t, limits.max_topic_length);
        if (!s.ok()) {
          return UpgradeRefusal{400, absl::StrCat("invalid topic '", t, "': ", s.message(), "\n"),
                                true};
        }
        p.topics.emplace_back(t);
      }
    } else if (param.key == "since") {
      for (absl::string_view e : absl::StrSplit(param.value, ',', absl::SkipEmpty())) {
        // TOPIC:SEQ:EPOCH, split from the right: ':' is a topic character.
        size_t last = e.rfind(':');
        size_t middle = last == absl::string_view::npos || last == 0 ? absl::string_view::npos
                                                                      : e.rfind(':', last - 1);
        TopicPosition pos;
        if (middle == absl::string_view::npos || middle == 0 ||
            !absl::SimpleAtoi(e.substr(middle + 1, last - middle - 1), &pos.seq) ||
            e.size() - last - 1 > kMaxEpochLength) {
          return UpgradeRefusal{400, absl::StrCat("invalid since entry '", e,
                                                  "': expected TOPIC:SEQ:EPOCH\n")};
        }
        pos.epoch = std::string(e.substr(last + 1));
        p.since.emplace_back(std::string(e.substr(0, middle)), std::move(pos));
      }
    } else if (param.key == "format") {
      if (param.value == "raw") {
        p.format = DeliveryFormat::kRaw;
      } else if (param.value != "json") {
        return UpgradeRefusal{400, "format must be json or raw\n"};
      }
    }
  }
  if (p.topics.size() > limits.max_topics) {
    return UpgradeRefusal{400, absl::StrCat("too many topics: the limit is ", limits.max_topics, "\n"),
                          true};
  }
  if (!p.raw_publish.empty() && p.format != DeliveryFormat::kRaw) {
    return UpgradeRefusal{400, "publish= is raw hub mode: it needs format=raw\n"};
  }
  for (const auto& [topic, pos] : p.since) {
    if (std::find(p.topics.begin(), p.topics.end(), topic) == p.topics.end()) {
      return UpgradeRefusal{400, absl::StrCat("since names '", topic,
                                              "', which is not one of topics=\n")};
    }
  }
  return p;
}

}  // namespace fanout
