#ifndef FANOUT_TESTS_TESTING_WS_CLIENT_H_
#define FANOUT_TESTS_TESTING_WS_CLIENT_H_

#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fanout::testing {

// A real Beast WebSocket client with timeouts on every call, for tests.
// Thread: one test thread.
class WsClient {
 public:
  struct Frame {
    bool text = true;
    // The frame's bytes, but a delivery's `"epoch":"..."` field, which
    // differs from run to run (so tests can compare envelopes exactly).
    std::string data;
    std::string epoch;  // that field's value; empty when there was none
    std::string raw;    // the bytes exactly as received
  };
  // Why the server refused an upgrade or closed the connection.
  struct Refusal {
    int http_status = 0;
    std::string body;
  };

  // Connects to ws://`address``target` (target like "/ws?topics=a").
  // On an HTTP refusal returns an error and fills `refusal` if given.
  static absl::StatusOr<std::unique_ptr<WsClient>> Connect(
      const std::string& address, const std::string& target, Refusal* refusal = nullptr,
      const std::string& origin = "");

  absl::Status SendText(const std::string& text, absl::Duration timeout = absl::Seconds(10));
  absl::Status SendBinary(const std::string& data, absl::Duration timeout = absl::Seconds(10));
  // The next data frame. DEADLINE_EXCEEDED when none arrives in time;
  // UNAVAILABLE when the connection closed (close_code() then says why).
  absl::StatusOr<Frame> Read(absl::Duration timeout = absl::Seconds(10));
  // Sends a control message and returns the reply parsed as text.
  absl::StatusOr<std::string> Request(const std::string& json,
                                      absl::Duration timeout = absl::Seconds(10));
  // The close code the server sent, once Read reported the close.
  std::optional<int> close_code() const { return close_code_; }
  std::string close_reason() const { return close_reason_; }
  // Shrinks the kernel receive buffer (call before the server sends much), so
  // a client that stops reading fills up quickly.
  void SetSmallReceiveBuffer();
  void Close();

 private:
  WsClient() : ws_(ioc_) {}
  template <typename Op>
  absl::Status RunFor(absl::Duration timeout, Op op);

  boost::asio::io_context ioc_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  boost::beast::flat_buffer buffer_;
  std::optional<int> close_code_;
  std::string close_reason_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_WS_CLIENT_H_
