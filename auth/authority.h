#ifndef FANOUT_AUTH_AUTHORITY_H_
#define FANOUT_AUTH_AUTHORITY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/token_verifier.h"
#include "core/topic_pattern.h"

namespace fanout {

// Who a client is and what it may do.
struct Grant {
  std::string user;  // the token's `sub`; empty for an anonymous client
  std::shared_ptr<const Permissions> permissions;
  // When the connection must end (close 4002) unless it refreshes: the
  // token's `exp` plus the leeway; InfiniteFuture for none.
  absl::Time expires = absl::InfiniteFuture();
};

// The node's rules for clients: tokens when keys are configured, and what
// anonymous clients may do.
//   No keys: anonymous clients subscribe to anything and publish only to
//     --anonymous_publish patterns (default none).
//   Keys: anonymous clients are refused unless --allow_anonymous; then they
//     subscribe and publish only to --anonymous_subscribe and
//     --anonymous_publish patterns (default none).
// Thread: safe from any thread.
class Authority {
 public:
  struct Options {
    TokenVerifier::Options tokens;
    bool allow_anonymous = false;
    std::vector<std::string> anonymous_subscribe;
    std::vector<std::string> anonymous_publish;
    size_t max_topic_length = 256;
  };
  // INVALID_ARGUMENT for an unreadable key file or a bad anonymous pattern.
  static absl::StatusOr<std::unique_ptr<Authority>> Create(const Options& options);

  // True when tokens are checked (keys are configured).
  bool requires_tokens() const { return verifier_->has_keys(); }
  // What a client without a token gets; null when such clients are refused.
  const Grant* anonymous() const { return anonymous_ ? &*anonymous_ : nullptr; }

  // Verifies `token` and turns its claims into a grant (patterns with
  // `{sub}` filled). UNAUTHENTICATED with a one-line reason otherwise, or
  // when no keys are configured.
  absl::StatusOr<Grant> Authenticate(absl::string_view token) const;

  // Re-reads the key files (SIGHUP).
  absl::Status Reload() { return verifier_->Reload(); }

 private:
  Authority() = default;
  Options options_;
  std::unique_ptr<TokenVerifier> verifier_;
  std::optional<Grant> anonymous_;
};

}  // namespace fanout

#endif  // FANOUT_AUTH_AUTHORITY_H_
