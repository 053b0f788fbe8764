#include "tests/testing/ws_client.h"

#include <string_view>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/string_body.hpp>

#include "absl/strings/str_cat.h"

namespace fanout::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

// Runs one asynchronous operation to completion or to `timeout`, which
// cancels it by closing the socket.
template <typename Op>
absl::Status WsClient::RunFor(absl::Duration timeout, Op op) {
  beast::error_code result = asio::error::would_block;
  op([&](beast::error_code ec) { result = ec; });
  ioc_.restart();
  ioc_.run_for(absl::ToChronoMilliseconds(timeout));
  if (result == asio::error::would_block) {
    beast::get_lowest_layer(ws_).cancel();
    ioc_.restart();
    ioc_.run();
    return absl::DeadlineExceededError("timed out");
  }
  if (result) return absl::UnavailableError(result.message());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WsClient>> WsClient::Connect(const std::string& address,
                                                            const std::string& target,
                                                            Refusal* refusal,
                                                            const std::string& origin) {
  std::unique_ptr<WsClient> c(new WsClient());
  size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  tcp::resolver resolver(c->ioc_);
  beast::error_code ec;
  auto results = resolver.resolve(host, port, ec);
  if (ec) return absl::InvalidArgumentError(ec.message());
  beast::get_lowest_layer(c->ws_).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(c->ws_).connect(results, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("connect: ", ec.message()));
  beast::get_lowest_layer(c->ws_).expires_never();
  if (!origin.empty()) {
    c->ws_.set_option(websocket::stream_base::decorator(
        [origin](websocket::request_type& req) { req.set(beast::http::field::origin, origin); }));
  }
  websocket::response_type res;
  absl::Status s = c->RunFor(absl::Seconds(10), [&](auto done) {
    c->ws_.async_handshake(res, address, target, [done](beast::error_code e) { done(e); });
  });
  if (!s.ok()) {
    if (refusal) {
      refusal->http_status = static_cast<int>(res.result_int());
      refusal->body = res.body();
    }
    return absl::Status(s.code(), absl::StrCat("handshake: ", s.message(), " (HTTP ",
                                               res.result_int(), ": ", res.body(), ")"));
  }
  return c;
}

absl::Status WsClient::SendText(const std::string& text, absl::Duration timeout) {
  ws_.text(true);
  return RunFor(timeout, [&](auto done) {
    ws_.async_write(asio::buffer(text), [done](beast::error_code e, size_t) { done(e); });
  });
}

absl::Status WsClient::SendBinary(const std::string& data, absl::Duration timeout) {
  ws_.binary(true);
  return RunFor(timeout, [&](auto done) {
    ws_.async_write(asio::buffer(data), [done](beast::error_code e, size_t) { done(e); });
  });
}

absl::StatusOr<WsClient::Frame> WsClient::Read(absl::Duration timeout) {
  buffer_.consume(buffer_.size());
  beast::error_code read_ec;
  absl::Status s = RunFor(timeout, [&](auto done) {
    ws_.async_read(buffer_, [done, &read_ec](beast::error_code e, size_t) {
      read_ec = e;
      done(e);
    });
  });
  // Beast records a received close frame even when answering it fails
  // because the server already closed the TCP connection.
  if (read_ec && ws_.reason().code != websocket::close_code::none) {
    close_code_ = ws_.reason().code;
    close_reason_ = std::string(ws_.reason().reason.c_str());
  }
  if (!s.ok()) return s;
  Frame f{ws_.got_text(), beast::buffers_to_string(buffer_.data())};
  f.raw = f.data;
  constexpr std::string_view kEpoch = R"(,"epoch":")";
  size_t at = f.data.find(kEpoch);
  if (f.text && f.data.rfind(R"({"topic":")", 0) == 0 && at != std::string::npos) {
    size_t end = f.data.find('"', at + kEpoch.size());
    if (end != std::string::npos) {
      f.epoch = f.data.substr(at + kEpoch.size(), end - at - kEpoch.size());
      f.data.erase(at, end + 1 - at);
    }
  }
  return f;
}

absl::StatusOr<std::string> WsClient::Request(const std::string& json, absl::Duration timeout) {
  if (absl::Status s = SendText(json, timeout); !s.ok()) return s;
  auto frame = Read(timeout);
  if (!frame.ok()) return frame.status();
  return frame->data;
}

void WsClient::SetSmallReceiveBuffer() {
  beast::error_code ec;
  beast::get_lowest_layer(ws_).socket().set_option(asio::socket_base::receive_buffer_size(4096), ec);
}

void WsClient::Close() {
  RunFor(absl::Seconds(5), [&](auto done) {
    ws_.async_close(websocket::close_code::normal, [done](beast::error_code e) { done(e); });
  }).IgnoreError();
}

}  // namespace fanout::testing
