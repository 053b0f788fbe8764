#ifndef FANOUT_WS_UPGRADE_REQUEST_H_
#define FANOUT_WS_UPGRADE_REQUEST_H_

#include <cstddef>
#include <string>
#include <variant>
#include <vector>

#include <boost/url/url_view.hpp>

#include "core/history.h"
#include "core/message.h"

namespace fanout {

// What a /ws request's query asks for (docs/protocol.md).
struct UpgradeParams {
  std::vector<std::string> topics;                // topics=a,b (valid; repeats allowed)
  DeliveryFormat format = DeliveryFormat::kJson;  // format=json|raw
  std::string token;                              // token= (the last one)
  std::string raw_publish;                        // publish=: raw hub mode's topic
  // since=TOPIC:SEQ:EPOCH,...: where the client stood on topics it names
  // in topics= (the last one per topic).
  std::vector<std::pair<std::string, TopicPosition>> since;
};

// Why a request is refused: an HTTP status and the one-line body (ending in
// a newline) the client receives.
struct UpgradeRefusal {
  unsigned status = 400;
  std::string body;
  bool bad_topic = false;  // counted as a bad topic rather than a bad request
};

struct UpgradeLimits {
  size_t max_topic_length = 256;
  size_t max_topics = 0;  // --max_subscriptions_per_connection
};

// Reads the query of a /ws request's target: the first invalid topic or
// format refuses it, then too many topics, then publish= without
// format=raw, then a since= entry that is not TOPIC:SEQ:EPOCH for a topic of
// topics=. Parameters it does not know are ignored. Nothing is checked
// against permissions or tokens here.
// Thread: safe from any thread (no state).
std::variant<UpgradeParams, UpgradeRefusal> ParseUpgradeParams(const boost::urls::url_view& target,
                                                                const UpgradeLimits& limits);

}  // namespace fanout

#endif  // FANOUT_WS_UPGRADE_REQUEST_H_
