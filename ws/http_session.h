#ifndef FANOUT_WS_HTTP_SESSION_H_
#define FANOUT_WS_HTTP_SESSION_H_

#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/url/url_view.hpp>

namespace fanout {

class WsFrontEnd;
struct IoThread;

// Reads one HTTP request and routes it: /ws upgrades to a WsSession (after
// validating topics, origin and limits), /healthz, /metrics and the files
// embedded in the binary (/client/fanout.js, /demo) answer and close. Lives
// only until the request is answered or upgraded, so an open WebSocket
// carries none of its buffers.
// Thread: confined to its IoThread.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket socket, WsFrontEnd* front_end, IoThread* thread);
  void Run();

 private:
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;
  using Response = boost::beast::http::response<boost::beast::http::string_body>;

  void OnRead(boost::beast::error_code ec);
  // `target` views `req`'s target, parsed once by OnRead.
  void HandleUpgrade(Request& req, const boost::urls::url_view& target);
  // `cross_origin`: let pages of any origin read the response.
  void Respond(unsigned status, std::string body, const char* content_type = "text/plain",
               bool cross_origin = false);

  boost::asio::ip::tcp::socket socket_;
  WsFrontEnd* const front_end_;
  IoThread* const thread_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::empty_body>> parser_;
  boost::asio::steady_timer deadline_;
  std::shared_ptr<Response> response_;
  bool head_ = false;
};

}  // namespace fanout

#endif  // FANOUT_WS_HTTP_SESSION_H_
