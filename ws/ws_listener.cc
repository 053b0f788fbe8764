#include "ws/ws_listener.h"

#include <boost/asio/socket_base.hpp>
#include <boost/asio/post.hpp>
#include <chrono>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "ws/front_end.h"
#include "ws/http_session.h"
#include "ws/io_threads.h"

namespace fanout {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

WsListener::WsListener(WsFrontEnd* front_end, IoThread* thread)
    : front_end_(front_end), thread_(thread), acceptor_(thread->context), backoff_(thread->context) {}

absl::Status WsListener::Open(const tcp::endpoint& endpoint) {
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", endpoint.address().to_string(),
                                               ":", endpoint.port(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

tcp::endpoint WsListener::local_endpoint() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void WsListener::Run() { DoAccept(); }

void WsListener::Close() {
  boost::system::error_code ec;
  acceptor_.close(ec);
  backoff_.cancel();
}

void WsListener::DoAccept() {
  acceptor_.async_accept(thread_->context, peer_, [self = shared_from_this()](
                                               boost::beast::error_code ec, tcp::socket socket) {
    self->OnAccept(ec, std::move(socket));
  });
}

void WsListener::OnAccept(boost::beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    // Out of descriptors or memory: wait a little instead of spinning, and
    // keep serving the connections we have.
    spdlog::warn("accept failed: {}", ec.message());
    backoff_.expires_after(std::chrono::milliseconds(50));
    backoff_.async_wait([self = shared_from_this()](boost::beast::error_code wait_ec) {
      if (!wait_ec) self->DoAccept();
    });
    return;
  }
  socket.set_option(tcp::no_delay(true), ec);
  // Spread connections over the I/O threads; each stays on its thread.
  IoThreadPool& pool = front_end_->pool();
  IoThread* target = &pool.thread(next_thread_);
  next_thread_ = (next_thread_ + 1) % pool.thread_count();
  if (target == thread_) {
    // Sessions read and write the socket directly first (never blocking):
    // set here once, before the first asynchronous operation would set the
    // descriptor non-blocking on its own (one ioctl per connection, not two).
    socket.non_blocking(true, ec);
    std::make_shared<HttpSession>(std::move(socket), peer_, front_end_, thread_)->Run();
  } else {
    tcp protocol = acceptor_.local_endpoint(ec).protocol();
    int fd = socket.release(ec);
    asio::post(target->context, [fe = front_end_, target, protocol, fd, peer = peer_] {
      tcp::socket moved(target->context);
      boost::system::error_code assign_ec;
      moved.assign(protocol, fd, assign_ec);
      if (assign_ec) {
        ::close(fd);
        return;
      }
      moved.non_blocking(true, assign_ec);
      std::make_shared<HttpSession>(std::move(moved), peer, fe, target)->Run();
    });
  }
  DoAccept();
}

}  // namespace fanout
