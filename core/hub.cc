#include "core/hub.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/topic.h"

namespace fanout {

Hub::Hub(const Options& options, Dispatcher* dispatcher)
    : limits_(options.limits),
      dispatcher_(dispatcher),
      budget_(std::make_shared<DeliveryBudget>(options.limits.max_pending_publish_bytes)),
      registry_({.stripes = options.stripes,
                 .io_threads = dispatcher->thread_count(),
                 .max_topics = options.limits.max_topics}) {}

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

absl::Status Hub::Admit(Admission admission) {
  if (admission == Admission::kAccept || !budget_->over()) return absl::OkStatus();
  return Reject(Rejection::kOverloaded,
                absl::ResourceExhaustedError(absl::StrCat(
                    "node overloaded: ", budget_->used(), " bytes of deliveries are pending (limit ",
                    budget_->limit(), "); retry later")));
}

absl::StatusOr<Hub::PublishResult> Hub::Publish(absl::string_view topic, absl::string_view payload,
                                                const PublishOptions& options) {
  const Admission admission = options.admission;
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return Reject(Rejection::kInvalidTopic, s);
  if (absl::Status s = ValidatePayload(payload); !s.ok()) {
    return Reject(Rejection::kPayloadTooLarge, s);
  }
  if (absl::Status s = Admit(admission); !s.ok()) return s;
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(payload.size(), std::memory_order_relaxed);
  TopicRegistry::PublishPlan plan = registry_.PlanPublish(topic);
  if (observer_count_.load(std::memory_order_relaxed) > 0) NotifyObservers(topic, plan.seq, payload);
  if (!plan.snapshot) return PublishResult{};
  // Sequence numbers are taken under the stripe lock but delivered after it:
  // two concurrent publishes to one topic may reach a thread out of order.
  // Backends that need strict order publish to a topic from one caller.
  auto message = EncodeMessage({.topic = topic,
                                .seq = plan.seq,
                                .payload = payload,
                                .kind = options.kind,
                                .json = plan.snapshot->json_count > 0,
                                .raw = plan.snapshot->raw_count > 0,
                                .budget = budget_});
  Fanout(plan.snapshot, std::move(message), options.exclude);
  return PublishResult{plan.seq, plan.snapshot->size};
}

absl::StatusOr<Hub::PublishResult> Hub::Broadcast(absl::string_view payload, Admission admission) {
  if (absl::Status s = ValidatePayload(payload); !s.ok()) {
    return Reject(Rejection::kPayloadTooLarge, s);
  }
  if (absl::Status s = Admit(admission); !s.ok()) return s;
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(payload.size(), std::memory_order_relaxed);
  uint64_t seq;
  std::shared_ptr<const SubscriberSnapshot> snapshot;
  {
    MutexLock lock(&connections_mu_);
    seq = connections_.NextSeq();
    snapshot = connections_.Snapshot(dispatcher_->thread_count());
  }
  auto message = EncodeMessage({.broadcast = true,
                                .seq = seq,
                                .payload = payload,
                                .json = snapshot->json_count > 0,
                                .raw = snapshot->raw_count > 0,
                                .budget = budget_});
  Fanout(snapshot, std::move(message));
  return PublishResult{seq, snapshot->size};
}

void Hub::Fanout(const std::shared_ptr<const SubscriberSnapshot>& snapshot,
                 std::shared_ptr<const Message> message, uint64_t exclude) {
  for (size_t t = 0; t < snapshot->by_thread.size(); ++t) {
    if (snapshot->by_thread[t].empty()) continue;
    // The task and the queue entries it will make are charged until it has
    // run; by then each session has charged its entries to its own thread.
    int64_t charge = kDeliveryTaskBytes +
                     kQueueEntryBytes * static_cast<int64_t>(snapshot->by_thread[t].size());
    budget_->Charge(charge);
    dispatcher_->Post(static_cast<int>(t),
                      [snapshot, message, t, charge, exclude, budget = budget_]() {
                        for (const auto& sub : snapshot->by_thread[t]) {
                          if (sub->id() != exclude) sub->DeliverOnIoThread(message);
                        }
                        budget->Release(charge);
                      });
  }
}

bool Hub::AddConnection(std::shared_ptr<Subscriber> connection) {
  MutexLock lock(&connections_mu_);
  const std::string user = connection->user();
  uint64_t id = connection->id();
  bool added = connections_.Add(std::move(connection));
  if (added) {
    connection_count_.fetch_add(1, std::memory_order_relaxed);
    if (!user.empty()) users_[user].push_back(id);
  }
  return added;
}

void Hub::RemoveConnection(uint64_t id) {
  MutexLock lock(&connections_mu_);
  auto conn = connections_.Find(id);
  if (!conn || !connections_.Remove(id)) return;
  connection_count_.fetch_sub(1, std::memory_order_relaxed);
  ForgetUserLocked(conn->user(), id);
}

void Hub::ForgetUserLocked(const std::string& user, uint64_t id) {
  if (user.empty()) return;
  auto it = users_.find(user);
  if (it == users_.end()) return;
  auto& ids = it->second;
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) users_.erase(it);
}

void Hub::SetUser(uint64_t id, const std::string& user) {
  MutexLock lock(&connections_mu_);
  auto conn = connections_.Find(id);
  if (!conn) return;
  ForgetUserLocked(conn->user(), id);
  conn->set_user(user);
  if (!user.empty()) users_[user].push_back(id);
}

std::shared_ptr<Subscriber> Hub::FindConnection(uint64_t id) {
  MutexLock lock(&connections_mu_);
  return connections_.Find(id);
}

std::vector<std::shared_ptr<Subscriber>> Hub::FindUserConnections(absl::string_view user) {
  std::vector<std::shared_ptr<Subscriber>> out;
  if (user.empty()) return out;
  MutexLock lock(&connections_mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return out;
  for (uint64_t id : it->second) {
    if (auto c = connections_.Find(id)) out.push_back(std::move(c));
  }
  return out;
}

bool Hub::AddObserver(std::shared_ptr<PublishObserver> observer) {
  MutexLock lock(&observers_mu_);
  if (observers_shut_down_) return false;
  auto next = std::make_shared<Observers>(observers_ ? *observers_ : Observers{});
  next->push_back(std::move(observer));
  observer_count_.store(next->size(), std::memory_order_relaxed);
  observers_ = std::move(next);
  return true;
}

void Hub::RemoveObserver(const PublishObserver* observer) {
  MutexLock lock(&observers_mu_);
  if (!observers_) return;
  auto next = std::make_shared<Observers>();
  for (const auto& o : *observers_) {
    if (o.get() != observer) next->push_back(o);
  }
  observer_count_.store(next->size(), std::memory_order_relaxed);
  observers_ = std::move(next);
}

void Hub::ShutdownObservers() {
  std::shared_ptr<const Observers> observers;
  {
    MutexLock lock(&observers_mu_);
    observers_shut_down_ = true;
    observers = observers_;
  }
  if (!observers) return;
  for (const auto& o : *observers) o->OnShutdown();
}

void Hub::NotifyObservers(absl::string_view topic, uint64_t seq, absl::string_view payload) {
  std::shared_ptr<const Observers> observers;
  {
    MutexLock lock(&observers_mu_);
    observers = observers_;
  }
  if (!observers) return;
  for (const auto& o : *observers) {
    if (o->Wants(topic)) o->OnPublish(topic, seq, payload);
  }
}

absl::Status Hub::Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber) {
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return s;
  return registry_.Subscribe(topic, std::move(subscriber));
}

void Hub::Unsubscribe(absl::string_view topic, uint64_t id) { registry_.Unsubscribe(topic, id); }

}  // namespace fanout
