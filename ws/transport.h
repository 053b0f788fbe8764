#ifndef FANOUT_WS_TRANSPORT_H_
#define FANOUT_WS_TRANSPORT_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>

#include "absl/status/statusor.h"
#include "core/mutex.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace fanout {

// The certificate and key the WebSocket port serves (--tls_cert_file,
// --tls_key_file), re-read by Reload() on SIGHUP: new connections get the new
// ones, open connections keep theirs.
// Thread: any; NewSsl and Reload may race.
class TlsContext {
 public:
  // INVALID_ARGUMENT naming the file when the certificate or key cannot be
  // read, or they do not belong together.
  static absl::StatusOr<std::unique_ptr<TlsContext>> Load(std::string cert_file,
                                                          std::string key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A server-side TLS connection object over the current certificate.
  SSL* NewSsl() const;
  // On failure the certificate in use stays.
  absl::Status Reload();

 private:
  TlsContext(std::string cert_file, std::string key_file);
  static absl::StatusOr<SSL_CTX*> Build(const std::string& cert_file, const std::string& key_file);

  const std::string cert_file_;
  const std::string key_file_;
  mutable Mutex mu_;
  SSL_CTX* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// OK when `file` holds at least one PEM certificate (a CA bundle);
// INVALID_ARGUMENT naming `flag` and the file otherwise.
absl::Status CheckPemCertificates(const std::string& file, const char* flag);

// A connection's byte stream: a TCP socket, or TLS over it (OpenSSL on the
// socket's file descriptor). It offers the part of tcp::socket's interface
// the sessions use, with the same non-blocking semantics, so the sessions
// do not know which one they hold:
//  - read_some/write_some never block (would_block when nothing can move);
//  - async_wait(wait_read) completes when read_some can make progress, which
//    for TLS may be at once (a record already buffered) or after the socket
//    became writable (the TLS layer must send before it can read);
//  - async_read_some/async_write_some make it a Beast/Asio stream (HTTP).
// A TLS write that the socket could not take whole is kept by OpenSSL and
// must be retried with the same leading bytes: write_some reports nothing
// written until then, so a caller that retries with the unwritten rest (as
// every caller does) is correct. The peer's handshake happens on the first
// read.
// Thread: the owning I/O thread only.
class Transport {
 public:
  using Socket = boost::asio::ip::tcp::socket;
  using executor_type = Socket::executor_type;
  using error_code = boost::system::error_code;
  using wait_type = Socket::wait_type;
  using shutdown_type = Socket::shutdown_type;
  static constexpr wait_type wait_read = Socket::wait_read;
  static constexpr wait_type wait_write = Socket::wait_write;
  static constexpr shutdown_type shutdown_send = Socket::shutdown_send;

  explicit Transport(Socket socket) : socket_(std::move(socket)) {}
  // TLS over `socket`; takes `ssl` (from TlsContext::NewSsl).
  Transport(Socket socket, SSL* ssl);
  ~Transport();
  Transport(Transport&& other) noexcept;
  Transport& operator=(Transport&&) = delete;

  bool tls() const { return ssl_ != nullptr; }
  executor_type get_executor() { return socket_.get_executor(); }
  bool is_open() const { return socket_.is_open(); }
  void non_blocking(bool on, error_code& ec) { socket_.non_blocking(on, ec); }
  bool non_blocking() const { return socket_.non_blocking(); }

  size_t read_some(boost::asio::mutable_buffer buffer, error_code& ec);
  template <class ConstBufferSequence>
  size_t write_some(const ConstBufferSequence& buffers, error_code& ec) {
    if (!ssl_) return socket_.write_some(buffers, ec);
    Stage(boost::asio::buffer_sequence_begin(buffers), boost::asio::buffer_sequence_end(buffers));
    return WriteStaged(ec);
  }

  template <class Handler>
  void async_wait(Socket::wait_type type, Handler&& handler) {
    if (ssl_ && type == Socket::wait_read) {
      if (ReadableNow()) {
        return boost::asio::post(socket_.get_executor(),
                                 boost::beast::bind_front_handler(std::forward<Handler>(handler),
                                                                  error_code()));
      }
      if (read_wants_write_) type = Socket::wait_write;
    }
    socket_.async_wait(type, std::forward<Handler>(handler));
  }

  template <class MutableBufferSequence, class Handler>
  void async_read_some(const MutableBufferSequence& buffers, Handler&& handler) {
    if (!ssl_) return socket_.async_read_some(buffers, std::forward<Handler>(handler));
    error_code ec;
    size_t n = read_some(*boost::asio::buffer_sequence_begin(buffers), ec);
    if (ec == boost::asio::error::would_block) {
      return async_wait(Socket::wait_read,
                        [this, buffers, h = std::forward<Handler>(handler)](error_code ec) mutable {
                          if (ec) return h(ec, size_t{0});
                          async_read_some(buffers, std::move(h));
                        });
    }
    boost::asio::post(socket_.get_executor(),
                      boost::beast::bind_front_handler(std::forward<Handler>(handler), ec, n));
  }

  template <class ConstBufferSequence, class Handler>
  void async_write_some(const ConstBufferSequence& buffers, Handler&& handler) {
    if (!ssl_) return socket_.async_write_some(buffers, std::forward<Handler>(handler));
    error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec == boost::asio::error::would_block) {
      return socket_.async_wait(
          Socket::wait_write,
          [this, buffers, h = std::forward<Handler>(handler)](error_code ec) mutable {
            if (ec) return h(ec, size_t{0});
            async_write_some(buffers, std::move(h));
          });
    }
    boost::asio::post(socket_.get_executor(),
                      boost::beast::bind_front_handler(std::forward<Handler>(handler), ec, n));
  }

  // TLS: sends close_notify when the socket takes it at once; then FIN.
  void shutdown(Socket::shutdown_type what, error_code& ec);
  void close(error_code& ec) { socket_.close(ec); }

 private:
  // Copies up to one TLS record of the leading bytes into the thread's
  // staging buffer (exactly as many as a retried write owes, if one is).
  template <class It>
  void Stage(It begin, It end) {
    std::string& out = StagingBuffer();
    out.clear();
    const size_t want = retry_bytes_ > 0 ? retry_bytes_ : kRecordBytes;
    for (It it = begin; it != end && out.size() < want; ++it) {
      boost::asio::const_buffer b(*it);
      size_t take = std::min(b.size(), want - out.size());
      out.append(static_cast<const char*>(b.data()), take);
    }
  }
  size_t WriteStaged(error_code& ec);
  bool ReadableNow() const;
  static std::string& StagingBuffer();

  static constexpr size_t kRecordBytes = 16 * 1024;
  Socket socket_;
  SSL* ssl_ = nullptr;
  size_t retry_bytes_ = 0;         // a write OpenSSL holds, to be retried
  bool read_wants_write_ = false;  // the TLS layer must send before reading on
};

}  // namespace fanout

#endif  // FANOUT_WS_TRANSPORT_H_
