#ifndef FANOUT_TESTS_TESTING_TOKENS_H_
#define FANOUT_TESTS_TESTING_TOKENS_H_

#include <string>

namespace fanout::testing {

// Keys and tokens for tests, made with OpenSSL 3 and libjwt, the way an
// identity provider would make them.
struct KeyPair {
  std::string private_pem;
  std::string public_pem;
  std::string jwk;  // the public key as a JWK object, without "kid"
};
KeyPair GenerateRsaKey();
KeyPair GenerateEcKey(const char* curve);  // "P-256" or "P-384"

// A signed token: `alg` (HS256, RS256, ES256, ...) with `key` (the secret,
// or the private key's PEM), `claims` a JSON object, `kid` set when non-empty.
std::string SignToken(const char* alg, const std::string& key, const std::string& claims,
                      const std::string& kid = "");
// An unsigned token ("alg":"none") with these claims.
std::string UnsignedToken(const std::string& claims);
// A token whose header says `alg` but whose signature is an HMAC made with
// `secret` (for algorithm-confusion tests: HS256 "signed" with a PEM).
std::string HmacTokenClaimingAlg(const char* alg, const std::string& secret,
                                 const std::string& claims);

// Seconds since the epoch, now plus `delta`.
long UnixNow(long delta = 0);

// Writes `text` to a new file under the test's temporary directory and
// returns its path.
std::string WriteTempFile(const std::string& name, const std::string& text);

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_TOKENS_H_
