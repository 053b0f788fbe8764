#include "auth/api_tokens.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fanout {
namespace {

std::array<unsigned char, 32> Sha256(absl::string_view text) {
  std::array<unsigned char, 32> d;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
  return d;
}

absl::StatusOr<std::string> ReadToken(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": cannot read it (", std::strerror(errno), ")"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  absl::string_view token = text;
  absl::ConsumeSuffix(&token, "\n");
  absl::ConsumeSuffix(&token, "\r");
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": it is empty"));
  return std::string(token);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ApiTokens::Tokens>> ApiTokens::Load(const Options& o) {
  auto t = std::make_shared<Tokens>();
  if (!o.token_file.empty()) {
    auto token = ReadToken(o.token_file, "--grpc_token_file");
    if (!token.ok()) return token.status();
    t->full = Sha256(*token);
  }
  if (!o.publish_token_file.empty()) {
    auto token = ReadToken(o.publish_token_file, "--grpc_publish_token_file");
    if (!token.ok()) return token.status();
    t->publish = Sha256(*token);
  }
  return t;
}

absl::StatusOr<std::unique_ptr<ApiTokens>> ApiTokens::Create(const Options& options) {
  std::unique_ptr<ApiTokens> a(new ApiTokens(options));
  auto tokens = Load(options);
  if (!tokens.ok()) return tokens.status();
  MutexLock lock(&a->mu_);
  a->tokens_ = *std::move(tokens);
  return a;
}

bool ApiTokens::enabled() const {
  MutexLock lock(&mu_);
  return tokens_->full || tokens_->publish;
}

absl::Status ApiTokens::Reload() {
  auto tokens = Load(options_);
  if (!tokens.ok()) return tokens.status();
  MutexLock lock(&mu_);
  tokens_ = *std::move(tokens);
  return absl::OkStatus();
}

absl::Status ApiTokens::Check(std::optional<absl::string_view> authorization, Scope scope) const {
  std::shared_ptr<const Tokens> t;
  {
    MutexLock lock(&mu_);
    t = tokens_;
  }
  if (!t->full && !t->publish) return absl::OkStatus();
  absl::string_view value = authorization.value_or("");
  if (!absl::ConsumePrefix(&value, "Bearer ") && !absl::ConsumePrefix(&value, "bearer ")) {
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);
    return absl::UnauthenticatedError(
        "this API needs a token: send metadata 'authorization: Bearer <token>'");
  }
  Digest d = Sha256(value);
  auto same = [&](const std::optional<Digest>& want) {
    return want && CRYPTO_memcmp(want->data(), d.data(), d.size()) == 0;
  };
  if (same(t->full)) return absl::OkStatus();
  if (same(t->publish)) {
    if (scope == Scope::kPublish) return absl::OkStatus();
    permission_denied_.fetch_add(1, std::memory_order_relaxed);
    return absl::PermissionDeniedError(
        "this token may only publish (Publish, Broadcast, PublishBatch, PublishStream)");
  }
  unauthenticated_.fetch_add(1, std::memory_order_relaxed);
  return absl::UnauthenticatedError("the API token is not valid");
}

}  // namespace fanout
