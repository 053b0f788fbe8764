#ifndef FANOUT_BENCH_JSON_H_
#define FANOUT_BENCH_JSON_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace fanout {

// Serializes `s` as a JSON string literal.
inline std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

inline std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrFormat("%.6g", v);
}

// JsonObject builds one JSON object, keys in insertion order.
// Thread: not synchronized.
class JsonObject {
 public:
  JsonObject& Add(absl::string_view key, double v) { return Raw(key, JsonNumber(v)); }
  JsonObject& Add(absl::string_view key, int v) { return Raw(key, absl::StrCat(v)); }
  JsonObject& Add(absl::string_view key, int64_t v) { return Raw(key, absl::StrCat(v)); }
  JsonObject& Add(absl::string_view key, uint64_t v) { return Raw(key, absl::StrCat(v)); }
  JsonObject& Add(absl::string_view key, unsigned long long v) { return Raw(key, absl::StrCat(v)); }
  JsonObject& Add(absl::string_view key, bool v) { return Raw(key, v ? "true" : "false"); }
  JsonObject& Add(absl::string_view key, absl::string_view v) { return Raw(key, JsonString(v)); }
  JsonObject& Add(absl::string_view key, const char* v) { return Raw(key, JsonString(v)); }
  JsonObject& Add(absl::string_view key, const std::string& v) { return Raw(key, JsonString(v)); }
  JsonObject& Add(absl::string_view key, const JsonObject& v) { return Raw(key, v.Serialize()); }
  // Adds an already serialized JSON value.
  JsonObject& Raw(absl::string_view key, std::string json) {
    fields_.emplace_back(std::string(key), std::move(json));
    return *this;
  }
  // Appends the fields of `other`.
  JsonObject& Merge(const JsonObject& other) {
    fields_.insert(fields_.end(), other.fields_.begin(), other.fields_.end());
    return *this;
  }
  bool empty() const { return fields_.empty(); }

  std::string Serialize() const {
    std::string out = "{";
    for (size_t i = 0; i < fields_.size(); ++i) {
      if (i > 0) out += ",";
      absl::StrAppend(&out, JsonString(fields_[i].first), ":", fields_[i].second);
    }
    out += "}";
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

}  // namespace fanout

#endif  // FANOUT_BENCH_JSON_H_
