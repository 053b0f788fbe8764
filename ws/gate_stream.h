#ifndef FANOUT_WS_GATE_STREAM_H_
#define FANOUT_WS_GATE_STREAM_H_

#include <cstddef>
#include <utility>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/role.hpp>

namespace fanout {

// The stream under Beast's websocket::stream in a WsSession. Reads go straight
// to the socket. Writes (Beast's handshake response and its control frames:
// pong, ping, close) are copied into the session's outbound queue, so the
// session stays the socket's only writer and can send its pre-built data
// frames without Beast re-framing them per connection.
//
// `Sink` must provide:
//   bool EnqueueFromBeast(const ConstBufferSequence&)   // false: connection gone
//   template <class H> void OnTeardown(H&& handler)      // flush, shut down, call
// Thread: confined to its connection's I/O thread.
template <typename Sink>
class GateStream {
 public:
  using socket_type = boost::asio::ip::tcp::socket;
  using executor_type = socket_type::executor_type;
  using next_layer_type = socket_type;
  using lowest_layer_type = socket_type;

  explicit GateStream(socket_type socket) : socket_(std::move(socket)) {}

  void set_sink(Sink* sink) { sink_ = sink; }
  Sink* sink() const { return sink_; }
  executor_type get_executor() noexcept { return socket_.get_executor(); }
  socket_type& next_layer() noexcept { return socket_; }
  const socket_type& next_layer() const noexcept { return socket_; }

  template <typename MutableBufferSequence, typename ReadToken>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
    return socket_.async_read_some(buffers, std::forward<ReadToken>(token));
  }

  template <typename ConstBufferSequence, typename WriteToken>
  auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
    return boost::asio::async_initiate<WriteToken, void(boost::beast::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& b) {
          std::size_t n = boost::asio::buffer_size(b);
          boost::beast::error_code ec;
          if (!sink_->EnqueueFromBeast(b)) {
            ec = boost::asio::error::broken_pipe;
            n = 0;
          }
          auto ex = boost::asio::get_associated_executor(handler, socket_.get_executor());
          boost::asio::post(ex, boost::beast::bind_front_handler(std::move(handler), ec, n));
        },
        token, buffers);
  }

 private:
  socket_type socket_;
  Sink* sink_ = nullptr;
};

// Beast's customization point for closing the transport after a WebSocket
// close handshake: let the session flush what it has queued first.
template <typename Sink, typename TeardownHandler>
void async_teardown(boost::beast::role_type, GateStream<Sink>& stream, TeardownHandler&& handler) {
  stream.sink()->OnTeardown(std::forward<TeardownHandler>(handler));
}

}  // namespace fanout

#endif  // FANOUT_WS_GATE_STREAM_H_
