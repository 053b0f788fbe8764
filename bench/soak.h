#ifndef FANOUT_BENCH_SOAK_H_
#define FANOUT_BENCH_SOAK_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/json.h"
#include "bench/scenarios.h"

namespace fanout {

// The soak scenario (docs/reliability.md): for config.duration, against a
// real node, everything at once — connection churn with every ending style,
// slow and stalled readers, ping floods, malformed frames and control
// messages, admin Disconnects, publish bursts above capacity over unary calls,
// batches and a stream, Watch streams opened and cancelled, half-sent
// handshakes — while config.subscribers well-behaved subscribers check by
// `seq` that they receive every message accepted for their topics.
//
// Fails when a well-behaved subscriber lost, duplicated or reordered a
// message, when the node's gauges do not come back to the well-behaved
// connections alone, or when its RSS does not come back within the stated
// margin of where it started.
absl::Status RunSoak(const BenchConfig& config, const Target& target, JsonObject* figures,
                     std::vector<std::string>* summary);

}  // namespace fanout

#endif  // FANOUT_BENCH_SOAK_H_
