#include "core/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace fanout {
namespace {

const char* const kValid[] = {"", "plain ascii text", "caf\xc3\xa9", "\xe2\x82\xac 10",
                              "\xf0\x9f\x98\x80 smile", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf"};
const char* const kInvalid[] = {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "ab\xe2\x82",
                                "\xc3", "\x80", "\xc3\x28"};

TEST(Utf8Validator, AgreesWithTheWholeStringCheckHoweverTheInputIsSplit) {
  for (const char* s : kValid) EXPECT_TRUE(IsValidUtf8(s)) << s;
  for (const char* s : kInvalid) EXPECT_FALSE(IsValidUtf8(s)) << s;
  for (const char* const* set : {kValid, kInvalid}) {
    size_t n = set == kValid ? std::size(kValid) : std::size(kInvalid);
    for (size_t k = 0; k < n; ++k) {
      std::string s = set[k];
      for (size_t a = 0; a <= s.size(); ++a) {
        for (size_t b = a; b <= s.size(); ++b) {
          Utf8Validator v;
          bool ok = v.Feed(s.substr(0, a)) && v.Feed(s.substr(a, b - a)) && v.Feed(s.substr(b)) &&
                    v.complete();
          EXPECT_EQ(ok, IsValidUtf8(s)) << "split at " << a << "," << b << " of " << s;
        }
      }
    }
  }
}

TEST(Utf8Validator, FailsAsSoonAsThePrefixCannotBeValid) {
  Utf8Validator v;
  EXPECT_TRUE(v.Feed("ok \xe2"));
  EXPECT_FALSE(v.complete());
  EXPECT_FALSE(v.Feed("\x28")) << "not a continuation byte";
  Utf8Validator surrogate;
  EXPECT_FALSE(surrogate.Feed("\xed\xa0")) << "a surrogate is known bad after two bytes";
}

}  // namespace
}  // namespace fanout
