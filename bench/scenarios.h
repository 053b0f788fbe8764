#ifndef FANOUT_BENCH_SCENARIOS_H_
#define FANOUT_BENCH_SCENARIOS_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bench/json.h"

namespace fanout {

// The names of the scenarios, in the order `bench/smoke.sh` runs them.
const std::vector<std::string>& ScenarioNames();

// A scenario's settings after the per-scenario defaults were applied to the
// flags (see --help of fanout-bench).
struct BenchConfig {
  std::string scenario;
  size_t subscribers = 0;
  size_t subscribers_per_topic = 0;  // 0: every subscriber on one topic
  // Subscribers follow a pattern matching their topic (`*.fanout` for
  // bench.fanout) instead of the topic itself.
  bool pattern_subscribers = false;
  double rate = 0;                   // publishes per second; 0: closed loop
  size_t payload_bytes = 64;
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration drain_timeout = absl::Seconds(10);
  int client_threads = 1;
  size_t connect_concurrency = 512;
  int source_addresses = 4;
  size_t read_buffer_bytes = 4096;
  bool json_format = false;
  size_t publish_concurrency = 64;
  int publish_streams = 2;
  int publish_batch = 100;  // publish: messages per PublishBatch of the batch run; 0: no batch run
  size_t stream_window = 1000;
  size_t max_in_flight = 1000;
  int grpc_channels = 2;
  double slow_fraction = 0.01;
  int slow_rcvbuf = 4096;
  int slow_mss = 1460;
  size_t idle_step = 2500;
  int echo_batch = 1;
  bool busy_poll = false;
  int server_cpu = 0;
  int client_cpu = 1;
  size_t server_queue_bytes = 0;  // what the server was told; 0: its default (4 MiB)
  size_t missed = 100;            // recovery: messages each returning client missed
};

// Where the server under test is. server_pid 0: unknown, no /proc figures.
struct Target {
  std::string grpc_address;
  std::string ws_address;
  pid_t server_pid = 0;
};

// Runs `config.scenario` against `target` (the echo scenario ignores it and
// starts its own server), adding its figures to `figures` and one-line
// summaries to `summary`. Fails when the scenario could not run or delivered
// nothing.
absl::Status RunScenario(const BenchConfig& config, const Target& target, JsonObject* figures,
                         std::vector<std::string>* summary);

}  // namespace fanout

#endif  // FANOUT_BENCH_SCENARIOS_H_
