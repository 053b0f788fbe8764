#include "core/utf8.h"

#include <cstring>

namespace fanout {

// Hand-written because neither abseil nor Boost exposes a public validator;
// Beast's is in a detail namespace. Table from RFC 3629, section 4.
bool Utf8Validator::Feed(absl::string_view piece) {
  const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
  const unsigned char* end = p + piece.size();
  // Finish a character that the previous piece started.
  while (need_ > 0 && p < end) {
    if (*p < lo_ || *p > hi_) return false;
    lo_ = 0x80;
    hi_ = 0xBF;
    --need_;
    ++p;
  }
  while (p < end) {
    // Fast path: eight ASCII bytes at a time.
    if (end - p >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        p += 8;
        continue;
      }
    }
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c == 0xE0) {
      n = 2;
      lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      n = 2;
    } else if (c == 0xED) {
      n = 2;
      hi = 0x9F;
    } else if (c == 0xF0) {
      n = 3;
      lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
      n = 3;
    } else if (c == 0xF4) {
      n = 3;
      hi = 0x8F;
    } else {
      return false;
    }
    ++p;
    for (int i = 0; i < n; ++i, ++p) {
      if (p == end) {
        // The character continues in the next piece.
        need_ = static_cast<uint8_t>(n - i);
        lo_ = i == 0 ? lo : 0x80;
        hi_ = i == 0 ? hi : 0xBF;
        return true;
      }
      if (*p < (i == 0 ? lo : 0x80) || *p > (i == 0 ? hi : 0xBF)) return false;
    }
  }
  return true;
}

bool IsValidUtf8(absl::string_view s) {
  Utf8Validator v;
  return v.Feed(s) && v.complete();
}

}  // namespace fanout
