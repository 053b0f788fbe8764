#ifndef FANOUT_WS_WS_LISTENER_H_
#define FANOUT_WS_WS_LISTENER_H_

#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>

#include "absl/status/status.h"

namespace fanout {

class WsFrontEnd;
struct IoThread;

// Accepts TCP connections on one I/O thread and hands them round-robin to the
// I/O threads, each to an HttpSession that stays on its thread. One listener
// rather than one SO_REUSEPORT socket per thread: with SO_REUSEPORT a second
// fanoutd started on the same port would silently take half the traffic.
// Thread: confined to its IoThread after Open.
class WsListener : public std::enable_shared_from_this<WsListener> {
 public:
  WsListener(WsFrontEnd* front_end, IoThread* thread);

  // Binds and listens on `endpoint`. UNAVAILABLE when that fails.
  absl::Status Open(const boost::asio::ip::tcp::endpoint& endpoint);
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  // Starts the accept loop; Close (posted to the listener's thread) ends it.
  void Run();
  void Close();

 private:
  void DoAccept();
  void OnAccept(boost::beast::error_code ec, boost::asio::ip::tcp::socket socket);

  WsFrontEnd* const front_end_;
  IoThread* const thread_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer backoff_;
  // The accepted peer's address, filled in by accept() itself (no
  // getpeername per connection).
  boost::asio::ip::tcp::endpoint peer_;
  int next_thread_ = 0;
};

}  // namespace fanout

#endif  // FANOUT_WS_WS_LISTENER_H_
