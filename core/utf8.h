#ifndef FANOUT_CORE_UTF8_H_
#define FANOUT_CORE_UTF8_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace fanout {

// Validates UTF-8 that arrives in pieces, such as the fragments of a WebSocket
// text message, and says as early as possible when it cannot be valid.
// Rule: RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF),
// which is also what RFC 6455 asks of text frames.
// Thread: not thread-safe.
class Utf8Validator {
 public:
  // Feeds the next piece. Returns false as soon as the bytes fed so far are
  // not a prefix of any valid UTF-8 text; the validator is then spent.
  bool Feed(absl::string_view piece);
  // True when the bytes fed so far end on a character boundary.
  bool complete() const { return need_ == 0; }
  void Reset() { need_ = 0; lo_ = 0x80; hi_ = 0xBF; }

 private:
  uint8_t need_ = 0;   // continuation bytes the current character still needs
  uint8_t lo_ = 0x80;  // allowed range of the next continuation byte
  uint8_t hi_ = 0xBF;
};

// Returns true when `s` is well-formed UTF-8 (the rule above).
bool IsValidUtf8(absl::string_view s);

}  // namespace fanout

#endif  // FANOUT_CORE_UTF8_H_
