#include "core/hub.h"

#include "absl/strings/str_cat.h"
#include "core/topic.h"

namespace fanout {

Hub::Hub(const Options& options, Dispatcher* dispatcher)
    : limits_(options.limits),
      dispatcher_(dispatcher),
      registry_({.stripes = options.stripes, .io_threads = dispatcher->thread_count()}) {}

absl::Status Hub::ValidateTopic(absl::string_view topic) const {
  return fanout::ValidateTopic(topic, limits_.max_topic_length);
}

absl::Status Hub::ValidatePayload(absl::string_view payload) const {
  if (payload.size() > limits_.max_payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("payload is ", payload.size(),
                                                   " bytes, larger than the limit of ",
                                                   limits_.max_payload_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<Hub::PublishResult> Hub::Publish(absl::string_view topic, absl::string_view payload) {
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return s;
  if (absl::Status s = ValidatePayload(payload); !s.ok()) return s;
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(payload.size(), std::memory_order_relaxed);
  TopicRegistry::PublishPlan plan = registry_.PlanPublish(topic);
  if (!plan.snapshot) return PublishResult{};
  // Sequence numbers are taken under the stripe lock but delivered after it:
  // two concurrent publishes to one topic may reach a thread out of order.
  // Backends that need strict order publish to a topic from one caller.
  auto message = EncodeMessage(topic, /*broadcast=*/false, plan.seq, payload,
                               plan.snapshot->json_count > 0, plan.snapshot->raw_count > 0);
  Fanout(plan.snapshot, std::move(message));
  return PublishResult{plan.seq, plan.snapshot->size};
}

absl::StatusOr<Hub::PublishResult> Hub::Broadcast(absl::string_view payload) {
  if (absl::Status s = ValidatePayload(payload); !s.ok()) return s;
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(payload.size(), std::memory_order_relaxed);
  uint64_t seq;
  std::shared_ptr<const SubscriberSnapshot> snapshot;
  {
    MutexLock lock(&connections_mu_);
    seq = connections_.NextSeq();
    snapshot = connections_.Snapshot(dispatcher_->thread_count());
  }
  auto message = EncodeMessage({}, /*broadcast=*/true, seq, payload, snapshot->json_count > 0,
                               snapshot->raw_count > 0);
  Fanout(snapshot, std::move(message));
  return PublishResult{seq, snapshot->size};
}

void Hub::Fanout(const std::shared_ptr<const SubscriberSnapshot>& snapshot,
                 std::shared_ptr<const Message> message) {
  for (size_t t = 0; t < snapshot->by_thread.size(); ++t) {
    if (snapshot->by_thread[t].empty()) continue;
    dispatcher_->Post(static_cast<int>(t), [snapshot, message, t]() {
      for (const auto& sub : snapshot->by_thread[t]) sub->DeliverOnIoThread(message);
    });
  }
}

bool Hub::AddConnection(std::shared_ptr<Subscriber> connection) {
  MutexLock lock(&connections_mu_);
  bool added = connections_.Add(std::move(connection));
  if (added) connection_count_.fetch_add(1, std::memory_order_relaxed);
  return added;
}

void Hub::RemoveConnection(uint64_t id) {
  MutexLock lock(&connections_mu_);
  if (connections_.Remove(id)) connection_count_.fetch_sub(1, std::memory_order_relaxed);
}

absl::Status Hub::Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber) {
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return s;
  registry_.Subscribe(topic, std::move(subscriber));
  return absl::OkStatus();
}

void Hub::Unsubscribe(absl::string_view topic, uint64_t id) { registry_.Unsubscribe(topic, id); }

}  // namespace fanout
