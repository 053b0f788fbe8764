#include "tests/testing/tokens.h"

#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fanout::testing {
namespace {

std::string Pem(EVP_PKEY* key, bool private_key) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (private_key) {
    PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  } else {
    PEM_write_bio_PUBKEY(bio, key);
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::string B64Url(const std::string& bytes) {
  std::string out;
  absl::WebSafeBase64Escape(bytes, &out);  // no padding
  return out;
}

std::string BnBytes(EVP_PKEY* key, const char* name, size_t pad = 0) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(std::max<size_t>(pad, static_cast<size_t>(BN_num_bytes(bn))), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

}  // namespace

KeyPair GenerateRsaKey() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  KeyPair k{Pem(key, true), Pem(key, false), ""};
  k.jwk = absl::StrCat(R"({"kty":"RSA","n":")", B64Url(BnBytes(key, OSSL_PKEY_PARAM_RSA_N)),
                       R"(","e":")", B64Url(BnBytes(key, OSSL_PKEY_PARAM_RSA_E)), R"("})");
  EVP_PKEY_free(key);
  return k;
}

KeyPair GenerateEcKey(const char* curve) {
  bool p256 = std::string(curve) == "P-256";
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", p256 ? "P-256" : "P-384");
  size_t size = p256 ? 32 : 48;
  KeyPair k{Pem(key, true), Pem(key, false), ""};
  k.jwk = absl::StrCat(R"({"kty":"EC","crv":")", curve, R"(","x":")",
                       B64Url(BnBytes(key, OSSL_PKEY_PARAM_EC_PUB_X, size)), R"(","y":")",
                       B64Url(BnBytes(key, OSSL_PKEY_PARAM_EC_PUB_Y, size)), R"("})");
  EVP_PKEY_free(key);
  return k;
}

std::string SignToken(const char* alg, const std::string& key, const std::string& claims,
                      const std::string& kid) {
  jwt_t* jwt = nullptr;
  jwt_new(&jwt);
  if (jwt_add_grants_json(jwt, claims.c_str()) != 0) throw std::runtime_error("bad claims JSON");
  if (!kid.empty()) jwt_add_header(jwt, "kid", kid.c_str());
  if (jwt_set_alg(jwt, jwt_str_alg(alg), reinterpret_cast<const unsigned char*>(key.data()),
                  static_cast<int>(key.size())) != 0) {
    jwt_free(jwt);
    throw std::runtime_error(absl::StrCat("jwt_set_alg ", alg));
  }
  char* out = jwt_encode_str(jwt);
  if (!out) {
    jwt_free(jwt);
    throw std::runtime_error(absl::StrCat("jwt_encode_str ", alg));
  }
  std::string token(out);
  free(out);
  jwt_free(jwt);
  return token;
}

std::string UnsignedToken(const std::string& claims) {
  return absl::StrCat(B64Url(R"({"alg":"none","typ":"JWT"})"), ".", B64Url(claims), ".");
}

std::string HmacTokenClaimingAlg(const char* alg, const std::string& secret,
                                 const std::string& claims) {
  std::string head = absl::StrCat(B64Url(absl::StrCat(R"({"alg":")", alg, R"(","typ":"JWT"})")),
                                  ".", B64Url(claims));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(head.data()), head.size(), mac, &len);
  return absl::StrCat(head, ".", B64Url(std::string(reinterpret_cast<char*>(mac), len)));
}

long UnixNow(long delta) { return static_cast<long>(std::time(nullptr)) + delta; }

std::string WriteTempFile(const std::string& name, const std::string& text) {
  char dir[] = "/tmp/fanout-test-XXXXXX";
  if (!mkdtemp(dir)) throw std::runtime_error("mkdtemp");
  std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << text;
  return path;
}

}  // namespace fanout::testing
