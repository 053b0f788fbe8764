#ifndef FANOUT_AUTH_TOKEN_VERIFIER_H_
#define FANOUT_AUTH_TOKEN_VERIFIER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/mutex.h"

namespace fanout {

// What a verified token says.
struct Claims {
  std::string subject;                 // `sub`
  std::optional<absl::Time> expires;   // `exp`, when present
  std::vector<std::string> subscribe;  // `subscribe`: topic patterns
  std::vector<std::string> publish;    // `publish`: topic patterns
};

// Verifies JWTs (RFC 7519) with libjwt against the node's keys: an HMAC
// secret (HS256/384/512), a PEM public key (RS256/384/512, ES256/384), and
// the keys of a JWKS document (RFC 7517; RSA and EC, chosen by the token's
// `kid`). The key is chosen by the token's algorithm, never the other way
// round: `alg: none`, an algorithm the key is not for (an HS token "signed"
// with a public key's PEM as its secret), and an unknown `kid` are refused.
// `exp`, `nbf` (with leeway) and, when configured, `iss` and `aud` are
// checked here (libjwt 1.10 checks none of them).
// Thread: Verify is safe from any thread; Reload swaps the keys atomically.
class TokenVerifier {
 public:
  struct Options {
    std::string secret_file;      // HMAC secret; a trailing newline is stripped
    std::string public_key_file;  // PEM, RSA or EC
    std::string jwks_file;        // JWKS document
    std::string issuer;           // checked when set
    std::string audience;         // checked when set
    absl::Duration leeway = absl::Seconds(30);
  };

  // Loads the key files. INVALID_ARGUMENT, naming the file, when one cannot
  // be read or holds no usable key.
  static absl::StatusOr<std::unique_ptr<TokenVerifier>> Create(const Options& options);
  ~TokenVerifier();

  // True when any key is configured: the node then checks tokens.
  bool has_keys() const;

  // UNAUTHENTICATED with a one-line reason that never contains the token:
  // malformed, bad signature, alg none or not allowed for the key, unknown
  // kid, expired, not yet valid, wrong issuer or audience.
  absl::StatusOr<Claims> Verify(absl::string_view token, absl::Time now) const;

  // Re-reads the key files (key rotation on SIGHUP). On failure the keys in
  // use are kept and the error says which file failed.
  absl::Status Reload();

  struct Keys;  // the loaded keys (token_verifier.cc)

 private:
  explicit TokenVerifier(const Options& options) : options_(options) {}
  const Options options_;
  mutable Mutex mu_;
  std::shared_ptr<const Keys> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fanout

#endif  // FANOUT_AUTH_TOKEN_VERIFIER_H_
