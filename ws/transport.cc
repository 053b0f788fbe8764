#include "ws/transport.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "absl/strings/str_cat.h"

namespace fanout {
namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// The reason OpenSSL queued for the last failure, for error messages.
std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

error_code TlsFailure(int ssl_error) {
  ERR_clear_error();
  // A reset or an I/O error under TLS, or a peer breaking the protocol (a
  // plain-text request on a TLS port, a bad record).
  if (ssl_error == SSL_ERROR_SYSCALL) return asio::error::connection_reset;
  return error_code(EPROTO, boost::system::system_category());
}

}  // namespace

// ------------------------------------------------------------ TlsContext

TlsContext::TlsContext(std::string cert_file, std::string key_file)
    : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)) {}

TlsContext::~TlsContext() {
  MutexLock lock(&mu_);
  SSL_CTX_free(ctx_);
}

absl::StatusOr<SSL_CTX*> TlsContext::Build(const std::string& cert_file,
                                           const std::string& key_file) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return absl::InternalError(absl::StrCat("TLS: ", OpenSslError()));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // A peer closing without close_notify is an ordinary end of stream for a
  // WebSocket (its close frame says what matters).
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Partial and moving writes: a write retried after would_block may come
  // from a queue that has grown meanwhile. Released buffers: an idle
  // connection holds no TLS record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // No session tickets: after the handshake, reading never has to write.
  SSL_CTX_set_num_tickets(ctx, 0);
  auto fail = [&](std::string what) -> absl::Status {
    std::string why = OpenSslError();
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
  };
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return fail(absl::StrCat("--tls_cert_file: cannot read a PEM certificate from '", cert_file,
                             "'"));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(absl::StrCat("--tls_key_file: cannot read a PEM private key from '", key_file, "'"));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail(absl::StrCat("--tls_key_file: '", key_file, "' is not the key of '", cert_file,
                             "'"));
  }
  return ctx;
}

absl::StatusOr<std::unique_ptr<TlsContext>> TlsContext::Load(std::string cert_file,
                                                             std::string key_file) {
  auto ctx = Build(cert_file, key_file);
  if (!ctx.ok()) return ctx.status();
  std::unique_ptr<TlsContext> tls(new TlsContext(std::move(cert_file), std::move(key_file)));
  MutexLock lock(&tls->mu_);
  tls->ctx_ = *ctx;
  return tls;
}

absl::Status TlsContext::Reload() {
  auto ctx = Build(cert_file_, key_file_);
  if (!ctx.ok()) return ctx.status();
  SSL_CTX* old;
  {
    MutexLock lock(&mu_);
    old = ctx_;
    ctx_ = *ctx;
  }
  SSL_CTX_free(old);  // connections made with it hold their own reference
  return absl::OkStatus();
}

SSL* TlsContext::NewSsl() const {
  MutexLock lock(&mu_);
  return SSL_new(ctx_);
}

absl::Status CheckPemCertificates(const std::string& file, const char* flag) {
  ERR_clear_error();
  BIO* bio = BIO_new_file(file.c_str(), "r");
  if (!bio) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read '", file, "': ", OpenSslError()));
  }
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", file, "' holds no PEM certificate: ", OpenSslError()));
  }
  X509_free(cert);
  return absl::OkStatus();
}

// ------------------------------------------------------------- Transport

Transport::Transport(Socket socket, SSL* ssl) : socket_(std::move(socket)), ssl_(ssl) {
  error_code ec;
  // OpenSSL reads and writes the descriptor itself: it must never block.
  if (!socket_.non_blocking()) socket_.non_blocking(true, ec);
  SSL_set_fd(ssl_, socket_.native_handle());
  SSL_set_accept_state(ssl_);
}

Transport::~Transport() { SSL_free(ssl_); }

Transport::Transport(Transport&& other) noexcept
    : socket_(std::move(other.socket_)),
      ssl_(std::exchange(other.ssl_, nullptr)),
      retry_bytes_(other.retry_bytes_),
      read_wants_write_(other.read_wants_write_) {}

size_t Transport::read_some(asio::mutable_buffer buffer, error_code& ec) {
  if (!ssl_) return socket_.read_some(buffer, ec);
  ec = {};
  read_wants_write_ = false;
  size_t n = 0;
  ERR_clear_error();
  int r = SSL_read_ex(ssl_, buffer.data(), buffer.size(), &n);
  if (r == 1) return n;
  switch (int e = SSL_get_error(ssl_, r)) {
    case SSL_ERROR_WANT_READ:
      ec = asio::error::would_block;
      return 0;
    case SSL_ERROR_WANT_WRITE:  // the handshake's answer did not fit the socket
      read_wants_write_ = true;
      ec = asio::error::would_block;
      return 0;
    case SSL_ERROR_ZERO_RETURN:  // close_notify, or EOF (IGNORE_UNEXPECTED_EOF)
      ec = asio::error::eof;
      return 0;
    default:
      ec = TlsFailure(e);
      return 0;
  }
}

bool Transport::ReadableNow() const { return SSL_has_pending(ssl_) == 1; }

std::string& Transport::StagingBuffer() {
  thread_local std::string buffer = [] {
    std::string s;
    s.reserve(kRecordBytes);
    return s;
  }();
  return buffer;
}

size_t Transport::WriteStaged(error_code& ec) {
  ec = {};
  const std::string& out = StagingBuffer();
  if (out.empty()) return 0;
  size_t n = 0;
  ERR_clear_error();
  int r = SSL_write_ex(ssl_, out.data(), out.size(), &n);
  if (r == 1) {
    retry_bytes_ = 0;
    return n;
  }
  switch (int e = SSL_get_error(ssl_, r)) {
    case SSL_ERROR_WANT_WRITE:
    case SSL_ERROR_WANT_READ:
      // OpenSSL keeps the record; the retry passes these bytes again.
      retry_bytes_ = out.size();
      ec = asio::error::would_block;
      return 0;
    default:
      ec = TlsFailure(e);
      return 0;
  }
}

void Transport::shutdown(Socket::shutdown_type what, error_code& ec) {
  if (ssl_ && retry_bytes_ == 0 && SSL_is_init_finished(ssl_)) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify, if the socket takes it now
    ERR_clear_error();
  }
  socket_.shutdown(what, ec);
}

}  // namespace fanout
