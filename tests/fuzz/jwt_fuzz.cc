// Fuzzes token verification (auth/token_verifier.h, through
// auth/authority.h as the front end calls it) against a node with every kind
// of key: an HS256 secret, an RSA public key (PEM) and a JWKS with an RSA
// and an EC key. The first byte, modulo 3, picks what the rest is (the seeds
// use '0', '1' and '2'):
//   0: a token, as it arrives on the URL, in a header or in an auth op;
//   1: "header\nclaims": two JSON documents, base64url-encoded and signed
//      with the node's HS256 secret here, so the claims (exp, nbf, sub,
//      subscribe, publish) are reached past the signature check;
//   2: a JWKS document, loaded as --jwt_jwks_file would be.
// Invariants: a grant has a user and no unfilled {sub}; a refusal is
// UNAUTHENTICATED and never contains the token. Test keys, not secrets: the
// private halves signed the seed corpus and were then thrown away.

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "auth/authority.h"
#include "auth/token_verifier.h"

namespace {

constexpr char kSecret[] = "fuzz-hs256-secret-not-a-real-one";

constexpr char kRsaPublicKey[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvDDnfqNjm+8vcKSiBBxM\n"
    "MSNqNZghmTxT730x53T1I2cbaXyAHgceT7/C9/lyqH16veOOa7JVFt7Ek+wJ7/je\n"
    "J/pJ8c586hHtj531uVYDgybN4aFIDBOSjxUYgbiiOjhmsmTmYYBC6KqZ6jtpvyFb\n"
    "2nH039XSEBrhwJ3a6vWvGUc2txURkuma4DyvqHCzWGrQOKIwH/8ocsEHWT16RSnV\n"
    "cenh9SMkpcy6Ml1zJgl2nrK5r3E4lwbC3DcWM7vERGs+l+MiCXnzhTrRgY987c+B\n"
    "qEKVH4FDDgBQspqTnMdTbrhx+cSBQnD5kfYVU8/Ip541DqbDP13AuaQMsIyYTJy7\n"
    "5wIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

// kid rsa-1: the RSA key above; kid ec-1: a P-256 key.
constexpr char kJwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa-1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"vDDnf"
    "qNjm-8vcKSiBBxMMSNqNZghmTxT730x53T1I2cbaXyAHgceT7_C9_lyqH16veOOa7JVFt7Ek"
    "-wJ7_jeJ_pJ8c586hHtj531uVYDgybN4aFIDBOSjxUYgbiiOjhmsmTmYYBC6KqZ6jtpvyFb2"
    "nH039XSEBrhwJ3a6vWvGUc2txURkuma4DyvqHCzWGrQOKIwH_8ocsEHWT16RSnVcenh9SMkp"
    "cy6Ml1zJgl2nrK5r3E4lwbC3DcWM7vERGs-l-MiCXnzhTrRgY987c-BqEKVH4FDDgBQspqTn"
    "MdTbrhx-cSBQnD5kfYVU8_Ip541DqbDP13AuaQMsIyYTJy75w\",\"e\":\"AQAB\"},{\"kty\":\"E"
    "C\",\"kid\":\"ec-1\",\"crv\":\"P-256\",\"x\":\"bAyz0HYdmRH5K4myp-AgKKHxxKXgJOja2UWMz"
    "IYylnM\",\"y\":\"ypohjNCVR0d8PGbNAi1xwnZt9bT9yfI3Da2cdp-k7io\"}]}";

// RS256, kid rsa-1, sub alice, valid until 2100: verified against every
// fuzzed JWKS that loads.
constexpr char kRsaToken[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJhbGlj"
    "ZSIsImV4cCI6NDEwMjQ0NDgwMCwic3Vic2NyaWJlIjpbInVzZXIue3N1Yn0uPiIsIm5ld3Mi"
    "XX0.ZyAX8-NRsSWiCxDd_7awdaOmFpcQgE0oXlb1vZhxe8mzJCrzzFDjp1XsnJifz2Fhi0Bz"
    "UZq81N0y0UMEGRp0HmOI6KKbkPKzhHFkZNSitl1S52T7MXPV3zAAISSil6r9OcA8p8SrdzSt"
    "XOuNGxjzYdhUR9duN1IGHN1BFsu56ydzUHNUDXxESf8F_5Q6vfl0Kr2isEzVYCN-aSGnDZnL"
    "ui4f6e50VoXBeuAh6tCcMjLH72BvLEP-1Qxa94IGwd8Np4yU52hY0HraXz7F5AY2Z3viZbPp"
    "FtB_l2sZ9QEZjjOE1zfJjmhl0idmHlWNXLYcnGQ3ueHn8nnPpcBetf4QBA";

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

void WriteFile(const std::string& path, absl::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  Check(out.good(), "cannot write a key file");
}

struct Fixture {
  std::string dir;
  std::unique_ptr<fanout::Authority> authority;
  std::string jwks_path;
};

// The key files, written once per process to a directory of its own.
Fixture* GetFixture() {
  static Fixture* fixture = [] {
    auto* f = new Fixture;
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/jwt_fuzz.XXXXXX");
    Check(mkdtemp(templ.data()) != nullptr, "mkdtemp failed");
    f->dir = templ;
    fanout::Authority::Options options;
    options.tokens.secret_file = f->dir + "/secret";
    options.tokens.public_key_file = f->dir + "/rsa.pem";
    options.tokens.jwks_file = f->dir + "/jwks.json";
    WriteFile(options.tokens.secret_file, kSecret);
    WriteFile(options.tokens.public_key_file, kRsaPublicKey);
    WriteFile(options.tokens.jwks_file, kJwks);
    auto authority = fanout::Authority::Create(options);
    Check(authority.ok(), "the fixture's keys do not load");
    f->authority = *std::move(authority);
    f->jwks_path = f->dir + "/fuzzed-jwks.json";
    std::atexit([] {
      Fixture* f = GetFixture();
      for (const char* name : {"/secret", "/rsa.pem", "/jwks.json", "/fuzzed-jwks.json"}) {
        std::remove((f->dir + name).c_str());
      }
      rmdir(f->dir.c_str());
    });
    return f;
  }();
  return fixture;
}

void CheckToken(const std::string& token) {
  auto grant = GetFixture()->authority->Authenticate(token);
  if (grant.ok()) {
    Check(!grant->user.empty(), "a grant without a user");
    Check(grant->permissions != nullptr, "a grant without permissions");
    for (const auto* set : {&grant->permissions->subscribe(), &grant->permissions->publish()}) {
      for (const auto& p : *set) Check(!absl::StrContains(p.text(), "{"), "an unfilled {sub}");
    }
    return;
  }
  Check(grant.status().code() == absl::StatusCode::kUnauthenticated, "a refusal of another code");
  // A reason may quote a kid, an alg or a claim, all shorter than the token
  // that holds them, and fixed texts without two dots; only a token of three
  // parts is sure not to appear by chance (a fuzzed "ee base64u" is inside
  // "not three base64url parts").
  if (std::count(token.begin(), token.end(), '.') == 2) {
    Check(!absl::StrContains(grant.status().message(), token), "a refusal that repeats the token");
  }
}

// "header\nclaims" as a token signed with the node's HS256 secret.
std::string SignedToken(absl::string_view text) {
  size_t nl = text.find('\n');
  absl::string_view header = text.substr(0, nl);
  absl::string_view claims = nl == absl::string_view::npos ? "" : text.substr(nl + 1);
  std::string signing_input =
      absl::StrCat(absl::WebSafeBase64Escape(header), ".", absl::WebSafeBase64Escape(claims));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), kSecret, static_cast<int>(sizeof(kSecret) - 1),
       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac,
       &mac_len);
  return absl::StrCat(signing_input, ".",
                      absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<char*>(mac), mac_len)));
}

void CheckJwks(absl::string_view document) {
  Fixture* f = GetFixture();
  WriteFile(f->jwks_path, document);
  auto verifier = fanout::TokenVerifier::Create({.jwks_file = f->jwks_path});
  if (!verifier.ok()) {
    Check(verifier.status().code() == absl::StatusCode::kInvalidArgument, "a JWKS error of another code");
    return;
  }
  auto claims = (*verifier)->Verify(kRsaToken, absl::Now());
  if (claims.ok()) Check(claims->subject == "alice", "a verified token with another subject");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      CheckToken(std::string(rest));
      break;
    case 1:
      CheckToken(SignedToken(rest));
      break;
    case 2:
      CheckJwks(rest);
      break;
  }
  return 0;
}
