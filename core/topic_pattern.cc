#include "core/topic_pattern.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/topic.h"

namespace fanout {
namespace {

constexpr bool IsTopicChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == ':' || c == '@' || c == '/' || c == '-';
}

}  // namespace

absl::StatusOr<TopicPattern> TopicPattern::Parse(absl::string_view text, size_t max_length) {
  if (text.empty()) return absl::InvalidArgumentError("pattern is empty");
  if (text.size() > max_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern is ", text.size(), " bytes, longer than the limit of ", max_length));
  }
  TopicPattern p;
  p.text_ = std::string(text);
  auto segments = std::make_shared<std::vector<Segment>>();
  size_t offset = 0;
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    absl::string_view part = parts[i];
    if (part == "*") {
      segments->push_back({Kind::kOne, {}});
      p.exact_ = false;
    } else if (part == ">") {
      if (i + 1 != parts.size()) {
        return absl::InvalidArgumentError("'>' may only be the last segment of a pattern");
      }
      segments->push_back({Kind::kRest, {}});
      p.exact_ = false;
    } else {
      for (size_t j = 0; j < part.size(); ++j) {
        unsigned char c = static_cast<unsigned char>(part[j]);
        if (c == '*' || c == '>') {
          return absl::InvalidArgumentError(absl::StrCat(
              "'", std::string(1, static_cast<char>(c)), "' must be a whole segment, at byte ",
              offset + j));
        }
        if (!IsTopicChar(c)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pattern has a character outside [A-Za-z0-9_.:@/-] and the wildcards * and > at byte ",
              offset + j));
        }
      }
      segments->push_back({Kind::kLiteral, std::string(part)});
    }
    offset += part.size() + 1;
  }
  p.segments_ = std::move(segments);
  return p;
}

bool TopicPattern::Matches(absl::string_view topic) const {
  if (exact_) return topic == text_;
  size_t pos = 0;
  const std::vector<Segment>& segs = *segments_;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (pos > topic.size()) return false;  // the topic has no segment left
    if (segs[i].kind == Kind::kRest) return true;  // one or more remain
    size_t dot = topic.find('.', pos);
    absl::string_view segment =
        topic.substr(pos, dot == absl::string_view::npos ? absl::string_view::npos : dot - pos);
    if (segs[i].kind == Kind::kLiteral && segment != segs[i].literal) return false;
    pos = dot == absl::string_view::npos ? topic.size() + 1 : dot + 1;
  }
  return pos > topic.size();  // every segment used
}

bool TopicPattern::IsCoveredBy(const TopicPattern& wider) const {
  const std::vector<Segment>& mine = *segments_;
  const std::vector<Segment>& theirs = *wider.segments_;
  for (size_t i = 0;; ++i) {
    bool mine_done = i == mine.size(), theirs_done = i == theirs.size();
    if (mine_done || theirs_done) return mine_done && theirs_done;
    const Segment& w = theirs[i];
    const Segment& m = mine[i];
    if (w.kind == Kind::kRest) return true;  // m is at least one more segment
    if (m.kind == Kind::kRest) return false;
    if (w.kind == Kind::kOne) continue;
    if (m.kind != Kind::kLiteral || m.literal != w.literal) return false;
  }
}

Permissions Permissions::SubscribeAnything(std::vector<TopicPattern> publish) {
  auto all = TopicPattern::Parse(">", 1);
  return Permissions({*all}, std::move(publish));
}

bool Permissions::Any(const std::vector<TopicPattern>& patterns, absl::string_view topic) {
  for (const auto& p : patterns) {
    if (p.Matches(topic)) return true;
  }
  return false;
}

bool Permissions::MaySubscribePattern(const TopicPattern& pattern) const {
  for (const auto& p : subscribe_) {
    if (pattern.IsCoveredBy(p)) return true;
  }
  return false;
}

bool Permissions::MaySubscribeTopicOrPattern(absl::string_view text) const {
  if (!IsPattern(text)) return MaySubscribe(text);
  auto pattern = TopicPattern::Parse(text, text.size());
  return pattern.ok() && MaySubscribePattern(*pattern);
}

std::vector<TopicPattern> ParsePermissionPatterns(const std::vector<std::string>& patterns,
                                                  absl::string_view subject, size_t max_length,
                                                  std::vector<std::string>* dropped) {
  std::vector<TopicPattern> out;
  bool subject_ok = !subject.empty();
  for (char c : subject) {
    if (c == '.' || !IsTopicChar(static_cast<unsigned char>(c))) subject_ok = false;
  }
  for (const std::string& text : patterns) {
    std::string expanded = text;
    if (text.find("{sub}") != std::string::npos) {
      if (!subject_ok) {
        if (dropped) dropped->push_back(absl::StrCat("'", text, "': the subject cannot fill {sub}"));
        continue;
      }
      expanded = absl::StrReplaceAll(text, {{"{sub}", subject}});
    }
    auto p = TopicPattern::Parse(expanded, max_length);
    if (!p.ok()) {
      if (dropped) dropped->push_back(absl::StrCat("'", text, "': ", p.status().message()));
      continue;
    }
    out.push_back(*std::move(p));
  }
  return out;
}

}  // namespace fanout
