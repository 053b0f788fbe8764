#include "bench/soak.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/system.h"
#include "fanout/v1/fanout.grpc.pb.h"
#include "tests/testing/raw_ws.h"

namespace fanout {
namespace {

using ::fanout::testing::RawWs;
namespace v1 = ::fanout::v1;

constexpr uint8_t kText = 1, kClose = 8, kPing = 9, kPong = 10;
// Topics the well-behaved subscribers follow (two each), and the heavy one
// the load fleet follows.
constexpr int kTopics = 24;
const char kAllTopic[] = "soak.all";
std::string GoodTopic(int k) { return absl::StrCat("soak.t.", k); }

// Each checked topic has exactly one sequential publisher (unary: topics
// 0-7, batches: 8-15, a stream: 16-23), so every subscriber must see its
// `seq` as 1, 2, 3, ... with nothing missing.

// Figures everyone adds to.
struct Tally {
  std::atomic<int64_t> accepted{0}, rejected_overloaded{0}, publish_errors{0}, seq_mismatches{0};
  std::atomic<int64_t> broadcasts{0};
  std::atomic<int64_t> watch_cancelled{0}, watch_cut_off{0}, watch_errors{0};
  std::atomic<int64_t> admin_calls{0}, admin_errors{0};
  std::mutex mu;
  std::map<std::string, int64_t> churn_ok;          // by ending style
  std::map<std::string, int64_t> churn_unexpected;  // by ending style
  std::string first_unexpected;
  void WatchError(const std::string& why) {
    watch_errors.fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    if (first_unexpected.empty()) first_unexpected = why;
  }
  void Churn(const std::string& style, bool ok, const std::string& why = "") {
    std::lock_guard<std::mutex> lock(mu);
    (ok ? churn_ok : churn_unexpected)[style]++;
    if (!ok && first_unexpected.empty()) first_unexpected = absl::StrCat(style, ": ", why);
  }
};

// Accepted publishes per topic (and broadcasts), as their publishers saw them.
struct Accepted {
  std::atomic<int64_t> topic[kTopics] = {};
  std::atomic<int64_t> broadcast{0};
  int64_t Of(const std::string& t) const {
    int k = 0;
    absl::SimpleAtoi(absl::string_view(t).substr(7), &k);
    return topic[k].load();
  }
};

// `{"topic":"T","seq":N,...}` or `{"broadcast":true,"seq":N,...}`.
bool ParseEnvelope(const std::string& p, std::string* topic, uint64_t* seq) {
  static constexpr absl::string_view kTopic = R"({"topic":")";
  static constexpr absl::string_view kBroadcast = R"({"broadcast":true,"seq":)";
  absl::string_view v(p);
  size_t seq_at;
  if (absl::StartsWith(v, kBroadcast)) {
    topic->clear();
    seq_at = kBroadcast.size();
  } else if (absl::StartsWith(v, kTopic)) {
    size_t end = v.find('"', kTopic.size());
    if (end == absl::string_view::npos) return false;
    *topic = std::string(v.substr(kTopic.size(), end - kTopic.size()));
    if (v.substr(end, 8) != R"(","seq":)") return false;
    seq_at = end + 8;
  } else {
    return false;
  }
  size_t comma = v.find(',', seq_at);
  return comma != absl::string_view::npos && absl::SimpleAtoi(v.substr(seq_at, comma - seq_at), seq);
}

// The well-behaved subscribers: connected for the whole run, reading all the
// time, answering pings, checking every topic's sequence.
class GoodFleet {
 public:
  struct Conn {
    std::unique_ptr<RawWs> ws;
    std::map<std::string, uint64_t> next;  // topic ("" = broadcasts) -> expected seq
    std::map<std::string, int64_t> received;
    bool closed = false;
    std::string problem;  // the first thing that was wrong
  };

  absl::Status Connect(const std::string& ws_address, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      std::string a = GoodTopic(static_cast<int>(i % kTopics));
      std::string b = GoodTopic(static_cast<int>((i * 7 + 3) % kTopics));
      if (a == b) b = GoodTopic(static_cast<int>((i + 1) % kTopics));
      auto c = RawWs::Connect(ws_address, absl::StrCat("/ws?topics=", a, ",", b));
      if (!c.ok()) return c.status();
      auto conn = std::make_unique<Conn>();
      conn->ws = std::move(*c);
      for (const std::string& t : {a, b, std::string()}) {
        conn->next[t] = 1;
        conn->received[t] = 0;
      }
      conns_.push_back(std::move(conn));
    }
    return absl::OkStatus();
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int64_t total_received() const { return total_.load(); }
  const std::vector<std::unique_ptr<Conn>>& conns() const { return conns_; }

 private:
  void Loop() {
    std::vector<pollfd> fds(conns_.size());
    std::vector<RawWs::Frame> frames;
    while (!stop_) {
      for (size_t i = 0; i < conns_.size(); ++i) fds[i] = {conns_[i]->ws->fd(), POLLIN, 0};
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        Conn& c = *conns_[i];
        frames.clear();
        bool open = c.ws->ReadAvailable(&frames);
        for (auto& f : frames) Handle(c, f);
        if (!open && !c.closed) {
          c.closed = true;
          if (c.problem.empty()) c.problem = "connection ended";
        }
      }
    }
  }

  void Handle(Conn& c, const RawWs::Frame& f) {
    if (f.opcode == kPing) {
      c.ws->SendRaw(RawWs::BuildFrame(kPong, f.payload)).IgnoreError();
      return;
    }
    if (f.opcode == kClose) {
      c.closed = true;
      if (c.problem.empty()) {
        c.problem = absl::StrCat("closed by the node with ", f.close_code(), " (", f.close_reason(),
                                 ") at ", absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::UTCTimeZone()));
      }
      return;
    }
    if (f.opcode != kText) return;
    std::string topic;
    uint64_t seq = 0;
    if (!ParseEnvelope(f.payload, &topic, &seq)) {
      if (c.problem.empty()) c.problem = absl::StrCat("unexpected frame: ", f.payload.substr(0, 80));
      return;
    }
    auto it = c.next.find(topic);
    if (it == c.next.end()) {
      if (c.problem.empty()) c.problem = absl::StrCat("delivery for a topic not subscribed: ", topic);
      return;
    }
    if (seq != it->second && c.problem.empty()) {
      c.problem = absl::StrCat("topic '", topic, "': seq ", seq, " where ", it->second, " was next");
    }
    it->second = seq + 1;
    c.received[topic]++;
    total_.fetch_add(1, std::memory_order_relaxed);
  }

  std::vector<std::unique_ptr<Conn>> conns_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> total_{0};
  std::thread thread_;
};

// The heavy fan-out: connections on one topic that read as fast as they
// can over Ethernet-sized segments, so the node's own queues (not loopback's
// megabyte socket buffers) hold what they have not read. They are not
// checked: when they fall behind they are cut off, as any slow client is.
class LoadFleet {
 public:
  absl::Status Connect(const std::string& ws_address, size_t n) {
    ws_address_ = ws_address;
    for (size_t i = 0; i < n; ++i) {
      auto c = Open();
      if (!c.ok()) return c.status();
      conns_.push_back(std::move(*c));
    }
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (auto& c : conns_) c->Reset();
  }
  int64_t received() const { return received_.load(); }
  int64_t cut_off() const { return cut_off_.load(); }
  int64_t reconnects() const { return reconnects_.load(); }
  size_t size() const { return conns_.size(); }

 private:
  absl::StatusOr<std::unique_ptr<RawWs>> Open() {
    RawWs::Options o;
    o.max_segment = 1460;
    return RawWs::Connect(ws_address_, absl::StrCat("/ws?topics=", kAllTopic, "&format=raw"), o);
  }
  void Loop() {
    std::vector<pollfd> fds(conns_.size());
    std::vector<RawWs::Frame> frames;
    while (!stop_) {
      for (size_t i = 0; i < conns_.size(); ++i) fds[i] = {conns_[i]->fd(), POLLIN, 0};
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = 0; i < conns_.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        frames.clear();
        bool open = conns_[i]->ReadAvailable(&frames);
        for (const auto& f : frames) {
          if (f.opcode == kPing) conns_[i]->SendRaw(RawWs::BuildFrame(kPong, f.payload)).IgnoreError();
          if (f.opcode == kClose) {
            cut_off_ += f.close_code() == 4008;
            open = false;
          }
          if (f.opcode <= 2) received_.fetch_add(1, std::memory_order_relaxed);
        }
        if (open) continue;
        // Cut off for falling behind: reconnect, as a real client would.
        conns_[i]->Reset();
        auto again = Open();
        if (again.ok()) {
          conns_[i] = std::move(*again);
          reconnects_.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  }

  std::string ws_address_;
  std::atomic<int64_t> reconnects_{0};
  std::vector<std::unique_ptr<RawWs>> conns_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> received_{0}, cut_off_{0};
  std::thread thread_;
};

// Keeps a loop at `per_second` iterations.
class Pacer {
 public:
  explicit Pacer(double per_second) : step_(absl::Seconds(1) / per_second), next_(absl::Now()) {}
  void Wait() {
    next_ += step_;
    absl::Time now = absl::Now();
    if (next_ > now) {
      absl::SleepFor(next_ - now);
    } else if (now - next_ > absl::Seconds(1)) {
      next_ = now;  // fell behind (the node refused or was slow): do not catch up in a rush
    }
  }

 private:
  absl::Duration step_;
  absl::Time next_;
};

// Half of every two seconds: publishers of the heavy topic run flat out,
// well above what the node can deliver, then let it drain.
bool Bursting() { return absl::ToUnixSeconds(absl::Now()) % 2 == 0; }

std::string Payload(std::mt19937* rng) {
  return absl::StrFormat(R"({"n":%u,"pad":"%s"})", (*rng)(), std::string((*rng)() % 160, 'p'));
}

void Backoff() { absl::SleepFor(absl::Milliseconds(1)); }

// Records one accepted publish to a topic owned by a single sequential
// publisher: the node's `seq` must be the count of accepted ones.
void Accept(std::atomic<int64_t>* counter, uint64_t seq, Tally* tally) {
  int64_t n = counter->fetch_add(1) + 1;
  tally->accepted.fetch_add(1);
  if (static_cast<int64_t>(seq) != n) tally->seq_mismatches.fetch_add(1);
}

// The /metrics of the node, series -> value.
std::map<std::string, double> Metrics(const std::string& ws_address) {
  std::map<std::string, double> out;
  auto c = RawWs::ConnectTcp(ws_address, {});
  if (!c.ok() || !(*c)->SendRaw("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()) return out;
  std::string text;
  char buf[65536];
  while (true) {
    pollfd p{(*c)->fd(), POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    ssize_t n = ::recv((*c)->fd(), buf, sizeof(buf), 0);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    double v = 0;
    if (sp != absl::string_view::npos && absl::SimpleAtod(line.substr(sp + 1), &v)) {
      out[std::string(line.substr(0, sp))] = v;
    }
  }
  return out;
}

// Frames no client library sends, each with the close code it must get.
struct BadInput {
  std::string bytes;
  int code;
};
std::vector<BadInput> BadInputs() {
  return {
      {RawWs::BuildFrame(kText, "\xff"), 1007},
      {RawWs::BuildFrame(kText, "ab", false) + RawWs::BuildFrame(0, "\xc3\x28"), 1007},
      {RawWs::BuildFrame(kText, "{}", true, true, 4), 1002},
      {RawWs::BuildFrame(3, "x"), 1002},
      {RawWs::BuildFrame(kText, "{}", true, /*mask=*/false), 1002},
      {RawWs::BuildFrame(kPing, "x", false), 1002},
      {RawWs::BuildFrame(0, "x"), 1002},
      {RawWs::BuildFrame(kClose, RawWs::CloseBody(1005)), 1002},
      {RawWs::BuildFrame(kClose, "\x03"), 1002},
      {RawWs::BuildFrame(kText, std::string(70 * 1024, 'x')), 1009},
  };
}

// One churning client, ended one of many ways. Slow, idle and half-open
// ones are handed to `parked` for the end of the run.
class Churn {
 public:
  Churn(const Target& t, Tally* tally, int id) : t_(t), tally_(tally), rng_(1000 + id), id_(id) {
    stub_ = v1::Fanout::NewStub(grpc::CreateChannel(t.grpc_address, grpc::InsecureChannelCredentials()));
  }

  void Run(const std::atomic<bool>& stop) {
    const auto bad = BadInputs();
    while (!stop) {
      ++n_;
      std::string own = absl::StrCat("soak.churn.", id_, ".", n_);
      switch (rng_() % 11) {
        case 0: Polite(own); break;
        case 1: CloseThenReset(own); break;
        case 2: Reset(own); break;
        case 3: HalfClose(own); break;
        case 4: Idle(own); break;
        case 5: Disconnect(own); break;
        case 6: Slow(); break;
        case 7: PingFlood(own); break;
        case 8: Malformed(own, bad[rng_() % bad.size()]); break;
        case 9: BadControl(own); break;
        case 10: HalfOpen(); break;
      }
    }
  }

  // Connections the node must end by itself (idle, half-open handshakes),
  // and stalled readers it must have cut off.
  std::vector<std::pair<std::string, std::unique_ptr<RawWs>>>& parked() { return parked_; }

 private:
  std::unique_ptr<RawWs> Open(const std::string& topics) { return Open(topics, RawWs::Options()); }
  std::unique_ptr<RawWs> Open(const std::string& topics, const RawWs::Options& o) {
    auto c = RawWs::Connect(t_.ws_address, absl::StrCat("/ws?topics=", topics), o);
    if (!c.ok()) {
      tally_->Churn("connect", false, std::string(c.status().message()));
      return nullptr;
    }
    return std::move(*c);
  }
  // Reads until the end; true when a close frame with `code` came last.
  bool EndsWithClose(RawWs* c, int code, absl::Duration timeout = absl::Seconds(15)) {
    RawWs::Rest rest = c->ReadUntilEnd(timeout);
    int closes = 0;
    bool data_after = false;
    for (const auto& f : rest.frames) {
      if (f.opcode == kClose) {
        ++closes;
      } else if (closes > 0) {
        data_after = true;
      }
    }
    return closes == 1 && !data_after && rest.frames.back().opcode == kClose &&
           rest.frames.back().close_code() == code &&
           rest.end.code() == absl::StatusCode::kOutOfRange;
  }
  void Park(const std::string& style, std::unique_ptr<RawWs> c) {
    parked_.emplace_back(style, std::move(c));
  }
  void Polite(const std::string& own) {
    auto c = Open(absl::StrCat(kAllTopic, ",", own));
    if (!c) return;
    std::vector<RawWs::Frame> f;
    c->ReadAvailable(&f);
    c->SendClose(1000).IgnoreError();
    tally_->Churn("client_close", EndsWithClose(c.get(), 1000), "no echo of 1000");
  }
  void CloseThenReset(const std::string& own) {
    auto c = Open(absl::StrCat(kAllTopic, ",", own));
    if (!c) return;
    c->SendClose(1000).IgnoreError();
    c->Reset();
    tally_->Churn("close_then_reset", true);
  }
  void Reset(const std::string& own) {
    auto c = Open(absl::StrCat(kAllTopic, ",", own));
    if (!c) return;
    c->Reset();
    tally_->Churn("reset", true);
  }
  void HalfClose(const std::string& own) {
    auto c = Open(absl::StrCat(kAllTopic, ",", own));
    if (!c) return;
    c->ShutdownWrite();
    RawWs::Rest rest = c->ReadUntilEnd(absl::Seconds(15));
    tally_->Churn("half_close", rest.end.code() == absl::StatusCode::kOutOfRange,
                  std::string(rest.end.message()));
  }
  void Idle(const std::string& own) {
    if (parked_.size() > 200) return;
    auto c = Open(own);  // no traffic: only the idle timeout ends it
    if (c) Park("idle", std::move(c));
  }
  void Disconnect(const std::string& own) {
    auto c = Open(absl::StrCat(kAllTopic, ",", own));
    if (!c) return;
    grpc::ClientContext lctx;
    v1::ListSubscribersRequest lreq;
    lreq.set_topic(own);
    v1::ListSubscribersResponse lresp;
    if (!stub_->ListSubscribers(&lctx, lreq, &lresp).ok() || lresp.subscribers_size() != 1) {
      return tally_->Churn("disconnect", false, "ListSubscribers did not find it");
    }
    grpc::ClientContext dctx;
    v1::DisconnectRequest dreq;
    dreq.set_connection_id(lresp.subscribers(0).connection_id());
    dreq.set_code(4100);
    v1::DisconnectResponse dresp;
    if (!stub_->Disconnect(&dctx, dreq, &dresp).ok()) {
      return tally_->Churn("disconnect", false, "Disconnect failed");
    }
    // Like a client library: read to the close frame, answer it.
    while (true) {
      auto f = c->ReadFrame(absl::Seconds(15));
      if (!f.ok()) return tally_->Churn("disconnect", false, std::string(f.status().message()));
      if (f->opcode == kPing) c->SendFrame(kPong, f->payload).IgnoreError();
      if (f->opcode != kClose) continue;
      if (f->close_code() != 4100) return tally_->Churn("disconnect", false, "wrong code");
      break;
    }
    c->SendClose(4100).IgnoreError();
    RawWs::Rest rest = c->ReadUntilEnd(absl::Seconds(15));
    tally_->Churn("disconnect", rest.frames.empty() && rest.end.code() == absl::StatusCode::kOutOfRange,
                  "data or no end after the close");
  }
  void Slow() {
    if (parked_.size() > 200) return;
    RawWs::Options o;
    o.receive_buffer = 4096;
    o.max_segment = 1460;
    auto c = Open(kAllTopic, o);
    if (c) Park("slow", std::move(c));
  }
  void PingFlood(const std::string& own) {
    auto c = Open(own);
    if (!c) return;
    std::string burst;
    for (int i = 0; i < 1000; ++i) burst += RawWs::BuildFrame(kPing, "flood");
    c->SendRaw(burst).IgnoreError();
    c->SendRaw(burst).IgnoreError();
    // Pongs, then the close for the rate.
    RawWs::Rest rest = c->ReadUntilEnd(absl::Seconds(15));
    bool ok = !rest.frames.empty() && rest.frames.back().opcode == kClose &&
              rest.frames.back().close_code() == 1008;
    tally_->Churn("ping_flood", ok, "not closed with 1008");
  }
  void Malformed(const std::string& own, const BadInput& in) {
    auto c = Open(own);
    if (!c) return;
    c->SendRaw(in.bytes).IgnoreError();
    tally_->Churn("malformed", EndsWithClose(c.get(), in.code), absl::StrCat("want ", in.code));
  }
  void BadControl(const std::string& own) {
    auto c = Open(own);
    if (!c) return;
    const char* bad[] = {"not json", "[1]", R"({"op":"jump","id":1})", R"({"op":"subscribe","id":2})",
                         R"({"op":"subscribe","topic":"bad topic","id":3})"};
    for (const char* m : bad) c->SendText(m).IgnoreError();
    // Five error replies, between which broadcasts (and pings) may come.
    int errors = 0;
    for (int frames = 0; errors < 5 && frames < 50; ++frames) {
      auto f = c->ReadFrame(absl::Seconds(15));
      if (!f.ok()) break;
      if (f->opcode == kPing) c->SendFrame(kPong, f->payload).IgnoreError();
      if (f->opcode == kText && f->payload.find("\"error\"") != std::string::npos) ++errors;
    }
    c->SendClose(1000).IgnoreError();
    tally_->Churn("bad_control", errors == 5 && EndsWithClose(c.get(), 1000), "missing error replies");
  }
  void HalfOpen() {
    if (parked_.size() > 200) return;
    auto c = RawWs::ConnectTcp(t_.ws_address, {});
    if (!c.ok()) return tally_->Churn("half_open", false, std::string(c.status().message()));
    (*c)->SendRaw("GET /ws?topics=x HTTP/1.1\r\nHost: soak\r\n").IgnoreError();
    Park("half_open", std::move(*c));
  }

  Target t_;
  Tally* tally_;
  std::mt19937 rng_;
  int id_;
  int64_t n_ = 0;
  std::unique_ptr<v1::Fanout::Stub> stub_;
  std::vector<std::pair<std::string, std::unique_ptr<RawWs>>> parked_;
};

}  // namespace

absl::Status RunSoak(const BenchConfig& config, const Target& target, JsonObject* figures,
                     std::vector<std::string>* summary) {
  auto say = [&](std::string line) {
    std::fprintf(stderr, "fanout-bench: %s\n", line.c_str());
    summary->push_back(std::move(line));
  };
  auto channel = grpc::CreateChannel(target.grpc_address, grpc::InsecureChannelCredentials());
  auto stub = v1::Fanout::NewStub(channel);
  auto rss = [&]() -> int64_t {
    if (target.server_pid == 0) return 0;
    auto s = ReadProcess(target.server_pid);
    return s.ok() ? s->rss_kib : 0;
  };

  GoodFleet good;
  if (absl::Status s = good.Connect(target.ws_address, config.subscribers); !s.ok()) return s;
  good.Start();
  LoadFleet load;
  if (absl::Status s = load.Connect(target.ws_address, config.subscribers); !s.ok()) return s;
  int64_t rss_start = rss();
  say(absl::StrCat("soak: ", config.subscribers, " well-behaved subscribers on ", kTopics,
                   " topics, ", load.size(), " more on the heavy topic; server RSS ", rss_start,
                   " KiB; running for ", absl::FormatDuration(config.duration)));

  Tally tally;
  Accepted accepted;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;

  // The heavy topic: four callers, flat out every other second.
  std::atomic<int64_t> heavy_accepted{0};
  for (int p = 0; p < 4; ++p) {
    threads.emplace_back([&, p] {
      auto s = v1::Fanout::NewStub(channel);
      std::mt19937 rng(100 + p);
      while (!stop) {
        if (!Bursting()) {
          absl::SleepFor(absl::Milliseconds(20));
          continue;
        }
        grpc::ClientContext ctx;
        v1::PublishRequest req;
        req.set_topic(kAllTopic);
        req.set_payload(Payload(&rng));
        v1::PublishResponse resp;
        grpc::Status st = s->Publish(&ctx, req, &resp);
        if (st.ok()) {
          heavy_accepted.fetch_add(1);
        } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          tally.rejected_overloaded.fetch_add(1);
          Backoff();
        } else {
          tally.publish_errors.fetch_add(1);
        }
      }
    });
  }
  // The checked topics: one sequential publisher per topic, at a pace the
  // well-behaved subscribers keep up with.
  threads.emplace_back([&] {  // unary, topics 0-7
    auto s = v1::Fanout::NewStub(channel);
    std::mt19937 rng(2);
    Pacer pace(1000);
    for (int k = 0; !stop; k = (k + 1) % 8) {
      pace.Wait();
      grpc::ClientContext ctx;
      v1::PublishRequest req;
      req.set_topic(GoodTopic(k));
      req.set_payload(Payload(&rng));
      v1::PublishResponse resp;
      grpc::Status st = s->Publish(&ctx, req, &resp);
      if (st.ok()) {
        Accept(&accepted.topic[k], resp.seq(), &tally);
      } else if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        tally.rejected_overloaded.fetch_add(1);
      } else {
        tally.publish_errors.fetch_add(1);
      }
    }
  });
  threads.emplace_back([&] {  // batches, topics 8-15
    auto s = v1::Fanout::NewStub(channel);
    std::mt19937 rng(3);
    Pacer pace(16);
    while (!stop) {
      pace.Wait();
      grpc::ClientContext ctx;
      v1::PublishBatchRequest req;
      std::vector<int> order;
      for (int i = 0; i < 64; ++i) {
        int k = 8 + i % 8;
        order.push_back(k);
        auto* m = req.add_messages();
        m->set_topic(GoodTopic(k));
        m->set_payload(Payload(&rng));
      }
      v1::PublishBatchResponse resp;
      grpc::Status st = s->PublishBatch(&ctx, req, &resp);
      if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        tally.rejected_overloaded.fetch_add(1);
        continue;
      }
      if (!st.ok() || resp.results_size() != 64) {
        tally.publish_errors.fetch_add(1);
        continue;
      }
      for (int i = 0; i < 64; ++i) {
        if (resp.results(i).code() == 0) {
          Accept(&accepted.topic[order[i]], resp.results(i).seq(), &tally);
        } else {
          tally.publish_errors.fetch_add(1);
        }
      }
    }
  });
  threads.emplace_back([&] {  // one PublishStream, never refused, only slowed
    auto s = v1::Fanout::NewStub(channel);
    grpc::ClientContext ctx;
    auto stream = s->PublishStream(&ctx);
    std::mutex mu;
    std::deque<int> sent;
    std::thread reader([&] {
      v1::PublishResult r;
      while (stream->Read(&r)) {
        int k;
        {
          std::lock_guard<std::mutex> lock(mu);
          k = sent.front();
          sent.pop_front();
        }
        if (r.code() == 0) {
          Accept(&accepted.topic[k], r.seq(), &tally);
        } else {
          tally.publish_errors.fetch_add(1);
        }
      }
    });
    std::mt19937 rng(4);
    Pacer pace(1000);
    for (int i = 0; !stop; ++i) {
      pace.Wait();
      int k = 16 + i % 8;
      v1::PublishRequest req;
      req.set_topic(GoodTopic(k));
      req.set_payload(Payload(&rng));
      {
        std::lock_guard<std::mutex> lock(mu);
        sent.push_back(k);
      }
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
    reader.join();
    if (!stream->Finish().ok()) tally.publish_errors.fetch_add(1);
  });
  threads.emplace_back([&] {  // broadcasts
    auto s = v1::Fanout::NewStub(channel);
    while (!stop) {
      grpc::ClientContext ctx;
      v1::BroadcastRequest req;
      req.set_payload(R"({"broadcast":"soak"})");
      v1::BroadcastResponse resp;
      grpc::Status st = s->Broadcast(&ctx, req, &resp);
      if (st.ok()) {
        int64_t n = accepted.broadcast.fetch_add(1) + 1;
        if (static_cast<int64_t>(resp.seq()) != n) tally.seq_mismatches.fetch_add(1);
        tally.broadcasts.fetch_add(1);
      } else if (st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
        tally.publish_errors.fetch_add(1);
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  threads.emplace_back([&] {  // Watch streams opened and cancelled, or cut off
    // A small, fixed HTTP/2 window, so that a watcher that does not read
    // stops the node's writes within kilobytes, as over a slow link.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16384);
    auto s = v1::Fanout::NewStub(
        grpc::CreateCustomChannel(target.grpc_address, grpc::InsecureChannelCredentials(), args));
    for (int i = 0; !stop; ++i) {
      grpc::ClientContext ctx;
      // Bounded: near the end the publishers stop, and a watcher may then
      // wait for events that never come.
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::WatchRequest req;
      bool stall = i % 5 == 4;
      if (stall) {
        req.set_prefix("soak.");
      } else {
        req.set_topic(GoodTopic(i % kTopics));
      }
      auto reader = s->Watch(&ctx, req);
      v1::WatchEvent e;
      if (stall) {
        absl::SleepFor(absl::Seconds(2));  // a watcher that does not read
        while (reader->Read(&e)) {
        }
        grpc::Status st = reader->Finish();
        if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          tally.watch_cut_off.fetch_add(1);
        } else if (!(stop && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
          tally.WatchError(absl::StrCat("a watcher that does not read: ", st.error_code(), " ",
                                        st.error_message()));
        }
        continue;
      }
      for (int n = 0; n < 20 && reader->Read(&e); ++n) {
      }
      ctx.TryCancel();
      while (reader->Read(&e)) {
      }
      grpc::Status st = reader->Finish();
      if (st.error_code() == grpc::StatusCode::CANCELLED) {
        tally.watch_cancelled.fetch_add(1);
      } else if (!(stop && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
        tally.WatchError(absl::StrCat("a cancelled watcher: ", st.error_code(), " ",
                                      st.error_message()));
      }
    }
  });
  threads.emplace_back([&] {  // an operator looking around
    auto s = v1::Fanout::NewStub(channel);
    while (!stop) {
      grpc::ClientContext c1, c2, c3;
      v1::GetStatsResponse stats;
      v1::ListSubscribersRequest lreq;
      lreq.set_topic(kAllTopic);
      lreq.set_page_size(1000);
      v1::ListSubscribersResponse lresp;
      v1::ListTopicsResponse tresp;
      bool ok = s->GetStats(&c1, v1::GetStatsRequest(), &stats).ok() &&
                s->ListSubscribers(&c2, lreq, &lresp).ok() &&
                s->ListTopics(&c3, v1::ListTopicsRequest(), &tresp).ok();
      tally.admin_calls.fetch_add(3);
      if (!ok) tally.admin_errors.fetch_add(1);
      absl::SleepFor(absl::Milliseconds(200));
    }
  });
  std::vector<std::unique_ptr<Churn>> churns;
  for (int i = 0; i < 3; ++i) churns.push_back(std::make_unique<Churn>(target, &tally, i));
  for (auto& c : churns) threads.emplace_back([&stop, c = c.get()] { c->Run(stop); });

  // Run, sampling the server's memory.
  int64_t rss_peak = rss_start;
  absl::Time until = absl::Now() + config.duration;
  absl::Time next_report = absl::Now() + absl::Seconds(60);
  while (absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(250));
    rss_peak = std::max(rss_peak, rss());
    if (absl::Now() >= next_report) {
      next_report += absl::Seconds(60);
      say(absl::StrFormat("soak: %d publishes accepted (%d to the heavy topic), %d refused as "
                          "overloaded, server RSS %d KiB",
                          tally.accepted.load() + heavy_accepted.load(), heavy_accepted.load(),
                          tally.rejected_overloaded.load(), rss()));
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  load.Stop();

  // Everything accepted reaches the well-behaved subscribers.
  auto expected = [&] {
    int64_t total = 0;
    for (const auto& c : good.conns()) {
      for (const auto& [topic, n] : c->received) {
        total += topic.empty() ? accepted.broadcast.load() : accepted.Of(topic);
      }
    }
    return total;
  };
  int64_t want = expected();
  absl::Time drain_until = absl::Now() + absl::Seconds(60);
  while (good.total_received() < want && absl::Now() < drain_until) {
    absl::SleepFor(absl::Milliseconds(50));
  }

  // What the node must have ended by itself: idle connections (1001) and
  // half-sent handshakes (dropped); stalled readers were cut off (4008).
  std::map<std::string, int64_t> parked_ok, parked_bad;
  for (auto& churn : churns) {
    for (auto& [style, c] : churn->parked()) {
      if (style == "slow") {
        c->Reset();
        parked_ok[style]++;
        continue;
      }
      RawWs::Rest rest = c->ReadUntilEnd(absl::Seconds(15));
      bool ended = rest.end.code() == absl::StatusCode::kOutOfRange;
      if (style == "idle") {
        ended = ended && !rest.frames.empty() && rest.frames.back().opcode == kClose &&
                rest.frames.back().close_code() == 1001;
      }
      (ended ? parked_ok : parked_bad)[style]++;
      tally.Churn(style, ended, "not ended by the node");
    }
  }

  // The node comes back to the well-behaved connections alone.
  const int64_t n = static_cast<int64_t>(config.subscribers);
  std::map<std::string, double> m;
  absl::Time settle_until = absl::Now() + absl::Seconds(30);
  auto settled = [&] {
    m = Metrics(target.ws_address);
    return m["fanout_connections"] == n && m["fanout_subscriptions"] == 2 * n &&
           m["fanout_connections_closing"] == 0 && m["fanout_handshakes_in_progress"] <= 1 &&
           m["fanout_watchers"] == 0 && m["fanout_pending_publish_bytes"] == 0;
  };
  while (!settled() && absl::Now() < settle_until) absl::SleepFor(absl::Milliseconds(100));
  bool gauges_ok = settled();
  // Memory: allocator caches aside, back to where it started.
  absl::SleepFor(absl::Seconds(2));
  int64_t rss_end = rss();
  good.Stop();

  // Verdict per well-behaved subscriber.
  int64_t lost = 0, closed = 0, problems = 0;
  std::string first_problem;
  for (const auto& c : good.conns()) {
    for (const auto& [topic, got] : c->received) {
      int64_t should = topic.empty() ? accepted.broadcast.load() : accepted.Of(topic);
      lost += std::max<int64_t>(0, should - got);
    }
    closed += c->closed;
    if (!c->problem.empty()) {
      ++problems;
      if (first_problem.empty()) first_problem = c->problem;
    }
  }
  int64_t churn_total = 0, churn_bad = 0;
  JsonObject churn_json;
  for (const auto& [style, count] : tally.churn_ok) {
    churn_total += count;
    churn_json.Add(style, count);
  }
  for (const auto& [style, count] : tally.churn_unexpected) {
    churn_total += count;
    churn_bad += count;
    churn_json.Add(absl::StrCat(style, "_unexpected"), count);
  }
  // RSS may end a little above the start (allocator caches, grown tables);
  // it must not keep what the load made it hold.
  const int64_t margin_kib = std::max<int64_t>(32 << 10, rss_start / 2);
  bool rss_ok = target.server_pid == 0 || rss_end <= rss_start + margin_kib;

  figures->Add("duration_s", absl::ToDoubleSeconds(config.duration))
      .Add("good_subscribers", n)
      .Add("load_subscribers", static_cast<int64_t>(load.size()))
      .Add("load_deliveries", load.received())
      .Add("load_cut_off", load.cut_off())
      .Add("load_reconnects", load.reconnects())
      .Add("heavy_publishes_accepted", heavy_accepted.load())
      .Add("accepted_publishes", tally.accepted.load())
      .Add("accepted_broadcasts", tally.broadcasts.load())
      .Add("refused_overloaded", tally.rejected_overloaded.load())
      .Add("publish_errors", tally.publish_errors.load())
      .Add("seq_mismatches", tally.seq_mismatches.load())
      .Add("good_deliveries", good.total_received())
      .Add("good_deliveries_expected", want)
      .Add("good_lost", lost)
      .Add("good_closed", closed)
      .Add("good_problems", problems)
      .Add("churn_connections", churn_total)
      .Add("churn_unexpected", churn_bad)
      .Add("churn", churn_json)
      .Add("watch_cancelled", tally.watch_cancelled.load())
      .Add("watch_cut_off", tally.watch_cut_off.load())
      .Add("watch_errors", tally.watch_errors.load())
      .Add("admin_calls", tally.admin_calls.load())
      .Add("admin_errors", tally.admin_errors.load())
      .Add("slow_client_disconnects", m["fanout_slow_client_disconnects_total"])
      .Add("rate_limit_disconnects", m["fanout_rate_limit_disconnects_total"])
      .Add("protocol_error_disconnects", m["fanout_protocol_error_disconnects_total"])
      .Add("idle_disconnects", m["fanout_idle_disconnects_total"])
      .Add("handshakes_dropped", m["fanout_handshakes_dropped_total"] + m["fanout_handshake_timeouts_total"])
      .Add("server_rss_start_kib", rss_start)
      .Add("server_rss_peak_kib", rss_peak)
      .Add("server_rss_end_kib", rss_end)
      .Add("server_rss_margin_kib", margin_kib)
      .Add("gauges_settled", gauges_ok);

  say(absl::StrFormat("soak: heavy topic: %d publishes accepted, %d refused as overloaded; %d "
                      "delivered to its %d readers, cut off as slow %d times (and reconnected)",
                      heavy_accepted.load(), tally.rejected_overloaded.load(), load.received(),
                      load.size(), load.cut_off()));
  say(absl::StrFormat("soak: checked topics: %d publishes accepted, %d broadcasts",
                      tally.accepted.load(), tally.broadcasts.load()));
  say(absl::StrFormat("soak: well-behaved: %d subscribers received %d of %d deliveries, lost %d, "
                      "closed %d",
                      n, good.total_received(), want, lost, closed));
  say(absl::StrFormat("soak: churn: %d connections ended %d ways, %d unexpected; slow cut off %.0f, "
                      "rate-limited %.0f, protocol errors %.0f, idle %.0f, handshakes dropped %.0f; "
                      "Watch cancelled %d, cut off %d",
                      churn_total, tally.churn_ok.size(), churn_bad,
                      m["fanout_slow_client_disconnects_total"], m["fanout_rate_limit_disconnects_total"],
                      m["fanout_protocol_error_disconnects_total"], m["fanout_idle_disconnects_total"],
                      m["fanout_handshakes_dropped_total"] + m["fanout_handshake_timeouts_total"],
                      tally.watch_cancelled.load(), tally.watch_cut_off.load()));
  say(absl::StrFormat("soak: server RSS %d KiB at start, %d KiB peak, %d KiB at the end (margin %d KiB)",
                      rss_start, rss_peak, rss_end, margin_kib));

  if (lost > 0 || problems > 0 || closed > 0) {
    return absl::DataLossError(absl::StrCat("well-behaved subscribers: lost ", lost, ", closed ",
                                            closed, "; first problem: ", first_problem));
  }
  if (tally.seq_mismatches > 0 || tally.publish_errors > 0) {
    return absl::InternalError(absl::StrCat("publishers: ", tally.seq_mismatches.load(),
                                            " sequence mismatches, ", tally.publish_errors.load(),
                                            " unexpected errors"));
  }
  if (churn_bad > 0 || tally.watch_errors > 0 || tally.admin_errors > 0) {
    return absl::InternalError(absl::StrCat("unexpected outcomes: churn ", churn_bad, " (first: ",
                                            tally.first_unexpected, "), Watch ",
                                            tally.watch_errors.load(), ", admin ",
                                            tally.admin_errors.load()));
  }
  if (!gauges_ok) {
    return absl::InternalError(absl::StrCat(
        "gauges did not settle: connections ", m["fanout_connections"], " (want ", n,
        "), subscriptions ", m["fanout_subscriptions"], " (want ", 2 * n, "), closing ",
        m["fanout_connections_closing"], ", handshakes ", m["fanout_handshakes_in_progress"],
        ", watchers ", m["fanout_watchers"], ", pending bytes ", m["fanout_pending_publish_bytes"]));
  }
  if (!rss_ok) {
    return absl::ResourceExhaustedError(absl::StrCat("server RSS ", rss_end, " KiB at the end, over ",
                                                     rss_start, " + ", margin_kib, " KiB"));
  }
  return absl::OkStatus();
}

}  // namespace fanout
