#ifndef FANOUT_CORE_TOPIC_H_
#define FANOUT_CORE_TOPIC_H_

#include <cstddef>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace fanout {

// Returns OK when `topic` is a valid topic name: 1 to `max_length` bytes, each
// one of [A-Za-z0-9_.:@/-]. Otherwise INVALID_ARGUMENT with a message that
// names the problem (safe to show to clients).
absl::Status ValidateTopic(absl::string_view topic, size_t max_length);

}  // namespace fanout

#endif  // FANOUT_CORE_TOPIC_H_
