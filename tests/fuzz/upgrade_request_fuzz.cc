// Fuzzes what an HTTP request goes through before a WebSocket exists: Beast's
// request parser with ws/http_session.cc's limits (16 KiB of headers, no
// body), the origin-form target, and our query parsing (ws/upgrade_request.h).
// Invariants: what is accepted is valid (every topic, the publish topic, the
// topic count, publish= only with format=raw); a refusal is a 400 whose
// body ends with a newline.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <variant>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/url/parse.hpp>

#include "core/topic.h"
#include "core/topic_pattern.h"
#include "ws/upgrade_request.h"

namespace {

namespace http = boost::beast::http;

constexpr fanout::UpgradeLimits kLimits = {.max_topic_length = 64, .max_topics = 8};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  http::request_parser<http::empty_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(0);
  // As http::async_read does: feed what arrived until the message is done,
  // then the end of the stream.
  boost::beast::error_code ec;
  boost::asio::const_buffer in(data, size);
  while (!parser.is_done() && in.size() > 0) {
    size_t used = parser.put(in, ec);
    in += used;
    if (ec == http::error::need_more) {
      ec = {};
      if (used == 0) break;  // the rest is an incomplete piece
      continue;
    }
    if (ec) return 0;
  }
  if (!parser.is_done()) {
    parser.put_eof(ec);
    if (ec || !parser.is_done()) return 0;
  }
  auto req = parser.release();
  auto target = boost::urls::parse_origin_form(req.target());
  if (!target) return 0;
  // Every path may be an upgrade here: the query is what is fuzzed.
  auto parsed = fanout::ParseUpgradeParams(*target, kLimits);
  if (auto* refusal = std::get_if<fanout::UpgradeRefusal>(&parsed)) {
    Check(refusal->status == 400, "a refusal that is not a 400");
    // (Not one line: a decoded %0A in a topic is echoed as it is.)
    Check(!refusal->body.empty() && refusal->body.back() == '\n', "a refusal body without its newline");
    return 0;
  }
  const auto& p = std::get<fanout::UpgradeParams>(parsed);
  Check(p.topics.size() <= kLimits.max_topics, "more topics than the limit");
  for (const auto& t : p.topics) {
    // A topic, or a wildcard pattern (docs/protocol.md, "Patterns").
    bool ok = fanout::IsPattern(t) ? fanout::TopicPattern::Parse(t, kLimits.max_topic_length).ok()
                                   : fanout::ValidateTopic(t, kLimits.max_topic_length).ok();
    Check(ok, "an invalid topic or pattern accepted");
  }
  for (const auto& [topic, position] : p.since) {
    Check(std::find(p.topics.begin(), p.topics.end(), topic) != p.topics.end(),
          "a since= entry for a topic not in topics=");
    Check(position.epoch.size() <= fanout::kMaxEpochLength, "an epoch over the limit accepted");
  }
  if (!p.raw_publish.empty()) {
    Check(fanout::ValidateTopic(p.raw_publish, kLimits.max_topic_length).ok(),
          "an invalid publish topic accepted");
    Check(p.format == fanout::DeliveryFormat::kRaw, "publish= without format=raw");
  }
  return 0;
}
