#include "tests/testing/raw_ws.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fanout::testing {

int RawWs::Frame::close_code() const {
  if (payload.size() < 2) return 0;
  return (static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1]);
}

std::string RawWs::Frame::close_reason() const {
  return payload.size() > 2 ? payload.substr(2) : std::string();
}

absl::StatusOr<std::unique_ptr<RawWs>> RawWs::ConnectTcp(const std::string& address,
                                                         const Options& options) {
  size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", address));
  }
  std::unique_ptr<RawWs> c(new RawWs());
  c->fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (options.receive_buffer > 0) {
    ::setsockopt(c->fd_, SOL_SOCKET, SO_RCVBUF, &options.receive_buffer, sizeof(int));
  }
  if (options.max_segment > 0) {
    ::setsockopt(c->fd_, IPPROTO_TCP, TCP_MAXSEG, &options.max_segment, sizeof(int));
  }
  int one = 1;
  ::setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", address));
  }
  if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  return c;
}

absl::StatusOr<std::unique_ptr<RawWs>> RawWs::Connect(const std::string& address,
                                                      const std::string& target,
                                                      const Options& options) {
  auto c = ConnectTcp(address, options);
  if (!c.ok()) return c.status();
  std::string request = absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: ", address,
                                     "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                     "Sec-WebSocket-Version: 13\r\n");
  for (const auto& h : options.headers) absl::StrAppend(&request, h, "\r\n");
  request += "\r\n";
  if (absl::Status s = (*c)->SendRaw(request); !s.ok()) return s;
  // The response head, then whatever follows it belongs to the WebSocket.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::string& buf = (*c)->buffer_;
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) return absl::DeadlineExceededError("no upgrade response");
    pollfd p{(*c)->fd_, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    char tmp[4096];
    ssize_t n = ::recv((*c)->fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("upgrade: connection ended: ", buf));
    buf.append(tmp, static_cast<size_t>(n));
  }
  (*c)->response_ = buf.substr(0, end + 4);
  buf.erase(0, end + 4);
  if ((*c)->response_.rfind("HTTP/1.1 101", 0) != 0) {
    // Refused: the body follows the head.
    std::string body = buf;
    for (int i = 0; i < 50; ++i) {
      pollfd p{(*c)->fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) break;
      char tmp[4096];
      ssize_t n = ::recv((*c)->fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) break;
      body.append(tmp, static_cast<size_t>(n));
    }
    return absl::FailedPreconditionError(
        absl::StrCat((*c)->response_.substr(0, (*c)->response_.find("\r\n")), "\n", body));
  }
  return c;
}

RawWs::~RawWs() { Close(); }

void RawWs::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void RawWs::Reset() {
  linger l{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  Close();
}

void RawWs::ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }

std::string RawWs::BuildFrame(uint8_t opcode, const std::string& payload, bool fin, bool mask,
                              uint8_t rsv) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0F)));
  uint8_t m = mask ? 0x80 : 0;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(m | payload.size()));
  } else if (payload.size() <= 0xFFFF) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((uint64_t{payload.size()} >> (8 * i)) & 0xFF));
  }
  if (!mask) return f + payload;
  static thread_local std::mt19937 rng(12345);
  char key[4];
  for (char& k : key) k = static_cast<char>(rng());
  f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) f.push_back(static_cast<char>(payload[i] ^ key[i & 3]));
  return f;
}

std::string RawWs::CloseBody(uint16_t code, const std::string& reason) {
  std::string b;
  b.push_back(static_cast<char>(code >> 8));
  b.push_back(static_cast<char>(code & 0xFF));
  return b + reason;
}

absl::Status RawWs::SendRaw(const std::string& bytes, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  size_t sent = 0;
  while (sent < bytes.size()) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) return absl::DeadlineExceededError("send timed out");
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::optional<RawWs::Frame> RawWs::TakeFrame() {
  if (buffer_.size() < 2) return std::nullopt;
  auto b = [&](size_t i) { return static_cast<uint8_t>(buffer_[i]); };
  Frame f;
  f.fin = (b(0) & 0x80) != 0;
  f.opcode = b(0) & 0x0F;
  bool masked = (b(1) & 0x80) != 0;
  uint64_t len = b(1) & 0x7F;
  size_t pos = 2;
  if (len == 126) {
    if (buffer_.size() < 4) return std::nullopt;
    len = (uint64_t{b(2)} << 8) | b(3);
    pos = 4;
  } else if (len == 127) {
    if (buffer_.size() < 10) return std::nullopt;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | b(2 + i);
    pos = 10;
  }
  if (masked) pos += 4;  // servers must not mask; tests check the bytes
  if (buffer_.size() < pos + len) return std::nullopt;
  f.payload = buffer_.substr(pos, len);
  buffer_.erase(0, pos + len);
  return f;
}

bool RawWs::ReadAvailable(std::vector<Frame>* frames) {
  while (true) {
    while (auto f = TakeFrame()) frames->push_back(std::move(*f));
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(tmp, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
}

absl::StatusOr<RawWs::Frame> RawWs::ReadFrame(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (auto f = TakeFrame()) return *f;
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) return absl::DeadlineExceededError("no frame in time");
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n == 0) return absl::OutOfRangeError("end of stream");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    }
    buffer_.append(tmp, static_cast<size_t>(n));
  }
}

RawWs::Rest RawWs::ReadUntilEnd(absl::Duration timeout) {
  Rest rest;
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto f = ReadFrame(deadline - absl::Now());
    if (!f.ok()) {
      rest.end = f.status();
      return rest;
    }
    rest.frames.push_back(std::move(*f));
  }
}

}  // namespace fanout::testing
