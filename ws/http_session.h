#ifndef FANOUT_WS_HTTP_SESSION_H_
#define FANOUT_WS_HTTP_SESSION_H_

#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/url/url_view.hpp>

#include "ws/timer_wheel.h"
#include "ws/transport.h"

namespace fanout {

class WsFrontEnd;
struct IoThread;

// Reads one HTTP request and routes it: /ws upgrades to a WsSession (after
// validating the handshake, topics, origin and limits); /healthz, /metrics and
// the files embedded in the binary (/client/fanout.js, /demo) answer and close.
// Lives only until the request is answered or upgraded, so an open WebSocket
// carries none of its buffers.
//
// A handshake in progress counts against --max_pending_handshakes (per I/O
// thread, its even share) from accept until answered or upgraded; at the
// limit the thread's oldest one is dropped to make room, and each is dropped
// when --handshake_timeout runs out.
// Thread: confined to its IoThread.
class HttpSession : public std::enable_shared_from_this<HttpSession>, private TimerWheel::Entry {
 public:
  // `peer`: the client's address, as accept() returned it.
  HttpSession(boost::asio::ip::tcp::socket socket, const boost::asio::ip::tcp::endpoint& peer,
              WsFrontEnd* front_end, IoThread* thread);
  ~HttpSession() override;
  void Run();

  // Drops every handshake in progress on `thread` (the node is stopping).
  // Runs on `thread`.
  static void DropAll(IoThread* thread);

  // The answer to a WebSocket key (RFC 6455, section 4.2.2).
  static std::string AcceptKey(std::string_view key);

 private:
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;
  struct FifoNode : ::fanout::ListNode {
    HttpSession* owner = nullptr;
  };

  void OnRead(boost::beast::error_code ec);
  // `target` views `req`'s target, parsed once by OnRead.
  void HandleUpgrade(Request& req, const boost::urls::url_view& target);
  // One more response header, when `name` is set.
  struct Header {
    const char* name;
    const char* value;
  };
  void Respond(unsigned status, std::string body, const char* content_type = "text/plain",
               Header extra = {nullptr, nullptr});
  // No longer a handshake in progress. Idempotent.
  void Leave();
  // Gives up on the client: closes the socket. The pending operation ends.
  void Drop();
  void OnDeadline() override;

  Transport socket_;
  const boost::asio::ip::tcp::endpoint peer_;
  WsFrontEnd* const front_end_;
  IoThread* const thread_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::empty_body>> parser_;
  std::shared_ptr<Response> response_;
  FifoNode fifo_;
  bool pending_ = false;  // counted as a handshake in progress
  bool head_ = false;
};

}  // namespace fanout

#endif  // FANOUT_WS_HTTP_SESSION_H_
