// fanout-bench: a load generator for fanoutd. Starts the server pinned to one
// core (or uses a running one), drives one scenario from the other core, and
// prints a human summary on stderr and one JSON line on stdout, also appended
// to the results file. See docs/performance.md.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/frame_parser.h"
#include "bench/json.h"
#include "bench/scenarios.h"
#include "bench/server_process.h"
#include "bench/system.h"

ABSL_FLAG(std::string, scenario, "",
          "What to measure: fanout, many-topics, idle, connect, publish, slow, large, recovery "
          "(clients coming back at once with a position, replayed what they missed), soak (everything "
          "an outside party can do at once, checking nothing accepted is lost: docs/reliability.md), "
          "or echo (the client against a trivial in-process server)");
ABSL_FLAG(int64_t, missed, 100,
          "recovery: messages each returning client missed (the started server keeps that many "
          "per topic: --history_size)");
ABSL_FLAG(bool, self_test, false, "Same as --scenario=echo: shows how fast the client can receive");
ABSL_FLAG(std::string, fanoutd, "", "fanoutd to start (default: ../service/fanoutd next to this binary)");
ABSL_FLAG(int, server_cpu, 0, "CPU the started server (or the echo server) is pinned to; -1: not pinned");
ABSL_FLAG(int, client_cpu, 1, "CPU this tool is pinned to; -1: not pinned");
ABSL_FLAG(int, nice, 0,
          "Niceness of this tool and of the started server; negative values (as root) keep other "
          "work on a shared machine from taking the benchmark's cores");
ABSL_FLAG(int, server_io_threads, 1, "--io_threads of the started server");
ABSL_FLAG(int64_t, server_queue_bytes, -1,
          "--max_outbound_queue_bytes of the started server; -1: scenario default (slow: 16384 so "
          "stalled readers reach it within seconds; others: the server's own default, 4 MiB)");
ABSL_FLAG(std::vector<std::string>, server_args, {}, "More fanoutd flags, comma-separated");
ABSL_FLAG(std::string, server_log, "", "File for the started server's stderr (default /tmp/fanout-bench-fanoutd.PID.log)");
ABSL_FLAG(std::string, grpc, "", "gRPC address of a running server (with --ws: do not start one)");
ABSL_FLAG(std::string, ws, "", "WebSocket address HOST:PORT of a running server");
ABSL_FLAG(int, server_pid, 0, "PID of the running server, for its CPU and RSS figures");
ABSL_FLAG(int64_t, subscribers, -1,
          "WebSocket connections; 0: as many as the open-files limit allows; -1: scenario default "
          "(fanout 10000, many-topics and idle: max, connect 10000, publish 1, slow 10000, large 1000, "
          "echo 10000, recovery 10000, soak 200 well-behaved subscribers)");
ABSL_FLAG(int64_t, subscribers_per_topic, -1,
          "Subscribers per topic; 0: all on one topic; -1: scenario default (many-topics and connect 10, "
          "idle 1, others 0)");
ABSL_FLAG(bool, pattern_subscribers, false,
          "Subscribers subscribe to a pattern matching their topic (its first segment as *) instead "
          "of the topic: what wildcard subscriptions cost per delivery");
ABSL_FLAG(double, rate, -1,
          "Publishes per second; 0: as fast as --publish_concurrency calls allow; -1: scenario default "
          "(fanout 100, many-topics 5000, slow 5, large 20, publish 0)");
ABSL_FLAG(int64_t, payload_bytes, -1,
          "Payload size, at least 20 (the stamp); -1: 64, slow 4096 (stalled readers reach the queue "
          "limit within seconds), large 65536");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Measurement window (slow runs two, publish three)");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "Publishing before the window, not counted");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10), "Longest wait for late messages after the window");
ABSL_FLAG(int, client_threads, 1, "Client threads, one io_context each");
ABSL_FLAG(std::string, client_poll, "block",
          "spin: client threads poll their io_context without sleeping, so the server never pays for "
          "waking them (an IPI, microseconds on a VM); block: they sleep in epoll_wait like a normal client");
ABSL_FLAG(int64_t, connect_concurrency, 512, "Connects in flight");
ABSL_FLAG(int, source_addresses, 4, "Spread connections over source addresses 127.0.0.1 .. 127.0.0.K");
ABSL_FLAG(int64_t, read_buffer_bytes, -1, "Read buffer per connection; -1: 4096, large 65536");
ABSL_FLAG(std::string, format, "raw", "Delivery format the subscribers ask for: raw or json");
ABSL_FLAG(int64_t, publish_concurrency, 64, "Publish calls in flight when --rate=0");
ABSL_FLAG(int, publish_streams, 2, "publish: PublishStream calls of the streaming run");
ABSL_FLAG(int, publish_batch, 100, "publish: messages per PublishBatch call of the batch run (at most 1000; 0: no batch run)");
ABSL_FLAG(int64_t, stream_window, 1000, "publish: requests a stream may have unanswered");
ABSL_FLAG(int64_t, max_in_flight, 1000, "Most publish calls in flight at a fixed rate (more are skipped and counted)");
ABSL_FLAG(int, grpc_channels, 2, "gRPC channels (HTTP/2 connections) the publisher spreads calls over");
ABSL_FLAG(double, slow_fraction, 0.01,
          "slow: stalled readers added for the second run, as a fraction of --subscribers");
ABSL_FLAG(int, slow_rcvbuf, 4096, "slow: SO_RCVBUF of the stalling subscribers, so the kernel holds little for them");
ABSL_FLAG(int, slow_mss, 1460,
          "slow: TCP_MAXSEG of the stalling subscribers; loopback's 64 KiB segments would let the "
          "server's kernel buffer ~4 MB for each (its send buffer grows with the MSS), Ethernet's do not; "
          "0: kernel default");
ABSL_FLAG(int64_t, idle_step, 2500, "idle: connections added between RSS samples");
ABSL_FLAG(int, echo_batch, 1, "echo: frames per write (1 is what a server without coalescing does)");
ABSL_FLAG(std::string, results, "bench/results/results.jsonl", "File the JSON line is appended to; empty: none");
ABSL_FLAG(std::string, label, "", "Free text stored with the result");
ABSL_FLAG(std::string, server_source, "",
          "What the server binary was built from (e.g. a commit), stored with the result: the "
          "commit field is the source tree's HEAD when the bench ran, which a binary may predate");
ABSL_FLAG(absl::Duration, timeout, absl::ZeroDuration(),
          "Hard limit for the whole run, after which everything is killed; 0: computed from the other flags");

#ifndef FANOUT_SOURCE_DIR
#define FANOUT_SOURCE_DIR "."
#endif

namespace fanout {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "fanout-bench: %s\n", message.c_str());
  std::exit(2);
}

struct ScenarioDefaults {
  int64_t subscribers;  // 0: max
  int64_t per_topic;
  double rate;
  int64_t payload;
  int64_t read_buffer;
  int64_t queue;
};

const std::map<std::string, ScenarioDefaults>& Defaults() {
  static const auto* defaults = new std::map<std::string, ScenarioDefaults>{
      {"fanout", {10000, 0, 100, 64, 4096, 0}},
      {"many-topics", {0, 10, 5000, 64, 4096, 0}},
      {"idle", {0, 1, 0, 64, 4096, 0}},
      {"connect", {10000, 10, 0, 64, 4096, 0}},
      {"publish", {1, 0, 0, 64, 4096, 0}},
      {"slow", {10000, 0, 5, 4096, 4096, 16384}},
      {"large", {1000, 0, 20, 65536, 65536, 0}},
      {"echo", {10000, 0, 0, 64, 4096, 0}},
      {"recovery", {10000, 0, 0, 64, 4096, 0}},
      {"soak", {200, 0, 0, 64, 4096, 262144}},
  };
  return *defaults;
}

// Descriptors this process keeps for itself besides the connections (gRPC,
// epoll, pipes); the server needs about as many.
constexpr uint64_t kReservedFiles = 256;

BenchConfig Resolve(const std::string& scenario, const FileLimit& files) {
  auto it = Defaults().find(scenario);
  if (it == Defaults().end()) {
    Die(absl::StrCat("--scenario must be one of: ", absl::StrJoin(ScenarioNames(), ", ")));
  }
  const ScenarioDefaults& d = it->second;
  auto pick = [](int64_t flag, int64_t fallback) { return flag >= 0 ? flag : fallback; };
  BenchConfig c;
  c.scenario = scenario;
  uint64_t max = files.soft > kReservedFiles ? files.soft - kReservedFiles : 1;
  int64_t subscribers = pick(absl::GetFlag(FLAGS_subscribers), d.subscribers);
  c.subscribers = subscribers == 0 ? max : static_cast<size_t>(subscribers);
  if (c.subscribers > max) {
    std::fprintf(stderr, "fanout-bench: --subscribers=%zu is over what the open-files limit (%llu) allows; using %llu\n",
                 c.subscribers, static_cast<unsigned long long>(files.soft), static_cast<unsigned long long>(max));
    c.subscribers = max;
  }
  c.subscribers_per_topic = static_cast<size_t>(pick(absl::GetFlag(FLAGS_subscribers_per_topic), d.per_topic));
  c.pattern_subscribers = absl::GetFlag(FLAGS_pattern_subscribers);
  c.rate = absl::GetFlag(FLAGS_rate) >= 0 ? absl::GetFlag(FLAGS_rate) : d.rate;
  int64_t payload = pick(absl::GetFlag(FLAGS_payload_bytes), d.payload);
  if (payload < static_cast<int64_t>(kStampDigits)) Die("--payload_bytes must be at least 20 (the send stamp)");
  c.payload_bytes = static_cast<size_t>(payload);
  c.duration = absl::GetFlag(FLAGS_duration);
  c.warmup = absl::GetFlag(FLAGS_warmup);
  c.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  if (c.duration <= absl::ZeroDuration() || c.warmup < absl::ZeroDuration()) {
    Die("--duration must be positive and --warmup not negative");
  }
  c.client_threads = std::max(1, absl::GetFlag(FLAGS_client_threads));
  c.connect_concurrency = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_connect_concurrency)));
  c.source_addresses = std::clamp(absl::GetFlag(FLAGS_source_addresses), 1, 250);
  c.read_buffer_bytes = static_cast<size_t>(std::max<int64_t>(1024, pick(absl::GetFlag(FLAGS_read_buffer_bytes), d.read_buffer)));
  std::string format = absl::GetFlag(FLAGS_format);
  if (format != "raw" && format != "json") Die("--format must be raw or json");
  c.json_format = format == "json";
  c.publish_concurrency = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_publish_concurrency)));
  c.publish_streams = std::max(1, absl::GetFlag(FLAGS_publish_streams));
  c.publish_batch = std::clamp(absl::GetFlag(FLAGS_publish_batch), 0, 1000);
  c.stream_window = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_stream_window)));
  c.max_in_flight = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_max_in_flight)));
  c.grpc_channels = std::max(1, absl::GetFlag(FLAGS_grpc_channels));
  c.slow_fraction = absl::GetFlag(FLAGS_slow_fraction);
  c.slow_rcvbuf = absl::GetFlag(FLAGS_slow_rcvbuf);
  c.slow_mss = absl::GetFlag(FLAGS_slow_mss);
  c.idle_step = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_idle_step)));
  c.echo_batch = std::max(1, absl::GetFlag(FLAGS_echo_batch));
  std::string poll = absl::GetFlag(FLAGS_client_poll);
  if (poll != "spin" && poll != "block") Die("--client_poll must be spin or block");
  c.busy_poll = poll == "spin";
  c.server_cpu = absl::GetFlag(FLAGS_server_cpu);
  c.client_cpu = absl::GetFlag(FLAGS_client_cpu);
  c.server_queue_bytes = static_cast<size_t>(pick(absl::GetFlag(FLAGS_server_queue_bytes), d.queue));
  c.missed = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_missed)));
  if (c.scenario == "publish" && c.subscribers != 1) c.subscribers = 1;
  // The echo server lives in this process and needs a descriptor per
  // connection too.
  if (c.scenario == "echo" && c.subscribers > max / 2) c.subscribers = max / 2;
  return c;
}

JsonObject ConfigJson(const BenchConfig& c) {
  JsonObject j;
  j.Add("subscribers", c.subscribers)
      .Add("subscribers_per_topic", c.subscribers_per_topic)
      .Add("pattern_subscribers", c.pattern_subscribers)
      .Add("rate", c.rate)
      .Add("payload_bytes", c.payload_bytes)
      .Add("duration_s", absl::ToDoubleSeconds(c.duration))
      .Add("warmup_s", absl::ToDoubleSeconds(c.warmup))
      .Add("client_threads", c.client_threads)
      .Add("connect_concurrency", c.connect_concurrency)
      .Add("source_addresses", c.source_addresses)
      .Add("read_buffer_bytes", c.read_buffer_bytes)
      .Add("format", c.json_format ? "json" : "raw")
      .Add("client_poll", c.busy_poll ? "spin" : "block")
      .Add("publish_concurrency", c.publish_concurrency)
      .Add("grpc_channels", c.grpc_channels)
      .Add("publish_streams", c.publish_streams)
      .Add("publish_batch", c.publish_batch)
      .Add("stream_window", c.stream_window)
      .Add("server_queue_bytes", c.server_queue_bytes);
  if (c.scenario == "slow") {
    j.Add("slow_fraction", c.slow_fraction).Add("slow_rcvbuf", c.slow_rcvbuf).Add("slow_mss", c.slow_mss);
  }
  if (c.scenario == "echo") j.Add("echo_batch", c.echo_batch);
  if (c.scenario == "recovery") j.Add("missed", c.missed);
  return j;
}

// The command-line flags of this tool, as given or defaulted.
JsonObject FlagsJson() {
  std::map<std::string, std::string> sorted;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "bench/main.cc")) sorted[std::string(name)] = flag->CurrentValue();
  }
  JsonObject j;
  for (const auto& [name, value] : sorted) j.Add(name, value);
  return j;
}

absl::Duration AutoTimeout(const BenchConfig& c) {
  if (c.scenario == "soak") return c.duration + absl::Minutes(5);
  int phases = c.scenario == "publish" ? 4 : (c.scenario == "slow" ? 2 : 1);
  absl::Duration phase = c.warmup + c.duration + c.drain_timeout + absl::Seconds(5);
  absl::Duration connect = absl::Seconds(30) + absl::Seconds(static_cast<double>(c.subscribers) / 500);
  absl::Duration idle = c.scenario == "idle" ? absl::Seconds(static_cast<double>(c.subscribers) / c.idle_step) : absl::ZeroDuration();
  return absl::Seconds(60) + connect + phases * phase + idle;
}

void StartWatchdog(absl::Duration timeout) {
  std::thread([timeout] {
    absl::SleepFor(timeout);
    std::fprintf(stderr, "fanout-bench: the run exceeded --timeout=%s; killing the server and exiting\n",
                 absl::FormatDuration(timeout).c_str());
    KillServerForWatchdog();
    _exit(3);
  }).detach();
}

}  // namespace
}  // namespace fanout

int main(int argc, char** argv) {
  using namespace fanout;
  absl::SetProgramUsageMessage(
      "fanout-bench: load generator for fanoutd.\n"
      "Usage: fanout-bench --scenario=fanout|many-topics|idle|connect|publish|slow|large|soak|echo [flags]\n"
      "Starts fanoutd pinned to --server_cpu (or uses --grpc/--ws), runs from --client_cpu, prints a\n"
      "summary on stderr and one JSON line on stdout, appended to --results.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::StrContains(file, "bench/main.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) Die(absl::StrCat("unexpected argument '", rest[1], "'"));

  std::string scenario = absl::GetFlag(FLAGS_self_test) ? "echo" : absl::GetFlag(FLAGS_scenario);
  if (scenario.empty()) Die("--scenario is required (see --help)");
  FileLimit files = RaiseFileLimit();  // before the server starts: it inherits the limit
  BenchConfig config = Resolve(scenario, files);
  absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout <= absl::ZeroDuration()) timeout = AutoTimeout(config);
  StartWatchdog(timeout);

  int client_cpu = absl::GetFlag(FLAGS_client_cpu);
  if (absl::Status s = PinToCpu(client_cpu); !s.ok()) Die(std::string(s.message()));
  int nice = absl::GetFlag(FLAGS_nice);
  if (nice != 0 && setpriority(PRIO_PROCESS, 0, nice) != 0) {
    Die(absl::StrCat("--nice=", nice, ": ", std::strerror(errno), " (negative values need root)"));
  }

  Machine machine = DescribeMachine();
  double load_at_start = LoadAverage();
  GitState git = DescribeGit(FANOUT_SOURCE_DIR);
  std::fprintf(stderr,
               "fanout-bench: %s on %d x %s, %s; open files %llu (was %llu, hard %llu); commit %s%s; "
               "client on CPU %d, server on CPU %d; load average %.2f\n",
               scenario.c_str(), machine.nproc, machine.cpu_model.c_str(), machine.kernel.c_str(),
               static_cast<unsigned long long>(files.soft), static_cast<unsigned long long>(files.soft_before),
               static_cast<unsigned long long>(files.hard), git.commit.empty() ? "unknown" : git.commit.c_str(),
               git.dirty ? " (dirty tree)" : "", client_cpu, config.server_cpu, load_at_start);

  JsonObject server_json;
  Target target;
  std::unique_ptr<ServerProcess> server;
  absl::Status status;
  if (scenario == "echo") {
    server_json.Add("mode", "echo").Add("cpu", config.server_cpu);
  } else if (!absl::GetFlag(FLAGS_grpc).empty() || !absl::GetFlag(FLAGS_ws).empty()) {
    if (absl::GetFlag(FLAGS_grpc).empty() || absl::GetFlag(FLAGS_ws).empty()) Die("--grpc and --ws go together");
    target.grpc_address = absl::GetFlag(FLAGS_grpc);
    target.ws_address = absl::GetFlag(FLAGS_ws);
    target.server_pid = absl::GetFlag(FLAGS_server_pid);
    server_json.Add("mode", "external").Add("pid", static_cast<int64_t>(target.server_pid));
  } else {
    ServerOptions options;
    options.binary = absl::GetFlag(FLAGS_fanoutd);
    if (options.binary.empty()) options.binary = SelfDirectory() + "/../service/fanoutd";
    options.cpu = config.server_cpu;
    options.nice = nice;
    options.args.push_back(absl::StrCat("--io_threads=", absl::GetFlag(FLAGS_server_io_threads)));
    if (config.server_queue_bytes > 0) {
      options.args.push_back(absl::StrCat("--max_outbound_queue_bytes=", config.server_queue_bytes));
      // fanoutd refuses a queue that cannot hold its largest frame (a
      // --max_payload_bytes payload in base64 in a JSON envelope): lower the
      // payload limit to what this queue holds, never below the scenario's.
      size_t fits = config.server_queue_bytes > 400 ? (config.server_queue_bytes - 400) / 4 * 3 : 0;
      options.args.push_back(
          absl::StrCat("--max_payload_bytes=", std::max(fits, config.payload_bytes)));
    }
    if (scenario == "recovery") {
      options.args.push_back(absl::StrCat("--history_size=", config.missed));
      options.args.push_back("--history_ttl=1h");
    }
    if (scenario == "soak") {
      // Timeouts short enough that idle clients and half-sent handshakes end
      // within the run, and budgets small enough that bursts reach them.
      for (const char* a : {"--idle_timeout=4s", "--handshake_timeout=2s",
                            "--max_pending_publish_bytes=8388608", "--max_pending_handshakes=400",
                            "--client_messages_per_second=200", "--client_message_burst=400",
                            "--max_watch_queue_messages=1000"}) {
        options.args.push_back(a);
      }
    }
    for (const auto& a : absl::GetFlag(FLAGS_server_args)) options.args.push_back(a);
    options.log_path = absl::GetFlag(FLAGS_server_log);
    if (options.log_path.empty()) options.log_path = absl::StrCat("/tmp/fanout-bench-fanoutd.", getpid(), ".log");
    auto started = ServerProcess::Start(options);
    if (!started.ok()) Die(std::string(started.status().message()));
    server = std::move(*started);
    target = {server->grpc_address(), server->ws_address(), server->pid()};
    std::error_code ec;
    auto built = std::filesystem::last_write_time(options.binary, ec);
    std::string built_at;
    if (!ec) {
      auto since = std::chrono::duration_cast<std::chrono::seconds>(
          built - std::filesystem::file_time_type::clock::now() + std::chrono::system_clock::now().time_since_epoch());
      built_at = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(since.count()), absl::UTCTimeZone());
    }
    server_json.Add("mode", "started")
        .Add("binary", std::filesystem::weakly_canonical(options.binary).string())
        .Add("binary_modified", built_at)
        .Add("source", absl::GetFlag(FLAGS_server_source))
        .Add("cpu", config.server_cpu)
        .Add("args", absl::StrJoin(options.args, " "))
        .Add("log", options.log_path);
    std::fprintf(stderr, "fanout-bench: started %s (pid %d) %s: gRPC %s, WebSocket %s; its log: %s\n",
                 options.binary.c_str(), server->pid(), absl::StrJoin(options.args, " ").c_str(),
                 target.grpc_address.c_str(), target.ws_address.c_str(), options.log_path.c_str());
  }

  JsonObject figures;
  std::vector<std::string> summary;
  status = RunScenario(config, target, &figures, &summary);
  if (server) {
    absl::Status stopped = server->Stop(absl::Seconds(30));
    server_json.Add("stopped", stopped.ok() ? "exit 0" : std::string(stopped.message()));
    if (!stopped.ok()) {
      std::fprintf(stderr, "fanout-bench: %s\n", std::string(stopped.message()).c_str());
      if (status.ok()) status = stopped;
    }
  }

  JsonObject machine_json;
  machine_json.Add("nproc", machine.nproc)
      .Add("load_average_at_start", load_at_start)
      .Add("cpu_model", machine.cpu_model)
      .Add("kernel", machine.kernel)
      .Add("mem_total_kib", machine.mem_total_kib);
  JsonObject files_json;
  files_json.Add("soft_before", files.soft_before).Add("soft", files.soft).Add("hard", files.hard);
  JsonObject client_json;
  client_json.Add("cpu", client_cpu).Add("threads", config.client_threads).Add("nice", nice);
  JsonObject record;
  record.Add("time", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone()))
      .Add("scenario", scenario)
      .Add("label", absl::GetFlag(FLAGS_label))
      .Add("ok", status.ok())
      .Add("error", std::string(status.message()))
      .Add("commit", git.commit)
      .Add("dirty", git.dirty)
      .Add("machine", machine_json)
      .Add("open_files", files_json)
      .Add("server", server_json)
      .Add("client", client_json)
      .Add("config", ConfigJson(config))
      .Add("flags", FlagsJson())
      .Add("figures", figures);
  std::string line = record.Serialize();
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  std::string results = absl::GetFlag(FLAGS_results);
  if (!results.empty()) {
    std::error_code ec;
    std::filesystem::path path(results);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    std::ofstream out(results, std::ios::app);
    if (out) {
      out << line << "\n";
    } else {
      std::fprintf(stderr, "fanout-bench: cannot append to %s\n", results.c_str());
    }
  }
  std::fprintf(stderr, "fanout-bench: ---- %s summary ----\n", scenario.c_str());
  for (const auto& s : summary) std::fprintf(stderr, "  %s\n", s.c_str());
  if (!status.ok()) {
    std::fprintf(stderr, "fanout-bench: %s FAILED: %s\n", scenario.c_str(), std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
