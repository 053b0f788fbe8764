#include "bench/echo_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/frame_parser.h"
#include "bench/system.h"

namespace fanout {
namespace {

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// An unmasked text frame holding the bench payload; returns the offset of
// the payload's end (where the stamp ends).
size_t AppendFrame(std::string* out, size_t payload_bytes) {
  out->push_back(static_cast<char>(0x81));
  if (payload_bytes < 126) {
    out->push_back(static_cast<char>(payload_bytes));
  } else if (payload_bytes <= 0xFFFF) {
    out->push_back(static_cast<char>(126));
    out->push_back(static_cast<char>(payload_bytes >> 8));
    out->push_back(static_cast<char>(payload_bytes & 0xFF));
  } else {
    out->push_back(static_cast<char>(127));
    for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((uint64_t{payload_bytes} >> (8 * i)) & 0xFF));
  }
  out->append(payload_bytes, '.');
  return out->size();
}

struct EchoConnection {
  int fd;
  std::string unsent;  // the rest of a partly written batch
};

}  // namespace

absl::StatusOr<std::unique_ptr<EchoServer>> EchoServer::Start(int cpu, size_t payload_bytes, int batch) {
  std::unique_ptr<EchoServer> server(new EchoServer());
  server->cpu_ = cpu;
  server->batch_ = std::max(1, batch);
  server->payload_bytes_ = payload_bytes;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("echo server cannot listen: ", std::strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  server->listen_fd_ = fd;
  server->port_ = ntohs(addr.sin_port);
  server->thread_ = std::thread([s = server.get()] { s->Loop(); });
  return server;
}

EchoServer::~EchoServer() {
  if (thread_.joinable()) Stop();
  if (listen_fd_ >= 0) close(listen_fd_);
}

std::string EchoServer::ws_address() const { return absl::StrCat("127.0.0.1:", port_); }

void EchoServer::BeginSending() { sending_.store(true); }

EchoStats EchoServer::Stop() {
  stop_.store(true);
  sending_.store(true);
  if (thread_.joinable()) thread_.join();
  return stats_;
}

void EchoServer::Loop() {
  (void)PinToCpu(cpu_);
  std::vector<EchoConnection> conns;
  // Accept and upgrade, one connection at a time; the client does not check
  // Sec-WebSocket-Accept, so the answer is constant.
  static constexpr char kResponse[] =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  while (!sending_.load()) {
    pollfd p{.fd = listen_fd_, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, 10) <= 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::string request;
    char buf[1024];
    bool ok = false;
    int64_t deadline = MonoNs() + 5'000'000'000;
    while (MonoNs() < deadline) {
      pollfd r{.fd = fd, .events = POLLIN, .revents = 0};
      if (poll(&r, 1, 100) <= 0) continue;
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
      if (request.find("\r\n\r\n") != std::string::npos) {
        ok = write(fd, kResponse, sizeof(kResponse) - 1) == static_cast<ssize_t>(sizeof(kResponse) - 1);
        break;
      }
    }
    if (!ok) {
      close(fd);
      continue;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conns.push_back({fd, {}});
  }

  // `batch` copies of the frame, their stamps refreshed once per round.
  std::string frames;
  std::vector<size_t> stamp_ends;
  for (int i = 0; i < batch_; ++i) stamp_ends.push_back(AppendFrame(&frames, payload_bytes_));
  stats_.connections = conns.size();
  int64_t start = MonoNs();
  double cpu_start = ThreadCpuSeconds();
  while (!stop_.load(std::memory_order_relaxed) && !conns.empty()) {
    uint64_t now = static_cast<uint64_t>(MonoNs());
    for (size_t end : stamp_ends) WriteStamp(frames.data() + end, now);
    for (EchoConnection& c : conns) {
      if (c.fd < 0) continue;
      if (!c.unsent.empty()) {
        ssize_t n = send(c.fd, c.unsent.data(), c.unsent.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
          c.unsent.erase(0, static_cast<size_t>(n));
          if (c.unsent.empty()) stats_.frames_sent += static_cast<uint64_t>(batch_);
        } else if (errno == EAGAIN) {
          ++stats_.would_block;
        } else {
          close(c.fd);
          c.fd = -1;
        }
        continue;
      }
      ssize_t n = send(c.fd, frames.data(), frames.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n == static_cast<ssize_t>(frames.size())) {
        stats_.frames_sent += static_cast<uint64_t>(batch_);
      } else if (n > 0) {
        c.unsent.assign(frames, static_cast<size_t>(n));  // keeps this round's stamps
      } else if (errno == EAGAIN) {
        ++stats_.would_block;
      } else {
        close(c.fd);
        c.fd = -1;
      }
    }
    ++stats_.rounds;
  }
  stats_.cpu_seconds = ThreadCpuSeconds() - cpu_start;
  stats_.seconds = static_cast<double>(MonoNs() - start) / 1e9;
  for (EchoConnection& c : conns) {
    if (c.fd >= 0) close(c.fd);
  }
}

}  // namespace fanout
