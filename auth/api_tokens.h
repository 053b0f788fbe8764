#ifndef FANOUT_AUTH_API_TOKENS_H_
#define FANOUT_AUTH_API_TOKENS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/mutex.h"

namespace fanout {

// The bearer tokens of the gRPC API: a full one (--grpc_token_file), which
// may call everything in fanout.v1.Fanout, and a publish-only one
// (--grpc_publish_token_file), which may call only the publish calls. Either
// may be configured alone; with neither, the API is open. Tokens are compared
// in constant time (their SHA-256 digests, so not even the length leaks).
// Thread: Check is safe from any thread; Reload swaps atomically.
class ApiTokens {
 public:
  struct Options {
    std::string token_file;
    std::string publish_token_file;
  };
  // INVALID_ARGUMENT, naming the file, when one cannot be read or is empty.
  static absl::StatusOr<std::unique_ptr<ApiTokens>> Create(const Options& options);

  bool enabled() const;
  enum class Scope { kPublish, kAdmin };
  // OK, UNAUTHENTICATED (no token, or not one of ours), or PERMISSION_DENIED
  // (the publish token on another call). `authorization` is the value of the
  // call's `authorization` metadata, if any.
  absl::Status Check(std::optional<absl::string_view> authorization, Scope scope) const;

  // Re-reads the files (SIGHUP); on failure keeps the tokens in use.
  absl::Status Reload();

  // Calls Check refused, by the code it answered.
  uint64_t unauthenticated() const { return unauthenticated_.load(std::memory_order_relaxed); }
  uint64_t permission_denied() const { return permission_denied_.load(std::memory_order_relaxed); }

 private:
  using Digest = std::array<unsigned char, 32>;
  struct Tokens {
    std::optional<Digest> full;
    std::optional<Digest> publish;
  };
  static absl::StatusOr<std::shared_ptr<const Tokens>> Load(const Options& options);

  explicit ApiTokens(Options options) : options_(std::move(options)) {}
  const Options options_;
  mutable Mutex mu_;
  std::shared_ptr<const Tokens> tokens_ ABSL_GUARDED_BY(mu_);
  mutable std::atomic<uint64_t> unauthenticated_{0};
  mutable std::atomic<uint64_t> permission_denied_{0};
};

}  // namespace fanout

#endif  // FANOUT_AUTH_API_TOKENS_H_
