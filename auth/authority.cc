#include "auth/authority.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace fanout {

absl::StatusOr<std::unique_ptr<Authority>> Authority::Create(const Options& options) {
  std::unique_ptr<Authority> a(new Authority());
  a->options_ = options;
  auto verifier = TokenVerifier::Create(options.tokens);
  if (!verifier.ok()) return verifier.status();
  a->verifier_ = std::move(*verifier);
  auto parse = [&](const std::vector<std::string>& texts, const char* flag)
      -> absl::StatusOr<std::vector<TopicPattern>> {
    std::vector<TopicPattern> out;
    for (const auto& t : texts) {
      auto p = TopicPattern::Parse(t, options.max_topic_length);
      if (!p.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": '", t, "': ", p.status().message()));
      }
      out.push_back(*std::move(p));
    }
    return out;
  };
  auto sub = parse(options.anonymous_subscribe, "--anonymous_subscribe");
  if (!sub.ok()) return sub.status();
  auto pub = parse(options.anonymous_publish, "--anonymous_publish");
  if (!pub.ok()) return pub.status();
  if (!a->verifier_->has_keys()) {
    a->anonymous_ = Grant{{}, std::make_shared<const Permissions>(
                                  Permissions::SubscribeAnything(std::move(*pub)))};
  } else if (options.allow_anonymous) {
    a->anonymous_ = Grant{{}, std::make_shared<const Permissions>(std::move(*sub), std::move(*pub))};
  }
  return a;
}

absl::StatusOr<Grant> Authority::Authenticate(absl::string_view token) const {
  if (!verifier_->has_keys()) {
    return absl::UnauthenticatedError("this node checks no tokens (no key is configured)");
  }
  auto claims = verifier_->Verify(token, absl::Now());
  if (!claims.ok()) return claims.status();
  Grant g;
  g.user = claims->subject;
  g.permissions = std::make_shared<const Permissions>(
      ParsePermissionPatterns(claims->subscribe, claims->subject, options_.max_topic_length),
      ParsePermissionPatterns(claims->publish, claims->subject, options_.max_topic_length));
  if (claims->expires) g.expires = *claims->expires + options_.tokens.leeway;
  return g;
}

}  // namespace fanout
