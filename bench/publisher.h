#ifndef FANOUT_BENCH_PUBLISHER_H_
#define FANOUT_BENCH_PUBLISHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/histogram.h"
#include "fanout/v1/fanout.grpc.pb.h"

namespace fanout {

// What to publish: payloads of `payload_bytes` stamped with their send time,
// round robin over `topics`, during [start_ns, end_ns) of MonoNs().
struct PublishPlan {
  std::vector<std::string> topics;
  size_t payload_bytes = 64;
  // Publishes per second. 0: closed loop, `concurrency` calls always in flight.
  double rate = 0;
  // Closed loop: calls in flight. Fixed rate: the most in flight; a publish
  // due while all are busy is skipped and counted.
  size_t concurrency = 64;
  // > 0: each call is a PublishBatch of this many messages (stats count
  // messages; the latency is per call).
  size_t batch = 0;
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  // The measurement window; calls sent in it are counted apart.
  int64_t window_t0 = 0;
  int64_t window_t1 = 0;
};

struct PublishStats {
  uint64_t issued = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t skipped = 0;             // fixed rate only: no call slot free when due
  uint64_t subscribers_total = 0;   // sum of PublishResponse.subscribers
  uint64_t ok_in_window = 0;        // successful calls sent in the window
  uint64_t expected_in_window = 0;  // their deliveries (sum of subscribers)
  LatencyHistogram rpc_latency;     // call -> response, calls sent in the window
  std::string first_error;
};

// Publisher drives fanout.v1.Fanout/Publish (or PublishBatch) with the gRPC callback API over
// one or more channels (separate HTTP/2 connections).
// Thread: Run() and GetStats() from one controlling thread; completions run on
// gRPC's threads and never block.
class Publisher {
 public:
  // Connects `channels` channels to `target` and waits until they are ready.
  static absl::StatusOr<std::unique_ptr<Publisher>> Create(const std::string& target, int channels,
                                                           absl::Duration ready_timeout);

  // Publishes as `plan` says; returns when the plan ends and every call has
  // completed.
  PublishStats Run(const PublishPlan& plan);

  // Publishes over `streams` PublishStream calls as fast as they go, each
  // with at most `window` requests unanswered, until plan.end_ns; plan.rate
  // and plan.concurrency are ignored.
  PublishStats RunStreams(const PublishPlan& plan, int streams, size_t window);

  absl::StatusOr<v1::GetStatsResponse> GetStats();
  // One unary Publish, waited for (the recovery scenario needs its epoch).
  absl::StatusOr<v1::PublishResponse> PublishOne(const std::string& topic,
                                                 const std::string& payload);

 private:
  Publisher() = default;

  std::vector<std::unique_ptr<v1::Fanout::Stub>> stubs_;
};

}  // namespace fanout

#endif  // FANOUT_BENCH_PUBLISHER_H_
