// Fuzzes core/topic_pattern.h. The input is "pattern\nsubject\ntopic" (missing
// parts are empty). Invariants: Parse never crashes and keeps the text;
// Matches agrees with a plain segment-by-segment reference; an exact pattern
// matches only its own topic; every valid topic is an exact pattern of
// itself; IsCoveredBy is reflexive and sound; `{sub}` never lets a subject
// reach another user's topics; Permissions answer what their patterns say.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/topic.h"
#include "core/topic_pattern.h"

namespace {

using fanout::Permissions;
using fanout::TopicPattern;

constexpr size_t kMaxLength = 64;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

// The documented semantics, written the obvious way: `*` is exactly one
// segment, a final `>` one or more, anything else itself.
bool ReferenceMatch(absl::string_view pattern, absl::string_view topic) {
  std::vector<absl::string_view> p = absl::StrSplit(pattern, '.');
  std::vector<absl::string_view> t = absl::StrSplit(topic, '.');
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">") return t.size() > i;
    if (i >= t.size()) return false;
    if (p[i] != "*" && p[i] != t[i]) return false;
  }
  return t.size() == p.size();
}

// A topic the pattern must match: each `*` and `>` replaced by `fill`.
std::string Instance(absl::string_view pattern, absl::string_view fill) {
  std::vector<std::string> segments;
  for (absl::string_view s : absl::StrSplit(pattern, '.')) {
    segments.emplace_back(s == "*" || s == ">" ? fill : s);
  }
  return absl::StrJoin(segments, ".");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(reinterpret_cast<const char*>(data), size),
                     absl::MaxSplits('\n', 2));
  parts.resize(3);
  for (auto& part : parts) {
    if (part.data() == nullptr) part = "";  // absl splits a null view into nothing
  }
  absl::string_view pattern_text = parts[0], subject = parts[1], topic = parts[2];
  const bool topic_valid = fanout::ValidateTopic(topic, kMaxLength).ok();

  auto pattern = TopicPattern::Parse(pattern_text, kMaxLength);
  if (pattern.ok()) {
    const TopicPattern& p = *pattern;
    Check(p.text() == pattern_text, "Parse changed the text");
    Check(fanout::ValidateTopic(pattern_text, kMaxLength).ok() == p.exact(),
          "exact() is not 'the pattern is a topic'");
    Check(p.Matches(topic) == ReferenceMatch(pattern_text, topic), "Matches disagrees with the reference");
    if (p.exact()) Check(p.Matches(topic) == (topic == pattern_text), "an exact pattern matched another topic");
    Check(p.IsCoveredBy(p), "a pattern does not cover itself");
    // Filled with one valid segment, the pattern names a topic it matches.
    std::string instance = Instance(pattern_text, "x");
    Check(p.Matches(instance), "a pattern does not match its own instance");
    if (auto wider = TopicPattern::Parse(topic, kMaxLength); wider.ok() && p.IsCoveredBy(*wider)) {
      Check(wider->Matches(instance), "IsCoveredBy claims a pattern that misses a topic");
    }
    if (auto narrower = TopicPattern::Parse(topic, kMaxLength); narrower.ok() && narrower->IsCoveredBy(p)) {
      Check(p.Matches(Instance(topic, "x")), "IsCoveredBy claims a pattern that misses a topic");
    }
    Permissions perms({p}, {});
    Check(perms.MaySubscribe(topic) == p.Matches(topic), "MaySubscribe is not the pattern");
    Check(!perms.MayPublish(topic), "an empty publish set permits");
  }

  if (topic_valid) {
    auto self = TopicPattern::Parse(topic, kMaxLength);
    Check(self.ok() && self->exact() && self->Matches(topic), "a topic is not a pattern of itself");
    Check(Permissions::SubscribeAnything({}).MaySubscribe(topic), "SubscribeAnything refused a topic");
  }

  // {sub}: filled only with a single safe segment, so user.{sub}.> reaches
  // the subject's own topics and nobody else's.
  auto own = fanout::ParsePermissionPatterns({"user.{sub}.>"}, subject, kMaxLength);
  if (!own.empty() && own[0].Matches(topic)) {
    Check(absl::StartsWith(topic, absl::StrCat("user.", subject, ".")),
          "user.{sub}.> matched another user's topic");
  }
  std::vector<std::string> dropped;
  auto kept = fanout::ParsePermissionPatterns({std::string(pattern_text)}, subject, kMaxLength,
                                              &dropped);
  Check(kept.size() + dropped.size() == 1, "a pattern neither kept nor dropped");
  if (!kept.empty()) {
    Check(kept[0].text() == absl::StrReplaceAll(pattern_text, {{"{sub}", subject}}),
          "{sub} filled with something else");
    Check(!absl::StrContains(kept[0].text(), "{"), "a kept pattern with a brace");
  }
  return 0;
}
