#include "auth/token_verifier.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

constexpr char kSecret[] = "unit-test-secret";

// A node with only an HS256 secret, in a file of its own.
class TokenVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/token_verifier_test.XXXXXX");
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
    std::ofstream(dir_ + "/secret") << kSecret << "\n";
    auto v = TokenVerifier::Create({.secret_file = dir_ + "/secret"});
    ASSERT_TRUE(v.ok()) << v.status();
    verifier_ = *std::move(v);
  }
  void TearDown() override {
    std::remove((dir_ + "/secret").c_str());
    rmdir(dir_.c_str());
  }

  static std::string Sign(const std::string& claims) {
    std::string input = absl::StrCat(absl::WebSafeBase64Escape(R"({"alg":"HS256","typ":"JWT"})"),
                                     ".", absl::WebSafeBase64Escape(claims));
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), kSecret, sizeof(kSecret) - 1,
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
    return absl::StrCat(input, ".",
                        absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<char*>(mac), len)));
  }

  std::string dir_;
  std::unique_ptr<TokenVerifier> verifier_;
};

TEST_F(TokenVerifierTest, AcceptsASignedTokenAndReadsItsExpiry) {
  auto claims = verifier_->Verify(Sign(R"({"sub":"alice","exp":4102444800})"), absl::Now());
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->subject, "alice");
  EXPECT_EQ(claims->expires, absl::FromUnixSeconds(4102444800));
}

// Found by jwt_fuzz: an `exp` beyond int64 seconds (4.1e27 here) was cast
// to int64_t, which is undefined (UBSan: "outside the range of
// representable values"); on x86-64 it becomes INT64_MIN, so a token that
// "never expires" gets an expiry in the deep past and its connection is
// closed 4002 at once.
TEST_F(TokenVerifierTest, AnExpiryBeyondInt64IsInTheFuture) {
  auto claims = verifier_->Verify(
      Sign(R"({"sub":"alice","exp":4102441111111111111111114800.5})"), absl::Now());
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_TRUE(!claims->expires || *claims->expires > absl::Now());
}

}  // namespace
}  // namespace fanout
