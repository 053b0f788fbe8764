#include "ws/upgrade_request.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/topic.h"

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
        if (absl::Status s = ValidateTopic(t, limits.max_topic_length); !s.ok()) {
          return UpgradeRefusal{400, absl::StrCat("invalid topic '", t, "': ", s.message(), "\n"),
                                true};
        }
        p.topics.emplace_back(t);
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
  return p;
}

}  // namespace fanout
