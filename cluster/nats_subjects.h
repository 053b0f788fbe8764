#ifndef FANOUT_CLUSTER_NATS_SUBJECTS_H_
#define FANOUT_CLUSTER_NATS_SUBJECTS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fanout {

// How topics map onto NATS subjects (docs/operations.md, "Cluster").
//
// A topic's `.`-separated segments become the subject's tokens, so that a
// topic pattern maps token for token onto a NATS wildcard. fanout's topic
// alphabet ([A-Za-z0-9_.:@/-]) has no NATS wildcard, no whitespace and no
// `~`, so the only segment NATS refuses, the empty one (`a..b`, `.a`), is
// written `~`: the mapping is one-to-one, and tokens starting with `~` are
// left for fanout's own subjects (`~b`, the broadcasts).
//
//   fanout.t.<topic>   publishes into the JetStream stream FANOUT (never
//                      subscribed): topics without history
//   fanout.h.<topic>   the same into FANOUT_HISTORY: topics whose --history
//                      policy keeps messages
//   fanout.d.<topic>   what either stream republishes once a message is
//                      stored, in stream order: every node with interest
//                      subscribes
//   fanout.t.~b, fanout.d.~b   the same for broadcasts; every node subscribes

inline constexpr char kIngestPrefix[] = "fanout.t.";
inline constexpr char kDeliveryPrefix[] = "fanout.d.";
inline constexpr char kStreamSubjects[] = "fanout.t.>";
inline constexpr char kHistoryIngestPrefix[] = "fanout.h.";
inline constexpr char kHistoryStreamSubjects[] = "fanout.h.>";
inline constexpr char kRepublishSubjects[] = "fanout.d.>";
inline constexpr char kBroadcastToken[] = "~b";

// The tokens of `topic` (a valid topic) as a subject's tail.
std::string TopicTokens(absl::string_view topic);
// `fanout.t.<tokens>` (`fanout.h.<tokens>` for a topic with history) and
// `fanout.d.<tokens>`; a broadcast when `topic` is empty.
std::string IngestSubject(absl::string_view topic, bool history = false);
std::string DeliverySubject(absl::string_view topic);
// The topic of a subject made by DeliverySubject or IngestSubject: false for
// any other subject, and for the broadcasts' (then `*broadcast` is true).
bool TopicOfSubject(absl::string_view subject, std::string* topic, bool* broadcast);

}  // namespace fanout

#endif  // FANOUT_CLUSTER_NATS_SUBJECTS_H_
