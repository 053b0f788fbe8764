#include "core/hub.h"

#include <algorithm>
#include <map>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/topic.h"
#include "core/topic_pattern.h"

namespace fanout {

Hub::Hub(const Options& options, Dispatcher* dispatcher, Broker* broker)
    : limits_(options.limits),
      dispatcher_(dispatcher),
      broker_(broker),
      budget_(std::make_shared<DeliveryBudget>(options.limits.max_pending_publish_bytes)),
      registry_({.stripes = options.stripes,
                 .io_threads = dispatcher->thread_count(),
                 .max_topics = options.limits.max_topics,
                 .max_retained_topics = options.limits.max_retained_topics,
                 .topic_ttl = options.topic_ttl,
                 .history = options.history,
                 .max_history_bytes = options.limits.max_history_bytes,
                 .on_interest =
                     [broker](absl::string_view topic, bool active) {
                       if (active) {
                         broker->OnTopicActive(topic);
                       } else {
                         broker->OnTopicIdle(topic);
                       }
                     },
                 .now = options.now}),
      presence_(options.presence, dispatcher->thread_count(), options.stripes) {
  broker_->Attach(this, budget_.get());
}

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

void Hub::Publish(absl::string_view topic, absl::string_view payload,
                  const PublishOptions& options, PublishDone done) {
  if (absl::Status s = ValidateTopic(topic); !s.ok()) {
    return std::move(done)(Reject(Rejection::kInvalidTopic, s));
  }
  if (absl::Status s = ValidatePayload(payload); !s.ok()) {
    return std::move(done)(Reject(Rejection::kPayloadTooLarge, s));
  }
  if (absl::Status s = Admit(options.admission); !s.ok()) return std::move(done)(s);
  Hand({.topic = topic,
        .payload = payload,
        .kind = options.kind,
        .exclude = options.exclude,
        .skip_history = options.skip_history},
       std::move(done));
}

void Hub::Broadcast(absl::string_view payload, Admission admission, PublishDone done) {
  if (absl::Status s = ValidatePayload(payload); !s.ok()) {
    return std::move(done)(Reject(Rejection::kPayloadTooLarge, s));
  }
  if (absl::Status s = Admit(admission); !s.ok()) return std::move(done)(s);
  Hand({.broadcast = true, .payload = payload}, std::move(done));
}

void Hub::Hand(const OutgoingMessage& m, PublishDone done) {
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  bytes_in_.fetch_add(m.payload.size(), std::memory_order_relaxed);
  if (m.broadcast || observer_count_.load(std::memory_order_relaxed) == 0) {
    return broker_->Publish(m, std::move(done));
  }
  // Watchers see a publish once it has its sequence number. A broker may
  // answer after Publish has returned, so the views are copied for them.
  broker_->Publish(m, [this, topic = std::string(m.topic), payload = std::string(m.payload),
                       done = std::move(done)](absl::StatusOr<PublishResult> r) mutable {
    if (r.ok()) NotifyObservers(topic, r->seq, payload);
    std::move(done)(std::move(r));
  });
}

PublishResult Hub::DeliverNext(const OutgoingMessage& m) {
  if (m.broadcast) {
    uint64_t seq;
    std::shared_ptr<const SubscriberSnapshot> snapshot;
    {
      MutexLock lock(&connections_mu_);
      seq = connections_.NextSeq();
      snapshot = connections_.Snapshot(dispatcher_->thread_count());
    }
    DeliverTo(snapshot, m, seq);
    return {seq, snapshot->size};
  }
  // Sequence numbers are taken (and the message kept) under the stripe lock
  // but delivered after it: two concurrent publishes to one topic may reach a
  // thread out of order. Backends that need strict order publish to a topic
  // from one caller.
  TopicRegistry::PublishPlan plan =
      registry_.PlanPublish(m.topic, m.payload, m.kind, /*numbered=*/!m.skip_history);
  if (!plan.snapshot) return {plan.seq, 0, std::move(plan.epoch)};
  DeliverTo(plan.snapshot, m, plan.seq, plan.epoch);
  return {plan.seq, plan.snapshot->size, std::move(plan.epoch)};
}

uint64_t Hub::Deliver(const OutgoingMessage& m, uint64_t seq, absl::string_view epoch) {
  std::shared_ptr<const SubscriberSnapshot> snapshot;
  if (m.broadcast) {
    MutexLock lock(&connections_mu_);
    snapshot = connections_.Snapshot(dispatcher_->thread_count());
  } else {
    snapshot = registry_.Recipients(m.topic, m.stream_seq);
    if (!snapshot) return 0;
  }
  DeliverTo(snapshot, m, seq, m.broadcast ? absl::string_view() : epoch);
  return snapshot->size;
}

uint64_t Hub::LocalSubscribers(absl::string_view topic) const {
  if (topic.empty()) return connection_count();
  return registry_.SubscriberCount(topic);
}

void Hub::DeliverTo(const std::shared_ptr<const SubscriberSnapshot>& snapshot,
                    const OutgoingMessage& m, uint64_t seq, absl::string_view epoch) {
  if (snapshot->size == 0) return;
  auto message = EncodeMessage({.topic = m.topic,
                                .broadcast = m.broadcast,
                                .seq = seq,
                                .epoch = epoch,
                                .payload = m.payload,
                                .kind = m.kind,
                                .json = snapshot->json_count > 0,
                                .raw = snapshot->raw_count > 0,
                                .budget = budget_});
  Fanout(snapshot, std::move(message), m.exclude);
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

absl::Status Hub::Subscribe(absl::string_view topic, std::shared_ptr<Subscriber> subscriber,
                            const TopicPosition* since, Recovery* recovery) {
  if (IsPattern(topic)) {
    auto pattern = TopicPattern::Parse(topic, limits_.max_topic_length);
    if (!pattern.ok()) return pattern.status();
    // A pattern has no position of its own: nothing to recover.
    if (recovery != nullptr) *recovery = Recovery{};
    return registry_.SubscribePattern(*pattern, std::move(subscriber));
  }
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return s;
  const uint64_t id = subscriber->id();
  const std::string user = presence_.enabled() ? subscriber->user() : std::string();
  absl::Status s;
  if (broker_->keeps_history()) {
    // A cluster numbers topics in JetStream and keeps their history there:
    // the caller asks Recover once subscribed.
    if (recovery != nullptr) *recovery = Recovery{.pending = since != nullptr};
    s = registry_.Subscribe(topic, std::move(subscriber));
  } else {
    s = registry_.Subscribe(topic, std::move(subscriber), since, recovery);
  }
  if (s.ok() && presence_.enabled()) {
    if (auto event = presence_.Join(topic, id, user)) DeliverPresence(*event);
  }
  return s;
}

bool Hub::WatchPresence(absl::string_view topic, std::shared_ptr<Subscriber> subscriber) {
  return presence_.Watch(topic, std::move(subscriber));
}

void Hub::MovePresence(uint64_t id, const std::string& user,
                       const std::vector<std::string>& topics) {
  if (!presence_.enabled()) return;
  for (const auto& topic : topics) {
    for (const auto& event : presence_.SetUser(topic, id, user)) DeliverPresence(event);
  }
}

namespace {

// A node's part of a presence question, as JSON: {"c":connections,
// "a":anonymous,"u":users,"l":[[user,connections],...],"m":more}.
std::string EncodePresence(const PresenceTracker::Counts& c) {
  boost::json::array list;
  for (const auto& [user, n] : c.user_list) list.push_back(boost::json::array{user.c_str(), n});
  return boost::json::serialize(boost::json::object{{"e", c.enabled},
                                                    {"c", c.connections},
                                                    {"a", c.anonymous},
                                                    {"u", c.users},
                                                    {"l", std::move(list)},
                                                    {"m", c.more_users}});
}

bool DecodePresence(absl::string_view body, PresenceTracker::Counts* c) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(boost::json::string_view(body.data(), body.size()), ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  if (o == nullptr) return false;
  auto number = [&](const char* key) -> uint64_t {
    const boost::json::value* x = o->if_contains(key);
    return x != nullptr && x->is_uint64()  ? x->get_uint64()
           : x != nullptr && x->is_int64() ? static_cast<uint64_t>(std::max<int64_t>(0, x->get_int64()))
                                           : 0;
  };
  auto flag = [&](const char* key) {
    const boost::json::value* x = o->if_contains(key);
    return x != nullptr && x->is_bool() && x->get_bool();
  };
  c->enabled = flag("e");
  c->connections = number("c");
  c->anonymous = number("a");
  c->users = number("u");
  c->more_users = flag("m");
  if (const boost::json::value* l = o->if_contains("l"); l != nullptr && l->is_array()) {
    for (const auto& e : l->get_array()) {
      const boost::json::array* pair = e.if_array();
      if (pair == nullptr || pair->size() != 2 || !(*pair)[0].is_string()) continue;
      const boost::json::value& n = (*pair)[1];
      c->user_list.emplace_back(std::string((*pair)[0].get_string()),
                                n.is_uint64() ? n.get_uint64()
                                : n.is_int64() ? static_cast<uint64_t>(n.get_int64())
                                               : 0);
    }
  }
  return true;
}

}  // namespace

void Hub::QueryPresence(absl::string_view topic, size_t user_limit, absl::Duration timeout,
                        PresenceDone done) {
  if (!broker_->clustered()) {
    return std::move(done)({.counts = presence_.Get(topic, user_limit)});
  }
  std::string request = boost::json::serialize(
      boost::json::object{{"topic", boost::json::string_view(topic.data(), topic.size())}});
  broker_->Gather(
      kPresenceVerb, std::move(request), timeout,
      [user_limit, enabled = presence_.Covers(topic), done = std::move(done)](Gathered g) mutable {
        PresenceAnswer out;
        out.partial = g.partial;
        PresenceTracker::Counts& c = out.counts;
        c.enabled = enabled;
        std::map<std::string, uint64_t> users;  // by name, over the nodes
        bool lists_complete = true;
        uint64_t users_summed = 0;
        for (const auto& a : g.answers) {
          PresenceTracker::Counts part;
          if (!DecodePresence(a.body, &part)) continue;
          c.connections += part.connections;
          c.anonymous += part.anonymous;
          users_summed += part.users;
          if (part.more_users) lists_complete = false;
          for (auto& [user, n] : part.user_list) users[user] += n;
        }
        c.users = lists_complete ? users.size() : users_summed;
        for (auto& [user, n] : users) {
          if (c.user_list.size() >= user_limit) {
            c.more_users = true;
            break;
          }
          c.user_list.emplace_back(user, n);
        }
        std::move(done)(std::move(out));
      });
}

std::string Hub::AnswerPresence(absl::string_view request) const {
  boost::system::error_code ec;
  boost::json::value v =
      boost::json::parse(boost::json::string_view(request.data(), request.size()), ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  const boost::json::value* topic = o == nullptr ? nullptr : o->if_contains("topic");
  if (topic == nullptr || !topic->is_string()) return "";
  absl::string_view t(topic->get_string().data(), topic->get_string().size());
  if (!ValidateTopic(t).ok()) return "";
  return EncodePresence(presence_.Get(t, kPresenceListed));
}

void Hub::DeliverPresence(const PresenceTracker::Event& event) {
  if (!event.watchers || event.watchers->size == 0) return;
  Fanout(event.watchers, EncodeNotice(PresenceEventJson(event), budget_), /*exclude=*/0);
}

std::shared_ptr<const Message> Hub::EncodeKept(absl::string_view topic, absl::string_view epoch,
                                               const HistoryEntry& entry, DeliveryFormat format) {
  return EncodeMessage({.topic = topic,
                        .seq = entry.seq,
                        .epoch = epoch,
                        .payload = entry.payload,
                        .kind = entry.kind,
                        .json = format == DeliveryFormat::kJson,
                        .raw = format == DeliveryFormat::kRaw});
}

void Hub::Recover(absl::string_view topic, const TopicPosition& since, RecoveryDone done) {
  broker_->ReadHistory(
      topic, &since, SIZE_MAX, /*after_interest=*/true,
      [since, done = std::move(done)](absl::StatusOr<HistoryPage> page) mutable {
        Recovery r;
        if (page.ok()) {
          r.position = std::move(page->position);
          r.recovered = page->complete && r.position.epoch == since.epoch;
          if (r.recovered) r.missed = std::move(page->entries);
        }
        std::move(done)(std::move(r));
      });
}

void Hub::History(absl::string_view topic, const TopicPosition* since, size_t limit,
                  HistoryDone done) {
  if (absl::Status s = ValidateTopic(topic); !s.ok()) return std::move(done)(s);
  if (broker_->keeps_history()) {
    return broker_->ReadHistory(topic, since, limit, /*after_interest=*/false, std::move(done));
  }
  std::move(done)(registry_.History(topic, since, limit));
}

void Hub::Unsubscribe(absl::string_view topic, uint64_t id) {
  if (IsPattern(topic)) {
    registry_.UnsubscribePattern(topic, id);
  } else if (registry_.Unsubscribe(topic, id) && presence_.enabled()) {
    if (auto event = presence_.Leave(topic, id)) DeliverPresence(*event);
  }
}

}  // namespace fanout
