#ifndef FANOUT_TESTS_TESTING_RAW_WS_H_
#define FANOUT_TESTS_TESTING_RAW_WS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fanout::testing {

// A WebSocket client at the byte level, for tests that must send what no
// well-behaved library sends (bad frames, a close followed by a reset, a
// flood of pings) and see every frame the server sends, close frames
// included. A plain blocking socket with timeouts; frames are built and
// parsed here, by the RFC, independently of the server's code.
// Thread: one thread at a time.
class RawWs {
 public:
  struct Frame {
    uint8_t opcode = 0;  // 1 text, 2 binary, 8 close, 9 ping, 10 pong
    bool fin = true;
    std::string payload;
    // For close frames: the code (0 when the body is empty) and reason.
    int close_code() const;
    std::string close_reason() const;
  };
  struct Options {
    // SO_RCVBUF before connecting (0: the kernel's), so that a client that
    // does not read fills up quickly.
    int receive_buffer = 0;
    // TCP_MAXSEG before connecting (0: the kernel's). Loopback's 64 KiB
    // segments let the server's kernel buffer megabytes for one client; an
    // Ethernet-sized segment keeps its buffers as small as on a real network.
    int max_segment = 0;
    std::vector<std::string> headers;  // extra request lines, "Name: value"
  };

  // Opens a TCP connection and upgrades it with `target` ("/ws?topics=a").
  // A refused upgrade is FAILED_PRECONDITION with the status line and body.
  static absl::StatusOr<std::unique_ptr<RawWs>> Connect(const std::string& address,
                                                        const std::string& target,
                                                        const Options& options);
  static absl::StatusOr<std::unique_ptr<RawWs>> Connect(const std::string& address,
                                                        const std::string& target) {
    return Connect(address, target, Options{});
  }
  // A TCP connection only (for half-sent handshakes).
  static absl::StatusOr<std::unique_ptr<RawWs>> ConnectTcp(const std::string& address,
                                                           const Options& options);
  ~RawWs();

  // A client frame (masked unless told otherwise).
  static std::string BuildFrame(uint8_t opcode, const std::string& payload, bool fin = true,
                                bool mask = true, uint8_t rsv = 0);
  static std::string CloseBody(uint16_t code, const std::string& reason = "");

  absl::Status SendRaw(const std::string& bytes, absl::Duration timeout = absl::Seconds(10));
  absl::Status SendFrame(uint8_t opcode, const std::string& payload, bool fin = true) {
    return SendRaw(BuildFrame(opcode, payload, fin));
  }
  absl::Status SendText(const std::string& text) { return SendFrame(1, text); }
  absl::Status SendClose(uint16_t code) { return SendFrame(8, CloseBody(code)); }

  // The next frame from the server. DEADLINE_EXCEEDED when none arrives in
  // time; OUT_OF_RANGE at end of stream; UNAVAILABLE on a reset.
  absl::StatusOr<Frame> ReadFrame(absl::Duration timeout = absl::Seconds(10));
  // Every frame until the server ends the stream (EOF or reset), then the
  // status that ended it.
  struct Rest {
    std::vector<Frame> frames;
    absl::Status end;
  };
  Rest ReadUntilEnd(absl::Duration timeout = absl::Seconds(10));
  // Reads what has arrived without waiting, parsing frames into `frames`;
  // false once the stream ended. For polling many connections.
  bool ReadAvailable(std::vector<Frame>* frames);

  // Ends the connection with a TCP reset (SO_LINGER 0), no close frame.
  void Reset();
  // Sends FIN: the server sees end of stream while it can still write.
  void ShutdownWrite();
  void Close();
  int fd() const { return fd_; }
  // The raw HTTP response head of the upgrade.
  const std::string& response() const { return response_; }

 private:
  RawWs() = default;
  // Parses one complete frame from buffer_ if there is one.
  std::optional<Frame> TakeFrame();

  int fd_ = -1;
  std::string buffer_;
  std::string response_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_RAW_WS_H_
