#include "auth/token_verifier.h"

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanout {
namespace json = boost::json;

namespace {

// The families of JWS algorithms (RFC 7518, 3.1) this node accepts.
enum class Family { kHmac, kRsa, kEc };

struct Algorithm {
  Family family;
  const char* curve;  // EC: the curve the key must be on
};

std::optional<Algorithm> AlgorithmOf(absl::string_view alg) {
  if (alg == "HS256" || alg == "HS384" || alg == "HS512") return Algorithm{Family::kHmac, nullptr};
  if (alg == "RS256" || alg == "RS384" || alg == "RS512") return Algorithm{Family::kRsa, nullptr};
  if (alg == "ES256") return Algorithm{Family::kEc, "prime256v1"};
  if (alg == "ES384") return Algorithm{Family::kEc, "secp384r1"};
  return std::nullopt;
}

// A key as libjwt takes it and what it is: for RSA and EC a PEM public key
// (SubjectPublicKeyInfo), for HMAC (a JWKS `oct` key) the secret's bytes.
struct PublicKey {
  Family family = Family::kRsa;
  std::string curve;  // EC: the OpenSSL group name
  std::string pem;
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;

absl::StatusOr<PublicKey> Describe(EVP_PKEY* key) {
  PublicKey out;
  int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_RSA) {
    out.family = Family::kRsa;
  } else if (id == EVP_PKEY_EC) {
    out.family = Family::kEc;
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) !=
        1) {
      return absl::InvalidArgumentError("an EC key without a named curve");
    }
    out.curve = group;
    if (out.curve != "prime256v1" && out.curve != "secp384r1") {
      return absl::InvalidArgumentError(
          absl::StrCat("an EC key on curve ", out.curve, "; P-256 and P-384 are supported"));
    }
  } else {
    return absl::InvalidArgumentError("a key that is neither RSA nor EC");
  }
  BioPtr bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return absl::InternalError("cannot write the key as PEM");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  out.pem.assign(data, static_cast<size_t>(n));
  return out;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": cannot read it (", std::strerror(errno), ")"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Base64UrlDecode(absl::string_view in, bool* ok) {
  std::string out;
  *ok = absl::WebSafeBase64Unescape(in, &out);
  return out;
}

absl::StatusOr<PkeyPtr> FromParams(const char* type, OSSL_PARAM_BLD* bld) {
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* key = nullptr;
  bool ok = params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
            EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("not a valid ", type, " public key"));
  return PkeyPtr(key, EVP_PKEY_free);
}

// One JWK (RFC 7517) as a key: RSA (n, e), EC (crv, x, y) or a symmetric
// HMAC secret (oct, k), so that HMAC secrets can be rotated by kid too.
absl::StatusOr<PublicKey> FromJwk(const json::object& jwk) {
  auto str = [&](const char* name) -> std::string {
    auto* v = jwk.if_contains(name);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
  };
  std::string kty = str("kty");
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(),
                                                                     OSSL_PARAM_BLD_free);
  if (kty == "RSA") {
    bool ok_n, ok_e;
    std::string n = Base64UrlDecode(str("n"), &ok_n), e = Base64UrlDecode(str("e"), &ok_e);
    if (!ok_n || !ok_e || n.empty() || e.empty()) {
      return absl::InvalidArgumentError("an RSA key needs base64url 'n' and 'e'");
    }
    std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_n(
        BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()),
                  nullptr),
        BN_free);
    std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_e(
        BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()),
                  nullptr),
        BN_free);
    if (!OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get())) {
      return absl::InternalError("cannot build an RSA key");
    }
    auto key = FromParams("RSA", bld.get());
    if (!key.ok()) return key.status();
    return Describe(key->get());
  }
  if (kty == "EC") {
    std::string crv = str("crv");
    const char* group = crv == "P-256" ? "prime256v1" : (crv == "P-384" ? "secp384r1" : nullptr);
    if (!group) return absl::InvalidArgumentError(absl::StrCat("EC curve '", crv, "' is not supported"));
    bool ok_x, ok_y;
    std::string x = Base64UrlDecode(str("x"), &ok_x), y = Base64UrlDecode(str("y"), &ok_y);
    size_t size = crv == "P-256" ? 32 : 48;
    if (!ok_x || !ok_y || x.size() != size || y.size() != size) {
      return absl::InvalidArgumentError("an EC key needs base64url 'x' and 'y' of its curve's size");
    }
    std::string point = "\x04" + x + y;  // uncompressed (SEC 1, 2.3.3)
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                          point.size())) {
      return absl::InternalError("cannot build an EC key");
    }
    auto key = FromParams("EC", bld.get());
    if (!key.ok()) return key.status();
    return Describe(key->get());
  }
  if (kty == "oct") {
    bool ok_k;
    std::string k = Base64UrlDecode(str("k"), &ok_k);
    if (!ok_k || k.empty()) return absl::InvalidArgumentError("an oct key needs base64url 'k'");
    if (auto* alg = jwk.if_contains("alg");
        alg && !(alg->is_string() &&
                 absl::StartsWith(absl::string_view(alg->get_string().data(),
                                                    alg->get_string().size()),
                                  "HS"))) {
      return absl::InvalidArgumentError("an oct key verifies HS256/384/512 tokens only");
    }
    PublicKey out;
    out.family = Family::kHmac;
    out.pem = std::move(k);
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat("key type '", kty, "' is not supported"));
}

bool ContainsString(const json::value& v, const std::string& want) {
  if (v.is_string()) return v.get_string() == want;
  if (v.is_array()) {
    for (const auto& e : v.get_array()) {
      if (e.is_string() && e.get_string() == want) return true;
    }
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> StringArray(const json::object& claims, const char* name) {
  std::vector<std::string> out;
  auto* v = claims.if_contains(name);
  if (!v) return out;
  if (!v->is_array()) return absl::UnauthenticatedError(absl::StrCat("'", name, "' is not an array"));
  for (const auto& e : v->get_array()) {
    if (!e.is_string()) {
      return absl::UnauthenticatedError(absl::StrCat("'", name, "' holds a non-string"));
    }
    out.emplace_back(e.get_string());
  }
  return out;
}

std::optional<double> NumericDate(const json::object& claims, const char* name) {
  auto* v = claims.if_contains(name);
  if (!v || !v->is_number()) return std::nullopt;
  return v->to_number<double>();
}

}  // namespace

struct TokenVerifier::Keys {
  std::string secret;                      // HMAC; empty: none
  std::vector<PublicKey> pem;              // from --jwt_public_key_file
  std::map<std::string, PublicKey> jwks;   // kid -> key
  bool has_jwks = false;
  bool any() const { return !secret.empty() || !pem.empty() || has_jwks; }
};

namespace {

absl::StatusOr<std::shared_ptr<const TokenVerifier::Keys>> LoadKeys(
    const TokenVerifier::Options& o) {
  auto keys = std::make_shared<TokenVerifier::Keys>();
  if (!o.secret_file.empty()) {
    auto text = ReadFile(o.secret_file, "--jwt_secret_file");
    if (!text.ok()) return text.status();
    absl::string_view secret = *text;
    // Files written by `echo` end with a newline that is not part of it.
    absl::ConsumeSuffix(&secret, "\n");
    absl::ConsumeSuffix(&secret, "\r");
    if (secret.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--jwt_secret_file=", o.secret_file, ": it is empty"));
    }
    keys->secret = std::string(secret);
  }
  if (!o.public_key_file.empty()) {
    auto text = ReadFile(o.public_key_file, "--jwt_public_key_file");
    if (!text.ok()) return text.status();
    BioPtr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())), BIO_free);
    EVP_PKEY* raw = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    if (!raw) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--jwt_public_key_file=", o.public_key_file,
          ": not a PEM public key (-----BEGIN PUBLIC KEY-----, RSA or EC)"));
    }
    PkeyPtr key(raw, EVP_PKEY_free);
    auto described = Describe(key.get());
    if (!described.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--jwt_public_key_file=", o.public_key_file, ": ", described.status().message()));
    }
    keys->pem.push_back(*std::move(described));
  }
  if (!o.jwks_file.empty()) {
    auto text = ReadFile(o.jwks_file, "--jwt_jwks_file");
    if (!text.ok()) return text.status();
    boost::system::error_code ec;
    json::value doc = json::parse(*text, ec);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("--jwt_jwks_file=", o.jwks_file, ": ", why));
    };
    if (ec || !doc.is_object() || !doc.get_object().contains("keys") ||
        !doc.get_object().at("keys").is_array()) {
      return bad("not a JWKS document ({\"keys\":[...]})");
    }
    keys->has_jwks = true;
    for (const auto& k : doc.get_object().at("keys").get_array()) {
      if (!k.is_object()) return bad("a key that is not an object");
      const json::object& jwk = k.get_object();
      auto* kid = jwk.if_contains("kid");
      if (!kid || !kid->is_string() || kid->get_string().empty()) return bad("a key without 'kid'");
      if (auto* use = jwk.if_contains("use"); use && use->is_string() && use->get_string() != "sig") {
        continue;  // an encryption key
      }
      auto key = FromJwk(jwk);
      if (!key.ok()) return bad(absl::StrCat("key '", std::string(kid->get_string()), "': ", key.status().message()));
      keys->jwks[std::string(kid->get_string())] = *std::move(key);
    }
  }
  return keys;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenVerifier>> TokenVerifier::Create(const Options& options) {
  std::unique_ptr<TokenVerifier> v(new TokenVerifier(options));
  auto keys = LoadKeys(options);
  if (!keys.ok()) return keys.status();
  MutexLock lock(&v->mu_);
  v->keys_ = *std::move(keys);
  return v;
}

TokenVerifier::~TokenVerifier() = default;

bool TokenVerifier::has_keys() const {
  MutexLock lock(&mu_);
  return keys_->any();
}

absl::Status TokenVerifier::Reload() {
  auto keys = LoadKeys(options_);
  if (!keys.ok()) return keys.status();
  MutexLock lock(&mu_);
  keys_ = *std::move(keys);
  return absl::OkStatus();
}

absl::StatusOr<Claims> TokenVerifier::Verify(absl::string_view token, absl::Time now) const {
  std::shared_ptr<const Keys> keys;
  {
    MutexLock lock(&mu_);
    keys = keys_;
  }
  auto invalid = [](absl::string_view why) { return absl::UnauthenticatedError(why); };
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) {
    return invalid("malformed token (not three base64url parts)");
  }
  // The header says which key: read it before libjwt, which would accept
  // `alg: none` unverified and would take any key bytes for any algorithm.
  bool ok;
  std::string header_text = Base64UrlDecode(parts[0], &ok);
  boost::system::error_code ec;
  json::value header = ok ? json::parse(header_text, ec) : json::value();
  if (!ok || ec || !header.is_object()) return invalid("malformed token header");
  const json::object& h = header.get_object();
  auto* alg_value = h.if_contains("alg");
  if (!alg_value || !alg_value->is_string()) return invalid("token header has no 'alg'");
  std::string alg(alg_value->get_string());
  auto algorithm = AlgorithmOf(alg);
  if (!algorithm) return invalid(absl::StrCat("algorithm '", alg, "' is not accepted"));
  std::string kid;
  if (auto* k = h.if_contains("kid"); k && k->is_string()) kid = std::string(k->get_string());

  // The key for this algorithm: by kid from the JWKS, else the secret or the
  // PEM key of the algorithm's family. A key of another family never serves.
  const std::string* key = nullptr;
  auto fits = [&](const PublicKey& k) {
    return k.family == algorithm->family &&
           (algorithm->family != Family::kEc || k.curve == algorithm->curve);
  };
  if (!kid.empty() && keys->has_jwks) {
    auto it = keys->jwks.find(kid);
    if (it == keys->jwks.end()) return invalid(absl::StrCat("unknown key id '", kid, "'"));
    if (!fits(it->second)) return invalid(absl::StrCat("key '", kid, "' is not for ", alg));
    key = &it->second.pem;
  } else if (algorithm->family == Family::kHmac) {
    if (!keys->secret.empty()) key = &keys->secret;
  } else {
    for (const auto& k : keys->pem) {
      if (fits(k)) key = &k.pem;
    }
  }
  if (!key) return invalid(absl::StrCat("no key on this node verifies ", alg, " tokens"));

  std::string token_str(token);
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token_str.c_str(), reinterpret_cast<const unsigned char*>(key->data()),
                      static_cast<int>(key->size()));
  std::unique_ptr<jwt_t, decltype(&jwt_free)> jwt(raw, jwt_free);
  if (rc != 0 || !jwt) return invalid("bad signature");
  if (std::string(jwt_alg_str(jwt_get_alg(jwt.get()))) != alg) return invalid("bad signature");

  std::string body_text = Base64UrlDecode(parts[1], &ok);
  json::value body = ok ? json::parse(body_text, ec) : json::value();
  if (!ok || ec || !body.is_object()) return invalid("malformed token claims");
  const json::object& c = body.get_object();

  Claims claims;
  const double t = absl::ToDoubleSeconds(now - absl::UnixEpoch());
  const double leeway = absl::ToDoubleSeconds(options_.leeway);
  if (auto exp = NumericDate(c, "exp")) {
    if (t > *exp + leeway) return invalid("token expired");
    // Past what int64 seconds hold (the year 292,277,026,596): as good as
    // never, and casting it would be undefined.
    claims.expires = *exp >= 0x1p63 ? absl::InfiniteFuture()
                                    : absl::FromUnixSeconds(static_cast<int64_t>(std::floor(*exp)));
  }
  if (auto nbf = NumericDate(c, "nbf"); nbf && t + leeway < *nbf) {
    return invalid("token not yet valid");
  }
  if (!options_.issuer.empty()) {
    auto* iss = c.if_contains("iss");
    if (!iss || !iss->is_string() || iss->get_string() != options_.issuer) {
      return invalid("token issuer is not accepted");
    }
  }
  if (!options_.audience.empty()) {
    auto* aud = c.if_contains("aud");
    if (!aud || !ContainsString(*aud, options_.audience)) return invalid("token audience is not this node");
  }
  auto* sub = c.if_contains("sub");
  if (!sub || !sub->is_string() || sub->get_string().empty()) return invalid("token has no 'sub'");
  claims.subject = std::string(sub->get_string());
  auto subscribe = StringArray(c, "subscribe");
  if (!subscribe.ok()) return subscribe.status();
  claims.subscribe = *std::move(subscribe);
  auto publish = StringArray(c, "publish");
  if (!publish.ok()) return publish.status();
  claims.publish = *std::move(publish);
  return claims;
}

}  // namespace fanout
