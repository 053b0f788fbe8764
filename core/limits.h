#ifndef FANOUT_CORE_LIMITS_H_
#define FANOUT_CORE_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace fanout {

// Limits shared by the gRPC and WebSocket sides. Every field has a flag of the
// same name in fanoutd (see docs/operations.md) and a metric that counts when
// it is hit.
struct Limits {
  // Longest accepted topic name, in bytes.
  size_t max_topic_length = 256;
  // Largest accepted publish payload, in bytes.
  size_t max_payload_bytes = 1 << 20;
  // Most topics one connection may subscribe to.
  size_t max_subscriptions_per_connection = 1000;
  // Most topics with at least one subscriber on the node; a subscription that
  // would add one more is refused (RESOURCE_EXHAUSTED).
  size_t max_topics = 1'000'000;
  // Memory that accepted, not yet written deliveries may hold (see
  // DeliveryBudget); over it, publishes are refused as overloaded.
  int64_t max_pending_publish_bytes = int64_t{64} << 20;
  // Most topics kept without subscribers (their position for --topic_ttl,
  // their history); beyond it a topic losing its last subscriber is
  // forgotten at once.
  size_t max_retained_topics = 100'000;
  // Memory all topics' histories may hold; beyond it the oldest messages of
  // the topic being published to go first.
  int64_t max_history_bytes = int64_t{64} << 20;
};

}  // namespace fanout

#endif  // FANOUT_CORE_LIMITS_H_
