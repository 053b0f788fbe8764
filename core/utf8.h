#ifndef FANOUT_CORE_UTF8_H_
#define FANOUT_CORE_UTF8_H_

#include "absl/strings/string_view.h"

namespace fanout {

// Returns true when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). The same rule WebSocket text frames obey.
bool IsValidUtf8(absl::string_view s);

}  // namespace fanout

#endif  // FANOUT_CORE_UTF8_H_
