#include "bench/scenarios.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/echo_server.h"
#include "bench/histogram.h"
#include "bench/publisher.h"
#include "bench/soak.h"
#include "bench/system.h"
#include "bench/ws_client.h"

namespace fanout {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;

// Progress and results go to stderr as they happen, and into the summary.
class Log {
 public:
  explicit Log(std::vector<std::string>* summary) : summary_(summary) {}
  void Say(std::string line) {
    std::fprintf(stderr, "fanout-bench: %s\n", line.c_str());
    summary_->push_back(std::move(line));
  }

 private:
  std::vector<std::string>* summary_;
};

std::string Count(double v) {
  // 1234567 -> "1,234,567"
  std::string digits = absl::StrFormat("%.0f", v);
  std::string out;
  size_t start = digits[0] == '-' ? 1 : 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > start && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string Topic(const BenchConfig& c, size_t i) {
  if (c.subscribers_per_topic == 0) return absl::StrCat("bench.", c.scenario);
  return absl::StrCat("bench.", c.scenario, ".", i / c.subscribers_per_topic);
}

// The distinct topics of subscribers [0, n).
std::vector<std::string> Topics(const BenchConfig& c, size_t n) {
  std::vector<std::string> topics;
  size_t count = c.subscribers_per_topic == 0 ? 1 : (n + c.subscribers_per_topic - 1) / c.subscribers_per_topic;
  for (size_t t = 0; t < std::max<size_t>(count, 1); ++t) {
    topics.push_back(Topic(c, t * std::max<size_t>(c.subscribers_per_topic, 1)));
  }
  return topics;
}

std::vector<ConnectionSpec> Specs(const BenchConfig& c, size_t from, size_t to) {
  std::vector<ConnectionSpec> specs;
  for (size_t i = from; i < to; ++i) {
    std::string topic = Topic(c, i);
    // bench.X[.N] -> *.X[.N]: matches that topic alone among the bench's.
    if (c.pattern_subscribers) topic = absl::StrCat("*", topic.substr(topic.find('.')));
    specs.push_back({std::move(topic), false});
  }
  return specs;
}

absl::StatusOr<std::unique_ptr<ClientFleet>> MakeFleet(const BenchConfig& c, const std::string& ws) {
  FleetOptions o;
  o.ws_address = ws;
  o.threads = c.client_threads;
  o.source_addresses = c.source_addresses;
  o.read_buffer_bytes = c.read_buffer_bytes;
  o.connect_concurrency = c.connect_concurrency;
  o.json_format = c.json_format;
  o.slow_rcvbuf = c.slow_rcvbuf;
  o.slow_mss = c.slow_mss;
  o.busy_poll = c.busy_poll;
  return ClientFleet::Create(o);
}

JsonObject LatencyJson(const LatencyHistogram& h) {
  JsonObject j;
  j.Add("samples", h.count())
      .Add("p50", Ms(h.Percentile(0.50)))
      .Add("p90", Ms(h.Percentile(0.90)))
      .Add("p99", Ms(h.Percentile(0.99)))
      .Add("p999", Ms(h.Percentile(0.999)))
      .Add("max", Ms(h.max()))
      .Add("mean", h.mean() / 1e6);
  return j;
}

std::string LatencyText(const LatencyHistogram& h) {
  return absl::StrFormat("p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms", Ms(h.Percentile(0.5)),
                         Ms(h.Percentile(0.99)), Ms(h.Percentile(0.999)), Ms(h.max()));
}

JsonObject ConnectJson(const ConnectResult& r) {
  double seconds = r.last_done_ns > r.first_start_ns
                       ? static_cast<double>(r.last_done_ns - r.first_start_ns) / 1e9
                       : 0;
  JsonObject j;
  j.Add("attempted", r.attempted)
      .Add("connected", r.connected)
      .Add("failed", r.failed)
      .Add("seconds", seconds)
      .Add("per_sec", seconds > 0 ? static_cast<double>(r.connected) / seconds : 0.0)
      .Add("handshake_ms", LatencyJson(r.handshake));
  if (!r.first_error.empty()) j.Add("first_error", r.first_error);
  return j;
}

std::string ConnectText(const ConnectResult& r) {
  double seconds = static_cast<double>(r.last_done_ns - r.first_start_ns) / 1e9;
  std::string text = absl::StrFormat(
      "%s of %s connections open in %.2f s (%s/s, upgrade p50 %.2f ms, p99 %.2f ms)", Count(r.connected),
      Count(r.attempted), seconds, Count(seconds > 0 ? r.connected / seconds : 0),
      Ms(r.handshake.Percentile(0.5)), Ms(r.handshake.Percentile(0.99)));
  if (r.failed > 0) absl::StrAppend(&text, "; ", Count(r.failed), " failed, first: ", r.first_error);
  return text;
}

// Samples the server (and the client) at the window's edges, and the server's
// RSS every 100 ms in between.
class Sampler {
 public:
  Sampler(pid_t pid, int64_t t0, int64_t t1, ClientFleet* fleet, Publisher* publisher)
      : pid_(pid), fleet_(fleet), publisher_(publisher) {
    thread_ = std::thread([this, t0, t1] {
      SleepUntilNs(t0);
      Sample(&at_t0_);
      for (int64_t at = t0 + kNsPerSec / 10; at < t1; at += kNsPerSec / 10) {
        SleepUntilNs(at);
        if (pid_ > 0) {
          if (auto s = ReadProcess(pid_); s.ok()) rss_peak_kib_ = std::max(rss_peak_kib_, s->rss_kib);
        }
      }
      SleepUntilNs(t1);
      Sample(&at_t1_);
    });
  }
  ~Sampler() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  struct Point {
    std::optional<ProcSample> server;
    std::optional<v1::GetStatsResponse> stats;
    double fleet_cpu = 0;
    double fleet_busy = 0;
    double self_cpu = 0;
    CpuTimes cpus;
  };
  const Point& at_t0() const { return at_t0_; }
  const Point& at_t1() const { return at_t1_; }
  int64_t rss_peak_kib() const { return rss_peak_kib_; }

 private:
  void Sample(Point* p) {
    if (pid_ > 0) {
      if (auto s = ReadProcess(pid_); s.ok()) {
        p->server = *s;
        rss_peak_kib_ = std::max(rss_peak_kib_, s->rss_kib);
      }
    }
    p->fleet_cpu = fleet_ ? fleet_->CpuSeconds() : 0;
    p->fleet_busy = fleet_ ? fleet_->BusySeconds() : 0;
    p->self_cpu = SelfCpuSeconds();
    p->cpus = ReadCpuTimes();
    if (publisher_) {
      if (auto s = publisher_->GetStats(); s.ok()) p->stats = *s;
    }
  }

  pid_t pid_;
  ClientFleet* fleet_;
  Publisher* publisher_;
  Point at_t0_, at_t1_;
  int64_t rss_peak_kib_ = 0;
  std::thread thread_;
};

struct LoadSpec {
  std::vector<std::string> topics;
  double rate = 0;
  size_t concurrency = 64;
  size_t payload_bytes = 64;
  // > 0: every publish should reach this many normal connections (the slow
  // scenario); 0: as many as the server said it reached.
  size_t normal_fanout = 0;
  // > 0: publish over this many PublishStream calls instead of unary calls.
  int streams = 0;
  // > 0: unary PublishBatch calls of this many messages.
  size_t batch = 0;
};

struct LoadOutcome {
  PublishStats publish;
  FleetSnapshot fleet;
  double window_s = 0;
  double drain_s = -1;  // window end -> last expected message; -1: never complete
  uint64_t expected = 0;
  uint64_t received = 0;
  uint64_t arrived_in_window = 0;  // by arrival time: the throughput
  std::optional<ProcSample> server_t0, server_t1;
  int64_t server_rss_peak_kib = 0;
  double fleet_cpu_s = 0;
  double fleet_busy_s = 0;
  double self_cpu_s = 0;
  std::optional<uint64_t> server_messages_out;  // GetStats delta over the window
  std::optional<uint64_t> server_slow_disconnects;
  std::vector<double> cpu_busy_percent;  // each CPU of the machine over the window

  int64_t loss() const { return static_cast<int64_t>(expected) - static_cast<int64_t>(received); }
  double deliveries_per_sec() const { return arrived_in_window / window_s; }
  double server_cpu_s() const {
    return server_t0 && server_t1 ? server_t1->cpu_seconds - server_t0->cpu_seconds : 0;
  }
};

// Publishes for warmup + duration and counts what the fleet receives from
// the publishes sent in the measurement window (after the warmup), waiting
// after it for late messages.
LoadOutcome RunLoad(const BenchConfig& c, pid_t pid, ClientFleet* fleet, Publisher* publisher,
                    const LoadSpec& spec) {
  LoadOutcome o;
  int64_t start = MonoNs() + kNsPerSec / 10;
  int64_t t0 = start + absl::ToInt64Nanoseconds(c.warmup);
  int64_t t1 = t0 + absl::ToInt64Nanoseconds(c.duration);
  o.window_s = static_cast<double>(t1 - t0) / 1e9;
  fleet->SetWindow(t0, t1);
  Sampler sampler(pid, t0, t1, fleet, publisher);
  PublishPlan plan;
  plan.topics = spec.topics;
  plan.payload_bytes = spec.payload_bytes;
  plan.rate = spec.rate;
  plan.concurrency = spec.rate > 0 ? c.max_in_flight : spec.concurrency;
  plan.start_ns = start;
  plan.end_ns = t1;
  plan.window_t0 = t0;
  plan.window_t1 = t1;
  plan.batch = spec.batch;
  o.publish = spec.streams > 0 ? publisher->RunStreams(plan, spec.streams, c.stream_window)
                               : publisher->Run(plan);
  sampler.Join();

  int64_t deadline = MonoNs() + absl::ToInt64Nanoseconds(c.drain_timeout);
  uint64_t last = 0;
  int64_t last_progress = MonoNs();
  for (;;) {
    o.fleet = fleet->Snapshot();
    o.expected = spec.normal_fanout > 0 ? o.publish.ok_in_window * spec.normal_fanout
                                        : o.publish.expected_in_window;
    o.received = o.fleet.normal.stamped_in_window + (spec.normal_fanout > 0 ? 0 : o.fleet.slow.stamped_in_window);
    int64_t now = MonoNs();
    if (o.received >= o.expected) {
      o.drain_s = std::max<double>(0, static_cast<double>(now - t1) / 1e9);
      break;
    }
    if (o.received != last) last_progress = now;
    last = o.received;
    if (now > deadline || now - last_progress > 3 * kNsPerSec) break;
    SleepUntilNs(now + kNsPerSec / 50);
  }
  o.arrived_in_window = o.fleet.normal.received_in_window + o.fleet.slow.received_in_window;
  o.server_t0 = sampler.at_t0().server;
  o.server_t1 = sampler.at_t1().server;
  o.server_rss_peak_kib = sampler.rss_peak_kib();
  o.fleet_cpu_s = sampler.at_t1().fleet_cpu - sampler.at_t0().fleet_cpu;
  o.fleet_busy_s = sampler.at_t1().fleet_busy - sampler.at_t0().fleet_busy;
  o.self_cpu_s = sampler.at_t1().self_cpu - sampler.at_t0().self_cpu;
  const CpuTimes& c0 = sampler.at_t0().cpus;
  const CpuTimes& c1 = sampler.at_t1().cpus;
  for (size_t i = 0; i < c0.busy.size() && i < c1.busy.size(); ++i) {
    double total = c1.total[i] - c0.total[i];
    o.cpu_busy_percent.push_back(total > 0 ? 100 * (c1.busy[i] - c0.busy[i]) / total : 0);
  }
  if (sampler.at_t0().stats && sampler.at_t1().stats) {
    o.server_messages_out = sampler.at_t1().stats->messages_out() - sampler.at_t0().stats->messages_out();
    o.server_slow_disconnects = sampler.at_t1().stats->slow_client_disconnects() -
                                sampler.at_t0().stats->slow_client_disconnects();
  }
  return o;
}

// Messages per read on the receiving side: how many frames the server's
// writes carried together (at least, as the kernel may merge writes too).
double MessagesPerRead(const FleetSnapshot& f) {
  uint64_t reads = f.normal.reads_in_window + f.slow.reads_in_window;
  return reads ? static_cast<double>(f.normal.received_in_window + f.slow.received_in_window) / reads : 0.0;
}

JsonObject ServerJson(const LoadOutcome& o, uint64_t deliveries) {
  JsonObject j;
  if (o.server_t0 && o.server_t1) {
    double cpu = o.server_cpu_s();
    j.Add("cpu_percent", 100 * cpu / o.window_s)
        .Add("cpu_ns_per_delivery", deliveries > 0 ? cpu * 1e9 / static_cast<double>(deliveries) : 0.0)
        .Add("rss_kib_before", o.server_t0->rss_kib)
        .Add("rss_kib_after", o.server_t1->rss_kib)
        .Add("rss_kib_peak", o.server_rss_peak_kib)
        .Add("threads", o.server_t1->threads);
  }
  if (o.server_messages_out) j.Add("messages_out", *o.server_messages_out);
  if (o.server_slow_disconnects) j.Add("slow_client_disconnects", *o.server_slow_disconnects);
  return j;
}

// How busy the benchmark's cores were, and how much of that was neither the
// server nor this tool (other tenants of a shared machine).
JsonObject CoresJson(const BenchConfig& c, const std::vector<double>& busy, double server_percent,
                     double client_percent) {
  JsonObject j;
  std::string all = "[";
  for (size_t i = 0; i < busy.size(); ++i) absl::StrAppend(&all, i ? "," : "", JsonNumber(busy[i]));
  j.Raw("busy_percent", all + "]");
  if (c.server_cpu >= 0 && static_cast<size_t>(c.server_cpu) < busy.size()) {
    j.Add("others_on_server_cpu_percent", std::max(0.0, busy[c.server_cpu] - server_percent));
  }
  if (c.client_cpu >= 0 && static_cast<size_t>(c.client_cpu) < busy.size()) {
    j.Add("others_on_client_cpu_percent", std::max(0.0, busy[c.client_cpu] - client_percent));
  }
  return j;
}

JsonObject LoadJson(const BenchConfig& c, const LoadOutcome& o, const JsonObject& latency) {
  JsonObject j;
  j.Add("window_seconds", o.window_s)
      .Add("publishes_ok", o.publish.ok_in_window)
      .Add("publishes_per_sec", static_cast<double>(o.publish.ok_in_window) / o.window_s)
      .Add("publishes_failed", o.publish.failed)
      .Add("publishes_skipped", o.publish.skipped)
      .Add("expected", o.expected)
      .Add("received", o.received)
      .Add("loss", o.loss())
      .Add("deliveries_per_sec", o.deliveries_per_sec())
      .Add("drain_ms", o.drain_s < 0 ? -1.0 : o.drain_s * 1e3)
      .Add("latency_ms", latency)
      .Add("publish_rpc_ms", LatencyJson(o.publish.rpc_latency));
  if (!o.publish.first_error.empty()) j.Add("publish_error", o.publish.first_error);
  j.Add("server", ServerJson(o, o.arrived_in_window));
  JsonObject client;
  client.Add("receive_busy_percent", 100 * o.fleet_busy_s / o.window_s)
      .Add("receive_busy_ns_per_delivery",
           o.arrived_in_window ? o.fleet_busy_s * 1e9 / static_cast<double>(o.arrived_in_window) : 0.0)
      .Add("receive_cpu_percent", 100 * o.fleet_cpu_s / o.window_s)
      .Add("messages_per_read", MessagesPerRead(o.fleet))
      .Add("process_cpu_percent", 100 * o.self_cpu_s / o.window_s)
      .Add("resets", o.fleet.normal.resets + o.fleet.slow.resets)
      .Add("closes_4008", o.fleet.normal.closes_slow + o.fleet.slow.closes_slow)
      .Add("protocol_errors", o.fleet.normal.protocol_errors + o.fleet.slow.protocol_errors)
      .Add("unstamped", o.fleet.normal.unstamped + o.fleet.slow.unstamped);
  j.Add("client", client);
  j.Add("cores", CoresJson(c, o.cpu_busy_percent, 100 * o.server_cpu_s() / o.window_s,
                           100 * o.self_cpu_s / o.window_s));
  return j;
}

std::string LoadText(const LoadOutcome& o, const LatencyHistogram& latency) {
  std::string outcome =
      o.drain_s >= 0
          ? absl::StrFormat("loss %s, the last arrived %.0f ms after the window",
                            Count(static_cast<double>(o.loss())), o.drain_s * 1e3)
          : absl::StrFormat("%s still missing when the bench stopped waiting (lost or backlogged)",
                            Count(static_cast<double>(o.loss())));
  std::string text = absl::StrFormat(
      "%s deliveries/s (%s publishes in %.1f s; received %s of %s, %s); latency %s",
      Count(o.deliveries_per_sec()), Count(static_cast<double>(o.publish.ok_in_window)), o.window_s,
      Count(static_cast<double>(o.received)), Count(static_cast<double>(o.expected)), outcome,
      LatencyText(latency));
  if (o.server_t0 && o.server_t1) {
    absl::StrAppend(&text, absl::StrFormat(
                               "; server CPU %.0f%% (%.0f ns/delivery), RSS %s -> %s KiB (peak %s)",
                               100 * o.server_cpu_s() / o.window_s,
                               o.arrived_in_window ? o.server_cpu_s() * 1e9 / o.arrived_in_window : 0.0,
                               Count(o.server_t0->rss_kib), Count(o.server_t1->rss_kib),
                               Count(o.server_rss_peak_kib)));
  }
  absl::StrAppend(&text, absl::StrFormat("; %.1f messages per client read", MessagesPerRead(o.fleet)));
  absl::StrAppend(&text, absl::StrFormat("; client receive thread busy %.0f%% (%.0f ns/delivery), process CPU %.0f%%",
                                         100 * o.fleet_busy_s / o.window_s,
                                         o.arrived_in_window ? o.fleet_busy_s * 1e9 / o.arrived_in_window : 0.0,
                                         100 * o.self_cpu_s / o.window_s));
  if (o.publish.skipped > 0) absl::StrAppend(&text, "; ", Count(o.publish.skipped), " publishes skipped (none free)");
  if (o.publish.failed > 0) absl::StrAppend(&text, "; ", Count(o.publish.failed), " failed: ", o.publish.first_error);
  return text;
}

absl::StatusOr<std::unique_ptr<Publisher>> MakePublisher(const BenchConfig& c, const Target& t) {
  return Publisher::Create(t.grpc_address, c.grpc_channels, absl::Seconds(20));
}

// fanout, many-topics and large: connect, then publish at a fixed rate.
absl::Status RunFanout(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  auto publisher = MakePublisher(c, t);
  if (!publisher.ok()) return publisher.status();
  log->Say(absl::StrCat(c.scenario, ": opening ", Count(c.subscribers), " subscribers on ",
                        Count(Topics(c, c.subscribers).size()), " topic(s)"));
  ConnectResult cr = (*fleet)->Connect(Specs(c, 0, c.subscribers));
  figures->Add("connect", ConnectJson(cr));
  log->Say(ConnectText(cr));
  if (cr.connected == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", cr.first_error));
  LoadSpec spec{.topics = Topics(c, c.subscribers), .rate = c.rate, .concurrency = c.publish_concurrency,
                .payload_bytes = c.payload_bytes};
  LoadOutcome o = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), spec);
  LatencyHistogram latency = o.fleet.normal.latency;
  latency.Merge(o.fleet.slow.latency);
  figures->Add("subscribers", cr.connected).Merge(LoadJson(c, o, LatencyJson(latency)));
  figures->Add("bytes_per_sec", static_cast<double>(o.arrived_in_window) * c.payload_bytes / o.window_s);
  log->Say(absl::StrCat(c.scenario, ": ", LoadText(o, latency)));
  if (o.received == 0) return absl::InternalError("no deliveries");
  return absl::OkStatus();
}

// The others' throughput and latency without any stalled reader, then with
// 1% more subscribers that never read past the upgrade: they must be cut off
// at the queue limit while the others do not notice.
absl::Status RunSlow(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  auto publisher = MakePublisher(c, t);
  if (!publisher.ok()) return publisher.status();
  ConnectResult cr = (*fleet)->Connect(Specs(c, 0, c.subscribers));
  figures->Add("connect", ConnectJson(cr));
  log->Say(ConnectText(cr));
  if (cr.connected == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", cr.first_error));
  size_t normal = cr.connected;
  LoadSpec spec{.topics = Topics(c, c.subscribers), .rate = c.rate, .concurrency = c.publish_concurrency,
                .payload_bytes = c.payload_bytes, .normal_fanout = normal};

  LoadOutcome base = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), spec);
  log->Say(absl::StrCat("slow, baseline (", Count(normal), " subscribers, all reading): ",
                        LoadText(base, base.fleet.normal.latency)));

  (*fleet)->PauseSlow(true);
  size_t want = std::max<size_t>(1, static_cast<size_t>(static_cast<double>(c.subscribers) * c.slow_fraction + 0.5));
  std::vector<ConnectionSpec> slow_specs;
  for (size_t i = 0; i < want; ++i) slow_specs.push_back({Topic(c, 0), true});
  ConnectResult slow_cr = (*fleet)->Connect(slow_specs);
  size_t slow = slow_cr.connected;
  log->Say(absl::StrCat("slow: ", Count(slow), " more subscribers that never read"));
  LoadOutcome stalled = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), spec);
  log->Say(absl::StrCat("slow, with ", Count(slow), " stalled: others ",
                        LoadText(stalled, stalled.fleet.normal.latency)));

  // Let the stalled ones read what is left, to see how each was ended.
  (*fleet)->PauseSlow(false);
  FleetSnapshot after;
  for (int64_t end = MonoNs() + 3 * kNsPerSec; MonoNs() < end;) {
    after = (*fleet)->Snapshot();
    if (after.open_slow == 0) break;
    SleepUntilNs(MonoNs() + kNsPerSec / 20);
  }
  double others_before = static_cast<double>(base.fleet.normal.received_in_window) / base.window_s;
  double others_after = static_cast<double>(stalled.fleet.normal.received_in_window) / stalled.window_s;
  double p99_before = Ms(base.fleet.normal.latency.Percentile(0.99));
  double p99_after = Ms(stalled.fleet.normal.latency.Percentile(0.99));
  int64_t rss_growth = stalled.server_rss_peak_kib - (base.server_t1 ? base.server_t1->rss_kib : 0);
  size_t queue = c.server_queue_bytes > 0 ? c.server_queue_bytes : (4 << 20);
  int64_t bound_kib = static_cast<int64_t>(slow * queue / 1024);

  figures->Add("subscribers", normal)
      .Add("slow_connections", slow)
      .Add("server_queue_bytes", queue)
      .Add("baseline", LoadJson(c, base, LatencyJson(base.fleet.normal.latency)))
      .Add("stalled", LoadJson(c, stalled, LatencyJson(stalled.fleet.normal.latency)))
      .Add("others_deliveries_per_sec_baseline", others_before)
      .Add("others_deliveries_per_sec_stalled", others_after)
      .Add("others_p99_ms_baseline", p99_before)
      .Add("others_p99_ms_stalled", p99_after)
      .Add("others_loss_stalled", stalled.loss())
      .Add("cut_off_by_server", stalled.server_slow_disconnects.value_or(0))
      .Add("cut_off_seen_4008", after.slow.closes_slow)
      .Add("slow_still_open", after.open_slow)
      .Add("rss_growth_kib", rss_growth)
      .Add("rss_bound_kib", bound_kib)
      .Add("rss_bounded", rss_growth <= bound_kib + 4096)
      .Add("deliveries_per_sec", others_after)
      .Add("latency_ms", LatencyJson(stalled.fleet.normal.latency));
  log->Say(absl::StrFormat(
      "slow: others %s/s -> %s/s, p99 %.2f -> %.2f ms, loss %d; %d of %d stalled cut off by the server "
      "(%d saw 4008, %d still open); server RSS grew %s KiB (bound %s KiB = %d x %s B)",
      Count(others_before), Count(others_after), p99_before, p99_after, stalled.loss(),
      stalled.server_slow_disconnects.value_or(0), slow, after.slow.closes_slow, after.open_slow,
      Count(rss_growth), Count(bound_kib), slow, Count(queue)));
  if (stalled.received == 0) return absl::InternalError("no deliveries");
  return absl::OkStatus();
}

// Least-squares slope of y over x.
double Slope(const std::vector<std::pair<double, double>>& points) {
  double n = points.size(), sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (auto [x, y] : points) {
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  double d = n * sxx - sx * sx;
  return d == 0 ? 0 : (n * sxy - sx * sy) / d;
}

absl::Status RunIdle(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  if (t.server_pid <= 0) {
    return absl::FailedPreconditionError("idle measures the server's RSS: let the bench start it, or pass --server_pid");
  }
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  SleepUntilNs(MonoNs() + kNsPerSec / 2);
  auto base = ReadProcess(t.server_pid);
  if (!base.ok()) return base.status();
  std::vector<size_t> targets;
  for (size_t n = c.idle_step; n < c.subscribers; n += c.idle_step) targets.push_back(n);
  if (c.subscribers > 10000) targets.push_back(10000);
  targets.push_back(c.subscribers);
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());

  std::vector<std::pair<double, double>> points = {{0, static_cast<double>(base->rss_kib)}};
  std::string points_json = absl::StrCat("[[0,", base->rss_kib, "]");
  size_t open = 0;
  int64_t at_10k = -1;
  ConnectResult all;
  for (size_t target : targets) {
    ConnectResult cr = (*fleet)->Connect(Specs(c, open, target));
    all.Merge(cr);
    open += cr.connected;
    SleepUntilNs(MonoNs() + kNsPerSec * 3 / 10);  // let the server finish its side
    auto s = ReadProcess(t.server_pid);
    if (!s.ok()) return s.status();
    points.push_back({static_cast<double>(open), static_cast<double>(s->rss_kib)});
    absl::StrAppend(&points_json, ",[", open, ",", s->rss_kib, "]");
    if (open == 10000) at_10k = s->rss_kib;
    log->Say(absl::StrFormat("idle: %s connections, server RSS %s KiB", Count(open), Count(s->rss_kib)));
    if (cr.failed > 0) {
      log->Say(absl::StrCat("idle: stopping at ", Count(open), ": ", cr.first_error));
      break;
    }
  }
  points_json += "]";
  if (open == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", all.first_error));
  double top_rss = points.back().second;
  double per_conn_max = (top_rss - base->rss_kib) * 1024 / open;
  double slope = Slope(points) * 1024;  // bytes per connection
  figures->Add("connect", ConnectJson(all))
      .Add("base_rss_kib", base->rss_kib)
      .Raw("rss_kib_by_connections", points_json)
      .Add("connections_max", open)
      .Add("bytes_per_connection_at_max", per_conn_max)
      .Add("slope_bytes_per_connection", slope)
      .Add("projected_rss_mib_100k", (base->rss_kib * 1024 + slope * 1e5) / (1 << 20))
      .Add("projected_rss_mib_1m", (base->rss_kib * 1024 + slope * 1e6) / (1 << 20))
      .Add("projection_note", "100k and 1M are projected from the least-squares slope, not measured");
  std::string text = absl::StrFormat("idle: base RSS %s KiB", Count(base->rss_kib));
  if (at_10k >= 0) {
    double per_10k = static_cast<double>(at_10k - base->rss_kib) * 1024 / 10000;
    figures->Add("bytes_per_connection_at_10k", per_10k);
    absl::StrAppend(&text, absl::StrFormat("; %.0f B/connection at 10,000", per_10k));
  }
  absl::StrAppend(&text, absl::StrFormat(
                             "; %.0f B/connection at %s (the largest count measured); slope %.0f B/connection; "
                             "PROJECTED from the slope: %.0f MiB at 100k, %.0f MiB at 1M",
                             per_conn_max, Count(open), slope, (base->rss_kib * 1024 + slope * 1e5) / (1 << 20),
                             (base->rss_kib * 1024 + slope * 1e6) / (1 << 20)));
  log->Say(text);
  return absl::OkStatus();
}

absl::Status RunConnect(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  std::vector<ConnectionSpec> specs = Specs(c, 0, c.subscribers);
  std::optional<ProcSample> before, after;
  if (t.server_pid > 0) {
    if (auto s = ReadProcess(t.server_pid); s.ok()) before = *s;
  }
  double fleet_cpu = (*fleet)->BusySeconds();
  ConnectResult cr = (*fleet)->Connect(specs);
  fleet_cpu = (*fleet)->BusySeconds() - fleet_cpu;
  if (t.server_pid > 0) {
    if (auto s = ReadProcess(t.server_pid); s.ok()) after = *s;
  }
  JsonObject j = ConnectJson(cr);
  double seconds = static_cast<double>(cr.last_done_ns - cr.first_start_ns) / 1e9;
  figures->Add("connects_per_sec", seconds > 0 ? cr.connected / seconds : 0.0).Add("connect", j);
  std::string text = absl::StrCat("connect: ", ConnectText(cr));
  if (before && after && seconds > 0) {
    double cpu = after->cpu_seconds - before->cpu_seconds;
    figures->Add("server_cpu_percent", 100 * cpu / seconds)
        .Add("server_cpu_us_per_connect", cr.connected ? cpu * 1e6 / cr.connected : 0.0)
        .Add("server_rss_kib_before", before->rss_kib)
        .Add("server_rss_kib_after", after->rss_kib);
    absl::StrAppend(&text, absl::StrFormat("; server CPU %.0f%% (%.1f us/connection)", 100 * cpu / seconds,
                                           cr.connected ? cpu * 1e6 / cr.connected : 0.0));
  }
  if (seconds > 0) {
    figures->Add("client_busy_percent", 100 * fleet_cpu / seconds);
    absl::StrAppend(&text, absl::StrFormat("; client busy %.0f%%", 100 * fleet_cpu / seconds));
  }
  log->Say(text);
  if (cr.connected == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", cr.first_error));
  return absl::OkStatus();
}

absl::Status RunPublish(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  auto publisher = MakePublisher(c, t);
  if (!publisher.ok()) return publisher.status();
  std::string mode = c.rate > 0 ? absl::StrCat("at ", Count(c.rate), "/s")
                                : absl::StrCat(c.publish_concurrency, " calls in flight over ",
                                               c.grpc_channels, " channel(s)");
  LoadSpec none{.topics = {"bench.publish.none"}, .rate = c.rate, .concurrency = c.publish_concurrency,
                .payload_bytes = c.payload_bytes};
  LoadOutcome a = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), none);
  JsonObject ja = LoadJson(c, a, LatencyJson(a.fleet.normal.latency));
  figures->Add("no_subscriber", ja);
  double rate_a = static_cast<double>(a.publish.ok_in_window) / a.window_s;
  std::string server_a = a.server_t0 ? absl::StrFormat(", server CPU %.0f%% (%.1f us/publish)",
                                                       100 * a.server_cpu_s() / a.window_s,
                                                       a.publish.ok_in_window ? a.server_cpu_s() * 1e6 / a.publish.ok_in_window : 0.0)
                                     : "";
  log->Say(absl::StrFormat("publish, 0 subscribers, %s: %s publishes/s, call %s%s%s", mode, Count(rate_a),
                           LatencyText(a.publish.rpc_latency), server_a,
                           a.publish.failed ? absl::StrCat("; failed: ", a.publish.first_error) : ""));

  ConnectResult cr = (*fleet)->Connect({{"bench.publish.one", false}});
  if (cr.connected != 1) return absl::UnavailableError(absl::StrCat("subscriber did not connect: ", cr.first_error));
  LoadSpec one{.topics = {"bench.publish.one"}, .rate = c.rate, .concurrency = c.publish_concurrency,
               .payload_bytes = c.payload_bytes};
  LoadOutcome b = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), one);
  figures->Add("one_subscriber", LoadJson(c, b, LatencyJson(b.fleet.normal.latency)));
  double rate_b = static_cast<double>(b.publish.ok_in_window) / b.window_s;
  std::string server_b = b.server_t0 ? absl::StrFormat(", server CPU %.0f%% (%.1f us/publish)",
                                                       100 * b.server_cpu_s() / b.window_s,
                                                       b.publish.ok_in_window ? b.server_cpu_s() * 1e6 / b.publish.ok_in_window : 0.0)
                                     : "";
  log->Say(absl::StrFormat("publish, 1 subscriber, unary, %s: %s publishes/s, call %s; publish->receive %s; loss %d%s",
                           mode, Count(rate_b), LatencyText(b.publish.rpc_latency),
                           LatencyText(b.fleet.normal.latency), b.loss(), server_b));

  LoadSpec streamed = one;
  streamed.streams = c.publish_streams;
  LoadOutcome s = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), streamed);
  figures->Add("one_subscriber_streaming", LoadJson(c, s, LatencyJson(s.fleet.normal.latency)));
  double rate_s = static_cast<double>(s.publish.ok_in_window) / s.window_s;
  std::string server_s = s.server_t0 ? absl::StrFormat(", server CPU %.0f%% (%.1f us/publish)",
                                                       100 * s.server_cpu_s() / s.window_s,
                                                       s.publish.ok_in_window ? s.server_cpu_s() * 1e6 / s.publish.ok_in_window : 0.0)
                                     : "";
  log->Say(absl::StrFormat(
      "publish, 1 subscriber, %d PublishStream(s), %d unanswered each: %s publishes/s, result %s; "
      "publish->receive %s; loss %d%s%s",
      c.publish_streams, c.stream_window, Count(rate_s), LatencyText(s.publish.rpc_latency),
      LatencyText(s.fleet.normal.latency), s.loss(), server_s,
      s.publish.first_error.empty() ? "" : absl::StrCat("; ", s.publish.first_error)));
  figures->Add("publishes_per_sec_no_subscriber", rate_a)
      .Add("publishes_per_sec_one_subscriber", rate_b)
      .Add("publishes_per_sec_one_subscriber_streaming", rate_s);
  if (c.publish_batch > 0) {
    LoadSpec batched = one;
    batched.batch = c.publish_batch;
    LoadOutcome p = RunLoad(c, t.server_pid, fleet->get(), publisher->get(), batched);
    figures->Add("one_subscriber_batch", LoadJson(c, p, LatencyJson(p.fleet.normal.latency)));
    double rate_p = static_cast<double>(p.publish.ok_in_window) / p.window_s;
    std::string server_p = p.server_t0 ? absl::StrFormat(", server CPU %.0f%% (%.2f us/message)",
                                                         100 * p.server_cpu_s() / p.window_s,
                                                         p.publish.ok_in_window ? p.server_cpu_s() * 1e6 / p.publish.ok_in_window : 0.0)
                                       : "";
    log->Say(absl::StrFormat(
        "publish, 1 subscriber, PublishBatch of %d, %s: %s messages/s, call %s; publish->receive %s; loss %d%s%s",
        c.publish_batch, mode, Count(rate_p), LatencyText(p.publish.rpc_latency),
        LatencyText(p.fleet.normal.latency), p.loss(), server_p,
        p.publish.first_error.empty() ? "" : absl::StrCat("; ", p.publish.first_error)));
    figures->Add("messages_per_sec_one_subscriber_batch", rate_p);
    if (p.received == 0) return absl::InternalError("no deliveries from PublishBatch");
  }
  if (a.publish.ok == 0 || b.received == 0 || s.received == 0) {
    return absl::InternalError("no publishes or no deliveries");
  }
  return absl::OkStatus();
}

// N clients come back at once, each with the position it saw before `missed`
// more messages were published (a load balancer failing over, a network
// blip): every one is answered recovered and replayed what it missed.
absl::Status RunRecovery(const BenchConfig& c, const Target& t, JsonObject* figures, Log* log) {
  const std::string topic = "bench.recovery";
  auto fleet = MakeFleet(c, t.ws_address);
  if (!fleet.ok()) return fleet.status();
  auto publisher = MakePublisher(c, t);
  if (!publisher.ok()) return publisher.status();
  const std::string payload(c.payload_bytes, 'r');
  auto first = (*publisher)->PublishOne(topic, payload);
  if (!first.ok()) return first.status();
  if (first->epoch().empty()) {
    return absl::FailedPreconditionError("the server numbered no epoch: is --history_size set?");
  }
  for (size_t i = 0; i < c.missed; ++i) {
    if (auto r = (*publisher)->PublishOne(topic, payload); !r.ok()) return r.status();
  }
  std::vector<ConnectionSpec> specs(
      c.subscribers, ConnectionSpec{.topics = topic,
                                    .since = absl::StrCat(topic, ":", first->seq(), ":",
                                                          first->epoch())});
  std::optional<ProcSample> before, after;
  if (t.server_pid > 0) {
    if (auto s = ReadProcess(t.server_pid); s.ok()) before = *s;
  }
  // Each client receives the recovery notice, then the missed messages.
  const uint64_t want = static_cast<uint64_t>(c.subscribers) * (c.missed + 1);
  ConnectResult cr = (*fleet)->Connect(specs);
  FleetSnapshot snap = (*fleet)->Snapshot();
  const int64_t deadline = MonoNs() + absl::ToInt64Nanoseconds(c.drain_timeout);
  while (snap.normal.messages < want && MonoNs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    snap = (*fleet)->Snapshot();
  }
  const int64_t done = MonoNs();
  if (t.server_pid > 0) {
    if (auto s = ReadProcess(t.server_pid); s.ok()) after = *s;
  }
  const double seconds = static_cast<double>(done - cr.first_start_ns) / 1e9;
  const bool complete = snap.normal.messages == want;
  figures->Add("connect", ConnectJson(cr))
      .Add("missed_per_client", c.missed)
      .Add("frames_expected", want)
      .Add("frames_received", snap.normal.messages)
      .Add("complete", complete)
      .Add("seconds_until_all_recovered", seconds)
      .Add("recoveries_per_sec", seconds > 0 ? cr.connected / seconds : 0.0);
  std::string text = absl::StrFormat(
      "recovery: %zu clients back at once, %zu missed each: all recovered in %.2f s "
      "(%s clients/s, %s replayed/s), %llu of %llu frames",
      cr.connected, c.missed, seconds, Count(seconds > 0 ? cr.connected / seconds : 0),
      Count(seconds > 0 ? static_cast<double>(cr.connected * c.missed) / seconds : 0),
      static_cast<unsigned long long>(snap.normal.messages), static_cast<unsigned long long>(want));
  if (before && after && seconds > 0) {
    double cpu = after->cpu_seconds - before->cpu_seconds;
    figures->Add("server_cpu_percent", 100 * cpu / seconds)
        .Add("server_cpu_us_per_recovery", cr.connected ? cpu * 1e6 / cr.connected : 0.0)
        .Add("server_rss_kib_before", before->rss_kib)
        .Add("server_rss_kib_after", after->rss_kib);
    absl::StrAppend(&text, absl::StrFormat("; server CPU %.0f%% (%.1f us per recovered client)",
                                           100 * cpu / seconds,
                                           cr.connected ? cpu * 1e6 / cr.connected : 0.0));
  }
  log->Say(text);
  if (cr.connected == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", cr.first_error));
  if (!complete) {
    return absl::DataLossError(absl::StrFormat("received %llu of the %llu frames recovery owes",
                                               static_cast<unsigned long long>(snap.normal.messages),
                                               static_cast<unsigned long long>(want)));
  }
  return absl::OkStatus();
}

absl::Status RunEcho(const BenchConfig& c, JsonObject* figures, Log* log) {
  auto echo = EchoServer::Start(c.server_cpu, c.payload_bytes, c.echo_batch);
  if (!echo.ok()) return echo.status();
  auto fleet = MakeFleet(c, (*echo)->ws_address());
  if (!fleet.ok()) return fleet.status();
  ConnectResult cr = (*fleet)->Connect(Specs(c, 0, c.subscribers));
  figures->Add("connect", ConnectJson(cr));
  log->Say(absl::StrCat("echo: ", ConnectText(cr)));
  if (cr.connected == 0) return absl::UnavailableError(absl::StrCat("no connection opened: ", cr.first_error));
  int64_t start = MonoNs();
  int64_t t0 = start + absl::ToInt64Nanoseconds(c.warmup);
  int64_t t1 = t0 + absl::ToInt64Nanoseconds(c.duration);
  (*fleet)->SetWindow(t0, t1);
  (*echo)->BeginSending();
  SleepUntilNs(t0);
  double cpu0 = (*fleet)->BusySeconds();
  CpuTimes cores0 = ReadCpuTimes();
  SleepUntilNs(t1);
  double cpu1 = (*fleet)->BusySeconds();
  CpuTimes cores1 = ReadCpuTimes();
  EchoStats sent = (*echo)->Stop();
  FleetSnapshot snap;
  uint64_t last = 0;
  for (int64_t deadline = MonoNs() + absl::ToInt64Nanoseconds(c.drain_timeout); MonoNs() < deadline;) {
    snap = (*fleet)->Snapshot();
    if (snap.normal.messages >= sent.frames_sent || (snap.normal.messages == last && last > 0)) break;
    last = snap.normal.messages;
    SleepUntilNs(MonoNs() + kNsPerSec / 5);
  }
  double window = static_cast<double>(t1 - t0) / 1e9;
  double client_rate = snap.normal.received_in_window / window;
  double echo_rate = sent.seconds > 0 ? sent.frames_sent / sent.seconds : 0;
  figures->Add("subscribers", cr.connected)
      .Add("echo_batch", c.echo_batch)
      .Add("echo_frames_sent", sent.frames_sent)
      .Add("echo_frames_per_sec", echo_rate)
      .Add("echo_cpu_percent", sent.seconds > 0 ? 100 * sent.cpu_seconds / sent.seconds : 0.0)
      .Add("echo_would_block", sent.would_block)
      .Add("received", snap.normal.messages)
      .Add("loss", static_cast<int64_t>(sent.frames_sent) - static_cast<int64_t>(snap.normal.messages))
      .Add("deliveries_per_sec", client_rate)
      .Add("client_receive_busy_percent", 100 * (cpu1 - cpu0) / window)
      .Add("messages_per_read", MessagesPerRead(snap))
      .Add("client_ns_per_delivery", client_rate > 0 ? (cpu1 - cpu0) * 1e9 / snap.normal.received_in_window : 0.0)
      .Add("latency_ms", LatencyJson(snap.normal.latency));
  std::vector<double> busy;
  for (size_t i = 0; i < cores0.busy.size() && i < cores1.busy.size(); ++i) {
    double total = cores1.total[i] - cores0.total[i];
    busy.push_back(total > 0 ? 100 * (cores1.busy[i] - cores0.busy[i]) / total : 0);
  }
  figures->Add("cores", CoresJson(c, busy, sent.seconds > 0 ? 100 * sent.cpu_seconds / sent.seconds : 0.0,
                                  100 * (cpu1 - cpu0) / window));
  log->Say(absl::StrFormat(
      "echo: the trivial server wrote %s frames/s (%d per write, CPU %.0f%%, %s writes refused: client behind); "
      "the client received %s/s, busy %.0f%% of the time (%.0f ns/frame); loss %d; latency %s",
      Count(echo_rate), c.echo_batch, sent.seconds > 0 ? 100 * sent.cpu_seconds / sent.seconds : 0.0,
      Count(sent.would_block), Count(client_rate), 100 * (cpu1 - cpu0) / window,
      client_rate > 0 ? (cpu1 - cpu0) * 1e9 / snap.normal.received_in_window : 0.0,
      static_cast<int64_t>(sent.frames_sent) - static_cast<int64_t>(snap.normal.messages),
      LatencyText(snap.normal.latency)));
  if (snap.normal.messages == 0) return absl::InternalError("no deliveries");
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& ScenarioNames() {
  static const auto* names = new std::vector<std::string>{
      "fanout", "many-topics", "idle", "connect", "publish", "slow", "large", "recovery", "soak",
      "echo"};
  return *names;
}

absl::Status RunScenario(const BenchConfig& config, const Target& target, JsonObject* figures,
                         std::vector<std::string>* summary) {
  Log log(summary);
  const std::string& s = config.scenario;
  if (s == "fanout" || s == "many-topics" || s == "large") return RunFanout(config, target, figures, &log);
  if (s == "slow") return RunSlow(config, target, figures, &log);
  if (s == "idle") return RunIdle(config, target, figures, &log);
  if (s == "connect") return RunConnect(config, target, figures, &log);
  if (s == "publish") return RunPublish(config, target, figures, &log);
  if (s == "echo") return RunEcho(config, figures, &log);
  if (s == "recovery") return RunRecovery(config, target, figures, &log);
  if (s == "soak") return RunSoak(config, target, figures, summary);
  return absl::InvalidArgumentError(absl::StrCat("unknown scenario '", s, "'; one of: ",
                                                 absl::StrJoin(ScenarioNames(), ", ")));
}

}  // namespace fanout
