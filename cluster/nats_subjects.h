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
//   fanout.h<r>.<topic>  the same into the history stream of the --history
//                      rule that decides the topic's policy, when it keeps
//                      messages: <r> is `d` for the default (--history_size,
//                      --history_ttl; stream FANOUT_HISTORY), or 8 hex digits
//                      of a hash of an override's pattern (FANOUT_HISTORY_<r>),
//                      so reordering the rules moves no topic
//   fanout.d.<topic>   what either stream republishes once a message is
//                      stored, in stream order: every node with interest
//                      subscribes
//   fanout.t.~b, fanout.d.~b   the same for broadcasts; every node subscribes

inline constexpr char kIngestPrefix[] = "fanout.t.";
inline constexpr char kDeliveryPrefix[] = "fanout.d.";
inline constexpr char kStreamSubjects[] = "fanout.t.>";
inline constexpr char kHistoryIngestPrefix[] = "fanout.h";  // then the rule's id and "."
inline constexpr char kRepublishSubjects[] = "fanout.d.>";
inline constexpr char kBroadcastToken[] = "~b";

// The tokens of `topic` (a valid topic) as a subject's tail.
std::string TopicTokens(absl::string_view topic);
// A --history rule's id: `d` for the default policy (`pattern` empty), else
// 8 hex digits of the pattern's FNV-1a hash.
std::string HistoryRuleId(absl::string_view pattern);
// `fanout.h<id>.`: the ingest prefix of a history rule's stream.
std::string HistoryIngestPrefix(absl::string_view rule_id);
// `<prefix><tokens>` (`fanout.t.` without history, a rule's
// HistoryIngestPrefix with) and `fanout.d.<tokens>`; a broadcast when
// `topic` is empty.
std::string IngestSubject(absl::string_view topic, absl::string_view prefix = kIngestPrefix);
std::string DeliverySubject(absl::string_view topic);
// The topic of a subject made by DeliverySubject or IngestSubject: false for
// any other subject, and for the broadcasts' (then `*broadcast` is true).
bool TopicOfSubject(absl::string_view subject, std::string* topic, bool* broadcast);

}  // namespace fanout

#endif  // FANOUT_CLUSTER_NATS_SUBJECTS_H_
