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
};

}  // namespace fanout

#endif  // FANOUT_CORE_LIMITS_H_
