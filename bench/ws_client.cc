#include "bench/ws_client.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <time.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <atomic>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/frame_parser.h"
#include "bench/system.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace fanout {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

void ReceiveStats::Merge(const ReceiveStats& o) {
  messages += o.messages;
  bytes += o.bytes;
  received_in_window += o.received_in_window;
  reads_in_window += o.reads_in_window;
  stamped_in_window += o.stamped_in_window;
  unstamped += o.unstamped;
  latency.Merge(o.latency);
  closes_slow += o.closes_slow;
  closes_other += o.closes_other;
  resets += o.resets;
  protocol_errors += o.protocol_errors;
}

void ConnectResult::Merge(const ConnectResult& o) {
  attempted += o.attempted;
  connected += o.connected;
  failed += o.failed;
  if (o.first_start_ns != 0 && (first_start_ns == 0 || o.first_start_ns < first_start_ns)) {
    first_start_ns = o.first_start_ns;
  }
  last_done_ns = std::max(last_done_ns, o.last_done_ns);
  handshake.Merge(o.handshake);
  if (first_error.empty()) first_error = o.first_error;
}

namespace {

// Decides where a connection comes from: 127.0.0.1 + (index % K), so that
// more connections fit than one source address has ephemeral ports.
std::optional<asio::ip::address_v4> SourceAddress(const tcp::endpoint& server, size_t index,
                                                  int count) {
  if (count <= 1 || !server.address().is_v4() || !server.address().is_loopback()) return std::nullopt;
  return asio::ip::address_v4((127u << 24) | (1u + static_cast<uint32_t>(index % count)));
}

}  // namespace

// One subscriber connection. Lives until its ClientThread is destroyed, so a
// completion handler can always reach it.
struct Connection {
  enum class State : uint8_t { kConnecting, kHandshake, kOpen, kClosed };

  Connection(asio::io_context& ctx, uint8_t stamp_tail) : socket(ctx), parser(stamp_tail) {}

  tcp::socket socket;
  std::unique_ptr<uint8_t[]> buffer;
  std::string request;  // the upgrade request, freed once written
  FrameParser parser;
  int64_t started_ns = 0;
  uint32_t handshake_bytes = 0;
  State state = State::kConnecting;
  bool slow = false;
  bool reading = false;   // a read is pending
  bool writing = false;   // a pong is being written
  bool timed_out = false;
};

// ClientThread runs one io_context on its own thread and owns the connections
// opened on it. Thread: the public methods post to the thread and wait, they
// are called from the controlling thread; the rest runs on the thread.
class ClientThread {
 public:
  ClientThread(const FleetOptions& options, tcp::endpoint server)
      : options_(options),
        server_(server),
        stamp_tail_(options.json_format ? 2 : 0),
        host_header_(options.ws_address),
        buffer_bytes_(std::max<size_t>(options.read_buffer_bytes, 1024)),
        timer_(ctx_),
        work_(asio::make_work_guard(ctx_)) {
    thread_ = std::thread([this] { Run(); });
  }

  ~ClientThread() {
    Call([this] { CloseAllOnThread(); });
    work_.reset();
    ctx_.stop();
    thread_.join();
  }

  struct Pending {
    size_t index;
    const ConnectionSpec* spec;
  };

  ConnectResult Connect(std::vector<Pending> batch, size_t concurrency) {
    std::promise<ConnectResult> done;
    auto future = done.get_future();
    asio::post(ctx_, [&] { BeginConnect(std::move(batch), concurrency, &done); });
    return future.get();
  }

  void SetWindow(int64_t t0, int64_t t1) {
    Call([&] {
      t0_ = t0;
      t1_ = t1;
      for (ReceiveStats& s : stats_) {
        s.received_in_window = 0;
        s.reads_in_window = 0;
        s.stamped_in_window = 0;
        s.latency.Reset();
      }
    });
  }

  void Snapshot(FleetSnapshot* out) {
    Call([&] {
      out->normal.Merge(stats_[0]);
      out->slow.Merge(stats_[1]);
      for (const auto& c : conns_) {
        if (c->state != Connection::State::kOpen) continue;
        (c->slow ? out->open_slow : out->open_normal) += 1;
      }
    });
    out->cpu_seconds += CpuSeconds();
  }

  double BusySeconds() {
    if (!options_.busy_poll) return CpuSeconds();
    return static_cast<double>(busy_ns_.load(std::memory_order_relaxed)) / 1e9;
  }

  double CpuSeconds() {
    clockid_t clock;
    timespec ts{};
    if (pthread_getcpuclockid(thread_.native_handle(), &clock) != 0 || clock_gettime(clock, &ts) != 0) {
      return 0;
    }
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }

  void PauseSlow(bool paused) {
    Call([&] {
      slow_paused_ = paused;
      if (paused) return;
      for (const auto& c : conns_) {
        if (c->slow && c->state == Connection::State::kOpen && !c->reading) StartRead(c.get());
      }
    });
  }

  void CloseAll() {
    Call([this] { CloseAllOnThread(); });
  }

 private:
  // Parser events for one read of one connection.
  struct Sink {
    ClientThread* thread;
    Connection* conn;
    int64_t now;
    void OnMessage(bool stamped, uint64_t stamp, uint64_t bytes) {
      thread->CountMessage(*conn, now, stamped, stamp, bytes);
    }
    void OnPing(const uint8_t* data, size_t n) { thread->SendPong(conn, data, n); }
    void OnClose(uint16_t code) { thread->OnCloseFrame(conn, code); }
  };

  void Run() {
    if (!options_.busy_poll) {
      ctx_.run();
      return;
    }
    while (!ctx_.stopped()) {
      int64_t start = MonoNs();
      if (ctx_.poll() > 0) {
        busy_ns_.store(busy_ns_.load(std::memory_order_relaxed) + (MonoNs() - start),
                       std::memory_order_relaxed);
      }
    }
  }

  template <typename F>
  void Call(F f) {
    std::promise<void> done;
    auto future = done.get_future();
    asio::post(ctx_, [&] {
      f();
      done.set_value();
    });
    future.get();
  }

  void BeginConnect(std::vector<Pending> batch, size_t concurrency,
                    std::promise<ConnectResult>* done) {
    batch_ = std::move(batch);
    next_ = 0;
    in_flight_ = 0;
    concurrency_ = std::max<size_t>(1, concurrency);
    result_ = ConnectResult();
    result_.attempted = batch_.size();
    connect_done_ = done;
    scan_from_ = conns_.size();
    Launch();
    MaybeFinishConnect();
    ArmDeadlineTimer();
  }

  void Launch() {
    // Open() may fail at once and call Fail(), which must not recurse into
    // here: thousands of immediate failures (EMFILE) would exhaust the stack.
    if (launching_) return;
    launching_ = true;
    while (in_flight_ < concurrency_ && next_ < batch_.size()) Open(batch_[next_++]);
    launching_ = false;
  }

  void Open(const Pending& p) {
    auto owned = std::make_unique<Connection>(ctx_, stamp_tail_);
    Connection* c = owned.get();
    conns_.push_back(std::move(owned));
    ++in_flight_;
    c->slow = p.spec->slow;
    c->started_ns = MonoNs();
    if (result_.first_start_ns == 0) result_.first_start_ns = c->started_ns;
    boost::system::error_code ec;
    c->socket.open(tcp::v4(), ec);
    if (ec) return Fail(c, absl::StrCat("socket: ", ec.message()));
    int one = 1;
    // Let connect() pick the port per destination, not bind() per source.
    setsockopt(c->socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    c->socket.set_option(tcp::no_delay(true), ec);
    if (c->slow && options_.slow_rcvbuf > 0) {
      c->socket.set_option(asio::socket_base::receive_buffer_size(options_.slow_rcvbuf), ec);
    }
    if (c->slow && options_.slow_mss > 0) {
      int mss = options_.slow_mss;
      setsockopt(c->socket.native_handle(), IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
    }
    if (auto source = SourceAddress(server_, p.index, options_.source_addresses)) {
      c->socket.bind(tcp::endpoint(*source, 0), ec);
      if (ec) return Fail(c, absl::StrCat("bind ", source->to_string(), ": ", ec.message()));
    }
    c->buffer.reset(new uint8_t[buffer_bytes_]);
    c->request = absl::StrCat("GET /ws?topics=", p.spec->topics,
                              p.spec->since.empty() ? "" : "&since=", p.spec->since,
                              options_.json_format ? "" : "&format=raw",
                              " HTTP/1.1\r\nHost: ", host_header_,
                              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n");
    c->socket.async_connect(server_, [this, c](boost::system::error_code ec) {
      if (ec) return Fail(c, absl::StrCat("connect: ", ec.message()));
      c->state = Connection::State::kHandshake;
      asio::async_write(c->socket, asio::buffer(c->request),
                        [this, c](boost::system::error_code ec, size_t) {
                          std::string().swap(c->request);
                          if (ec) return Fail(c, absl::StrCat("write upgrade: ", ec.message()));
                          ReadHandshake(c);
                        });
    });
  }

  void ReadHandshake(Connection* c) {
    c->socket.async_read_some(
        asio::buffer(c->buffer.get() + c->handshake_bytes, buffer_bytes_ - c->handshake_bytes),
        [this, c](boost::system::error_code ec, size_t n) {
          if (ec) return Fail(c, absl::StrCat("read upgrade response: ", ec.message()));
          c->handshake_bytes += static_cast<uint32_t>(n);
          absl::string_view got(reinterpret_cast<const char*>(c->buffer.get()), c->handshake_bytes);
          size_t end = got.find("\r\n\r\n");
          if (end == absl::string_view::npos) {
            if (c->handshake_bytes == buffer_bytes_) return Fail(c, "upgrade response too large");
            return ReadHandshake(c);
          }
          if (!absl::StartsWith(got, "HTTP/1.1 101")) {
            return Fail(c, absl::StrCat("upgrade refused: ", got.substr(0, got.find("\r\n"))));
          }
          int64_t now = MonoNs();
          c->state = Connection::State::kOpen;
          ++result_.connected;
          result_.handshake.Record(static_cast<uint64_t>(now - c->started_ns));
          result_.last_done_ns = now;
          --in_flight_;
          // Deliveries may follow the 101 in the same read.
          size_t rest = c->handshake_bytes - (end + 4);
          if (rest > 0 && !Parse(c, c->buffer.get() + end + 4, rest, now)) {
            // Parse() closed it.
          } else if (c->state == Connection::State::kOpen && !(c->slow && slow_paused_)) {
            StartRead(c);
          }
          Launch();
          MaybeFinishConnect();
        });
  }

  void Fail(Connection* c, std::string error) {
    if (c->timed_out) error = "upgrade timed out";
    boost::system::error_code ignored;
    c->socket.close(ignored);
    c->state = Connection::State::kClosed;
    c->buffer.reset();
    ++result_.failed;
    if (result_.first_error.empty()) result_.first_error = std::move(error);
    --in_flight_;
    Launch();
    MaybeFinishConnect();
  }

  void MaybeFinishConnect() {
    if (connect_done_ && in_flight_ == 0 && next_ == batch_.size()) {
      auto* done = connect_done_;
      connect_done_ = nullptr;
      batch_.clear();
      done->set_value(std::move(result_));
    }
  }

  // One timer per thread, not per connection: closes connections whose
  // upgrade takes longer than the handshake timeout.
  void ArmDeadlineTimer() {
    timer_.expires_after(std::chrono::milliseconds(250));
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec || !connect_done_) return;
      int64_t limit = MonoNs() - absl::ToInt64Nanoseconds(options_.handshake_timeout);
      for (size_t i = scan_from_; i < conns_.size(); ++i) {
        Connection* c = conns_[i].get();
        if ((c->state == Connection::State::kConnecting ||
             c->state == Connection::State::kHandshake) &&
            c->started_ns < limit && !c->timed_out) {
          c->timed_out = true;
          boost::system::error_code ignored;
          c->socket.close(ignored);  // the pending operation fails and calls Fail()
        }
      }
      ArmDeadlineTimer();
    });
  }

  void StartRead(Connection* c) {
    c->reading = true;
    c->socket.async_read_some(asio::buffer(c->buffer.get(), buffer_bytes_),
                              [this, c](boost::system::error_code ec, size_t n) { OnRead(c, ec, n); });
  }

  void OnRead(Connection* c, boost::system::error_code ec, size_t n) {
    c->reading = false;
    if (c->state != Connection::State::kOpen) return;
    if (ec) {
      ++stats_[c->slow].resets;
      return Close(c);
    }
    int64_t now = MonoNs();
    if (now >= t0_ && now < t1_) ++stats_[c->slow].reads_in_window;
    if (!Parse(c, c->buffer.get(), n, now)) return;
    if (c->state != Connection::State::kOpen) return;
    if (c->slow && slow_paused_) return;
    StartRead(c);
  }

  // Returns false (and closes `c`) on a protocol error.
  bool Parse(Connection* c, const uint8_t* data, size_t n, int64_t now) {
    Sink sink{this, c, now};
    if (c->parser.Feed(data, n, sink)) return true;
    ++stats_[c->slow].protocol_errors;
    Close(c);
    return false;
  }

  void CountMessage(const Connection& c, int64_t now, bool stamped, uint64_t stamp, uint64_t bytes) {
    ReceiveStats& s = stats_[c.slow];
    ++s.messages;
    s.bytes += bytes;
    if (now >= t0_ && now < t1_) ++s.received_in_window;
    if (!stamped) {
      ++s.unstamped;
      return;
    }
    int64_t sent = static_cast<int64_t>(stamp);
    if (sent >= t0_ && sent < t1_) {
      ++s.stamped_in_window;
      s.latency.Record(now > sent ? static_cast<uint64_t>(now - sent) : 0);
    }
  }

  // Pings are rare (the server pings idle connections); one pong in flight is
  // enough, a later ping gets the next.
  void SendPong(Connection* c, const uint8_t* data, size_t n) {
    if (c->writing) return;
    c->writing = true;
    // A client frame must be masked; a zero key leaves the payload as is.
    auto frame = std::make_shared<std::string>();
    frame->push_back(static_cast<char>(0x8A));
    frame->push_back(static_cast<char>(0x80 | n));
    frame->append(4, '\0');
    frame->append(reinterpret_cast<const char*>(data), n);
    asio::async_write(c->socket, asio::buffer(*frame),
                      [c, frame](boost::system::error_code, size_t) { c->writing = false; });
  }

  void OnCloseFrame(Connection* c, uint16_t code) {
    ReceiveStats& s = stats_[c->slow];
    ++(code == 4008 ? s.closes_slow : s.closes_other);
    Close(c);
  }

  void Close(Connection* c) {
    if (c->state == Connection::State::kClosed) return;
    c->state = Connection::State::kClosed;
    boost::system::error_code ignored;
    c->socket.set_option(asio::socket_base::linger(true, 0), ignored);
    c->socket.close(ignored);
    // The buffer stays until the thread ends: a cancelled read still names it.
  }

  void CloseAllOnThread() {
    for (const auto& c : conns_) {
      if (c->state == Connection::State::kOpen) Close(c.get());
    }
  }

  const FleetOptions options_;
  const tcp::endpoint server_;
  const uint8_t stamp_tail_;
  const std::string host_header_;
  const size_t buffer_bytes_;
  asio::io_context ctx_{1};
  asio::steady_timer timer_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;
  // Declared after ctx_: destroyed first, while the io_context still exists.
  std::vector<std::unique_ptr<Connection>> conns_;

  // Connect state.
  std::vector<Pending> batch_;
  size_t next_ = 0;
  size_t in_flight_ = 0;
  size_t concurrency_ = 1;
  size_t scan_from_ = 0;
  bool launching_ = false;
  ConnectResult result_;
  std::promise<ConnectResult>* connect_done_ = nullptr;

  // Receive state: [0] normal connections, [1] slow ones.
  ReceiveStats stats_[2];
  int64_t t0_ = 0;
  int64_t t1_ = 0;
  bool slow_paused_ = false;
  std::atomic<int64_t> busy_ns_{0};  // written by the thread only
};

absl::StatusOr<std::unique_ptr<ClientFleet>> ClientFleet::Create(const FleetOptions& options) {
  size_t colon = options.ws_address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.ws_address.substr(colon + 1), &port) ||
      port == 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad WebSocket address '", options.ws_address, "'"));
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(options.ws_address.substr(0, colon), ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad WebSocket host in '", options.ws_address, "'"));
  if (options.threads < 1) return absl::InvalidArgumentError("client threads must be at least 1");
  std::unique_ptr<ClientFleet> fleet(new ClientFleet(options));
  tcp::endpoint server(address, static_cast<uint16_t>(port));
  for (int i = 0; i < options.threads; ++i) {
    fleet->threads_.push_back(std::make_unique<ClientThread>(options, server));
  }
  return fleet;
}

ClientFleet::ClientFleet(const FleetOptions& options) : options_(options) {}

ClientFleet::~ClientFleet() = default;

ConnectResult ClientFleet::Connect(const std::vector<ConnectionSpec>& specs) {
  size_t t = threads_.size();
  std::vector<std::vector<ClientThread::Pending>> batches(t);
  for (size_t i = 0; i < specs.size(); ++i) {
    batches[i % t].push_back({size_ + i, &specs[i]});
  }
  size_t per_thread = (options_.connect_concurrency + t - 1) / t;
  std::vector<std::future<ConnectResult>> results;
  for (size_t i = 0; i < t; ++i) {
    results.push_back(std::async(std::launch::async, [this, i, per_thread, b = std::move(batches[i])]() mutable {
      return threads_[i]->Connect(std::move(b), per_thread);
    }));
  }
  ConnectResult total;
  for (auto& r : results) total.Merge(r.get());
  size_ += specs.size();
  return total;
}

void ClientFleet::SetWindow(int64_t t0_ns, int64_t t1_ns) {
  for (auto& t : threads_) t->SetWindow(t0_ns, t1_ns);
}

FleetSnapshot ClientFleet::Snapshot() {
  FleetSnapshot snap;
  for (auto& t : threads_) t->Snapshot(&snap);
  return snap;
}

double ClientFleet::BusySeconds() const {
  double total = 0;
  for (const auto& t : threads_) total += t->BusySeconds();
  return total;
}

double ClientFleet::CpuSeconds() const {
  double total = 0;
  for (const auto& t : threads_) total += t->CpuSeconds();
  return total;
}

void ClientFleet::PauseSlow(bool paused) {
  for (auto& t : threads_) t->PauseSlow(paused);
}

void ClientFleet::CloseAll() {
  for (auto& t : threads_) t->CloseAll();
}

}  // namespace fanout
