#include "core/topic.h"

#include "absl/strings/str_cat.h"

namespace fanout {
namespace {

constexpr bool IsTopicChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == ':' || c == '@' || c == '/' || c == '-';
}

}  // namespace

absl::Status ValidateTopic(absl::string_view topic, size_t max_length) {
  if (topic.empty()) return absl::InvalidArgumentError("topic is empty");
  if (topic.size() > max_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("topic is ", topic.size(), " bytes, longer than the limit of ", max_length));
  }
  for (size_t i = 0; i < topic.size(); ++i) {
    if (!IsTopicChar(static_cast<unsigned char>(topic[i]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "topic has a character outside [A-Za-z0-9_.:@/-] at byte ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace fanout
