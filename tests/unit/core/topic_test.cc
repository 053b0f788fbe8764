#include "core/topic.h"

#include <string>

#include "core/utf8.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

TEST(ValidateTopic, AcceptsTheDocumentedAlphabet) {
  EXPECT_TRUE(ValidateTopic("news", 256).ok());
  EXPECT_TRUE(ValidateTopic("user:42/inbox@eu-west_1.v2", 256).ok());
  EXPECT_TRUE(ValidateTopic(std::string(256, 'a'), 256).ok());
}

TEST(ValidateTopic, RejectsEmptyLongAndForeignCharacters) {
  EXPECT_EQ(ValidateTopic("", 256).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateTopic(std::string(257, 'a'), 256).code(), absl::StatusCode::kInvalidArgument);
  for (const char* bad : {"a b", "a,b", "a*", "a\"b", "caf\xC3\xA9", "a\nb", "#"}) {
    EXPECT_EQ(ValidateTopic(bad, 256).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateTopic(std::string("a\0b", 3), 256).code(), absl::StatusCode::kInvalidArgument);
}

TEST(IsValidUtf8, FollowsRfc3629) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii that is longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));                      // U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("abc\xC3"));           // truncated
  EXPECT_FALSE(IsValidUtf8("12345678\xE2\x82"));  // truncated after the fast path
}

}  // namespace
}  // namespace fanout
