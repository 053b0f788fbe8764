#include "cluster/nats_broker.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cluster/nats_subjects.h"
#include "core/topic_pattern.h"
#include "spdlog/spdlog.h"

namespace fanout {
namespace {

constexpr char kStream[] = "FANOUT";
// Topics whose history policy keeps messages: one stream per --history rule
// (this name for the default policy, with _<rule id> for an override), each
// with its rule's limits.
constexpr char kHistoryStream[] = "FANOUT_HISTORY";
// Reader threads for history reads (recoveries and History calls).
constexpr int kReaders = 2;
// Headers a fanout publish carries (and the stream keeps and republishes).
constexpr char kSeqHeader[] = "Fanout-Seq";
constexpr char kKindHeader[] = "Fanout-Kind";
constexpr char kOriginHeader[] = "Fanout-Origin";
constexpr char kExcludeHeader[] = "Fanout-Exclude";
// The topic's epoch: made by the publish that finds the topic without a
// stored message, copied by every later one.
constexpr char kEpochHeader[] = "Fanout-Epoch";
// The stream sequence of the topic's previous message (the one this publish
// was numbered after; 0 for the first): a history read walks back by it.
constexpr char kPrevHeader[] = "Fanout-Prev";
// When the publish was made (Unix milliseconds): the policy's ttl applies
// to it, and History reports it.
constexpr char kTimeHeader[] = "Fanout-Time";
// A message published with skip_history: sent straight to the nodes (core
// NATS, never stored), seq 0, and this random id so that a node whose topic
// and pattern subscriptions both match delivers it once.
constexpr char kLiveHeader[] = "Fanout-Live";
// How many live ids a node remembers to recognise a second copy.
constexpr size_t kLiveIdsKept = 4096;
// Which node sent an answer (cluster-wide questions).
constexpr char kNodeHeader[] = "Fanout-Node";
constexpr char kQueryPrefix[] = "fanout.q.";
constexpr char kQuerySubjects[] = "fanout.q.*";
constexpr char kPresenceHello[] = "fanout.presence.hello";
constexpr char kPresenceBye[] = "fanout.presence.bye";
constexpr char kPresenceSubjects[] = "fanout.presence.*";
constexpr char kCounts[] = "fanout.counts";
// Attempts at a topic's next number before a publish gives up (ABORTED):
// each lost attempt means another node's message to the topic was stored.
constexpr int kMaxAttempts = 20;
// Topic positions a publish worker remembers (a cache: a miss costs one
// request to the stream).
constexpr size_t kMaxPositions = 65536;
// What a queued publish costs beyond its bytes, for the delivery budget.
constexpr int64_t kJobBytes = 256;
// A stream message's life: the stream keeps the last message of each topic
// (to number the next one) for a day after it was published.
constexpr int64_t kMaxAgeNanos = int64_t{24} * 3600 * 1000 * 1000 * 1000;
constexpr int64_t kDuplicateWindowNanos = int64_t{120} * 1000 * 1000 * 1000;

std::string NatsError(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  // The last error of this thread, when it says more than the status.
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0' && text != last) absl::StrAppend(&text, ": ", last);
  return text;
}

const char* KindName(std::optional<PayloadKind> kind) {
  if (!kind) return nullptr;
  switch (*kind) {
    case PayloadKind::kJson:
      return "json";
    case PayloadKind::kText:
      return "text";
    case PayloadKind::kBinary:
      return "binary";
  }
  return nullptr;
}

std::optional<PayloadKind> KindOf(const char* name) {
  if (name == nullptr) return std::nullopt;
  if (std::strcmp(name, "json") == 0) return PayloadKind::kJson;
  if (std::strcmp(name, "text") == 0) return PayloadKind::kText;
  if (std::strcmp(name, "binary") == 0) return PayloadKind::kBinary;
  return std::nullopt;
}

const char* Header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, key, &value) != NATS_OK) return nullptr;
  return value;
}

uint64_t NumberHeader(natsMsg* msg, const char* key) {
  uint64_t n = 0;
  const char* text = Header(msg, key);
  if (text == nullptr || !absl::SimpleAtoi(text, &n)) return 0;
  return n;
}

// A stored message's epoch; "0" for one stored by a fanoutd before epochs
// (its topic keeps counting in that epoch until it is forgotten).
std::string EpochOf(natsMsg* msg) {
  const char* e = Header(msg, kEpochHeader);
  if (e == nullptr || *e == '\0' || std::strlen(e) > kMaxEpochLength) return "0";
  for (const char* c = e; *c != '\0'; ++c) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(*c)) && *c != '-') return "0";
  }
  return e;
}

// A new epoch for a topic that has no stored message: random, so that two
// nodes starting a topic at once (one of them loses the race and takes the
// winner's) or one topic started again after it was forgotten never share
// one.
std::string NewClusterEpoch() {
  static constexpr char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  thread_local absl::BitGen gen;
  std::string e = "c";
  for (int i = 0; i < 12; ++i) e.push_back(kAlphabet[absl::Uniform(gen, 0, 36)]);
  return e;
}

}  // namespace

// One topic this node has interest in: what its subscription's callback needs.
// Freed by libnats' completion callback, after the last message was handled.
struct NatsBroker::Interest {
  NatsBroker* broker;
  std::string topic;  // empty for the broadcasts; or a pattern
  natsSubscription* sub = nullptr;
  // A pattern's subscription (a NATS wildcard): each message names its
  // topic in its subject.
  bool pattern = false;
};

// A publish thread with its own queue; a topic always goes to the same one,
// so its publishes keep their order and the worker's positions stay warm.
class NatsBroker::Worker {
 public:
  explicit Worker(NatsBroker* broker) : broker_(broker), thread_([this] { Run(); }) {}
  ~Worker() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.Signal();
    thread_.join();
  }

  void Push(Job job) {
    {
      MutexLock lock(&mu_);
      if (!stop_) {
        queue_.push_back(std::move(job));
        cv_.Signal();
        return;
      }
    }
    Finish(job, absl::UnavailableError("the node is shutting down; nothing was published"));
  }

  size_t queued() {
    MutexLock lock(&mu_);
    return queue_.size();
  }

 private:
  void Run() {
    for (;;) {
      Job job;
      {
        MutexLock lock(&mu_);
        while (queue_.empty() && !stop_) cv_.Wait(&mu_);
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::StatusOr<PublishResult> result =
          broker_->stopping_.load()
              ? absl::UnavailableError("the node is shutting down; nothing was published")
              : broker_->PublishNow(job, &positions_);
      Finish(job, std::move(result));
    }
  }

  void Finish(Job& job, absl::StatusOr<PublishResult> result) {
    if (broker_->budget_) broker_->budget_->Release(job.charge);
    std::move(job.done)(std::move(result));
  }

  NatsBroker* const broker_;
  absl::flat_hash_map<std::string, Position> positions_;  // worker thread only
  Mutex mu_;
  CondVar cv_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

NatsBroker::NatsBroker(NatsBrokerOptions options) : options_(std::move(options)) {
  for (const HistoryConfig::Rule& rule : options_.history.rules()) {
    const std::string id = HistoryRuleId(rule.pattern);
    HistoryStream h{.enabled = rule.policy.enabled(),
                    .policy = rule.policy,
                    .pattern = rule.pattern,
                    .name = rule.pattern.empty() ? kHistoryStream
                                                 : absl::StrCat(kHistoryStream, "_", id),
                    .prefix = HistoryIngestPrefix(id)};
    h.subjects = absl::StrCat(h.prefix, ">");
    history_streams_.push_back(std::move(h));
  }
}

absl::StatusOr<std::unique_ptr<NatsBroker>> NatsBroker::Create(NatsBrokerOptions options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("--nats names no server");
  if (options.replicas < 1 || options.replicas > 5) {
    return absl::InvalidArgumentError("--nats_replicas must be between 1 and 5");
  }
  if (options.publish_workers < 1) {
    return absl::InvalidArgumentError("--nats_publish_workers must be at least 1");
  }
  std::unique_ptr<NatsBroker> broker(new NatsBroker(std::move(options)));
  if (absl::Status s = broker->Connect(); !s.ok()) return s;
  if (absl::Status s = broker->EnsureStream(
          {.name = kStream,
           .subjects = kStreamSubjects,
           .max_per_subject = 1,
           .max_age_nanos = kMaxAgeNanos,
           .description = "fanoutd: numbers each topic's publishes and republishes them to the "
                          "nodes"});
      !s.ok()) {
    return s;
  }
  for (const HistoryStream& h : broker->history_streams_) {
    if (!h.enabled) continue;
    // The rule's limits are the stream's: a topic quiet for longer than its
    // ttl has lost its history, and its next message starts a new epoch.
    const std::string limits =
        absl::StrCat(h.policy.size, " messages, ", absl::FormatDuration(h.policy.ttl));
    if (absl::Status s = broker->EnsureStream(
            {.name = h.name.c_str(),
             .subjects = h.subjects.c_str(),
             .max_per_subject = static_cast<int64_t>(h.policy.size),
             .max_age_nanos = absl::ToInt64Nanoseconds(h.policy.ttl),
             .description =
                 h.pattern.empty()
                     ? absl::StrCat("fanoutd: history of topics under the default policy (",
                                    limits, ")")
                     : absl::StrCat("fanoutd: history of topics matching ", h.pattern, " (",
                                    limits, ")")});
        !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < kReaders; ++i) broker->readers_.emplace_back([b = broker.get()] { b->RunReader(); });
  NatsBroker* b = broker.get();
  natsStatus s = natsConnection_Subscribe(&b->presence_sub_, b->nc_, kPresenceSubjects,
                                          &NatsBroker::OnPresence, b);
  if (s != NATS_OK) {
    return absl::UnavailableError(absl::StrCat("cannot subscribe to ", kPresenceSubjects, ": ",
                                               NatsError(s)));
  }
  s = natsConnection_Subscribe(&b->counts_sub_, b->nc_, kCounts, &NatsBroker::OnCounts, b);
  if (s != NATS_OK) {
    return absl::UnavailableError(absl::StrCat("cannot subscribe to ", kCounts, ": ",
                                               NatsError(s)));
  }
  broker->interest_thread_ = std::thread([b] { b->RunInterest(); });
  broker->presence_thread_ = std::thread([b] { b->RunPresence(); });
  broker->query_thread_ = std::thread([b] { b->RunQueries(); });
  for (int i = 0; i < broker->options_.publish_workers; ++i) {
    broker->workers_.push_back(std::make_unique<Worker>(broker.get()));
  }
  return broker;
}

absl::Status NatsBroker::Connect() {
  // Once per process; libnats counts opens and closes.
  if (natsStatus s = nats_Open(-1); s != NATS_OK) {
    return absl::InternalError(absl::StrCat("cannot start the NATS client: ", NatsError(s)));
  }
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  std::vector<const char*> urls;
  for (const auto& u : options_.servers) urls.push_back(u.c_str());
  natsStatus s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s != NATS_OK) {
    natsOptions_Destroy(opts);
    return absl::InvalidArgumentError(absl::StrCat("--nats=", absl::StrJoin(options_.servers, ","),
                                                   ": ", NatsError(s)));
  }
  std::string name = absl::StrCat("fanout-", options_.node_id);
  natsOptions_SetName(opts, name.c_str());
  // Reconnect for ever (libnats gives up after 60 rounds by default), soon
  // and with jitter, and notice a dead server within ~4 s, not minutes.
  natsOptions_SetMaxReconnect(opts, -1);
  natsOptions_SetReconnectWait(opts, 250);
  natsOptions_SetReconnectJitter(opts, 250, 1000);
  natsOptions_SetPingInterval(opts, 2000);
  natsOptions_SetMaxPingsOut(opts, 2);
  natsOptions_SetTimeout(opts, 2000);
  // One delivery pool for every subscription, instead of a thread each.
  natsOptions_UseGlobalMessageDelivery(opts, true);
  natsOptions_SetDisconnectedCB(opts, &NatsBroker::OnDisconnected, this);
  natsOptions_SetReconnectedCB(opts, &NatsBroker::OnReconnected, this);
  natsOptions_SetClosedCB(opts, &NatsBroker::OnClosed, this);
  natsOptions_SetErrorHandler(
      opts,
      [](natsConnection* nc, natsSubscription* sub, natsStatus err, void* closure) {
        OnError(nc, sub, static_cast<int>(err), closure);
      },
      this);
  s = natsConnection_Connect(&nc_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    return absl::UnavailableError(absl::StrCat("cannot connect to NATS at ",
                                               absl::StrJoin(options_.servers, ","), ": ",
                                               NatsError(s)));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = absl::ToInt64Milliseconds(options_.publish_timeout);
  if (s = natsConnection_JetStream(&js_, nc_, &jo); s != NATS_OK) {
    return absl::InternalError(absl::StrCat("cannot use JetStream: ", NatsError(s)));
  }
  connected_.store(true, std::memory_order_release);
  spdlog::info("connected to NATS at {} as {}", connected_url(), name);
  return absl::OkStatus();
}

absl::Status NatsBroker::EnsureStream(const StreamSpec& spec) {
  // A NATS cluster that starts with the nodes answers before its JetStream
  // has a leader, and a busy one may time out on a request: look up (and
  // create) the stream until it works, for about 30 s, saying so.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  jsOptions wait;
  jsOptions_Init(&wait);
  wait.Wait = 2000;
  natsStatus last = NATS_OK;
  for (bool said = false; absl::Now() < deadline;) {
    jsStreamInfo* info = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&info, js_, spec.name, &wait, &jerr);
    if (s == NATS_OK) {
      const jsStreamConfig* c = info->Config;
      bool ok = c->RePublish != nullptr && c->RePublish->Destination != nullptr &&
                std::strcmp(c->RePublish->Destination, kRepublishSubjects) == 0 &&
                c->SubjectsLen == 1 && std::strcmp(c->Subjects[0], spec.subjects) == 0;
      const bool same_limits =
          c->MaxMsgsPerSubject == spec.max_per_subject && c->MaxAge == spec.max_age_nanos;
      const std::string was = c->Description != nullptr ? c->Description : "";
      if (!ok) {
        jsStreamInfo_Destroy(info);
        return absl::FailedPreconditionError(absl::StrCat(
            "the JetStream stream ", spec.name, " exists but was not made by fanoutd (it must take ",
            spec.subjects, " and republish to ", kRepublishSubjects,
            "); delete it or use another NATS account"));
      }
      if (same_limits) {
        jsStreamInfo_Destroy(info);
        return absl::OkStatus();
      }
      // The history flags changed (or differ between nodes): this node's
      // limits become the stream's. Every node needs the same ones.
      jsStreamConfig cfg = *c;
      cfg.MaxMsgsPerSubject = spec.max_per_subject;
      cfg.MaxAge = spec.max_age_nanos;
      cfg.Description = spec.description.c_str();
      jsStreamInfo* updated = nullptr;
      jerr = static_cast<jsErrCode>(0);
      s = js_UpdateStream(&updated, js_, &cfg, &wait, &jerr);
      jsStreamInfo_Destroy(info);
      if (s != NATS_OK) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot change the JetStream stream ", spec.name, "'s limits to this node's --history (",
            spec.description, "): ", NatsError(s)));
      }
      jsStreamInfo_Destroy(updated);
      spdlog::warn("changed the JetStream stream {} from \"{}\" to \"{}\": every node of the "
                   "cluster needs the same --history_size, --history_ttl and --history",
                   spec.name, was, spec.description);
      return absl::OkStatus();
    }
    if (jerr == JSStreamNotFoundErr) {
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      const char* subjects[] = {spec.subjects};
      jsRePublish republish;
      jsRePublish_Init(&republish);
      republish.Source = spec.subjects;
      republish.Destination = kRepublishSubjects;
      cfg.Name = spec.name;
      cfg.Description = spec.description.c_str();
      cfg.Subjects = subjects;
      cfg.SubjectsLen = 1;
      cfg.Storage = js_FileStorage;
      cfg.Replicas = options_.replicas;
      cfg.MaxMsgsPerSubject = spec.max_per_subject;
      cfg.MaxAge = spec.max_age_nanos;
      cfg.Duplicates = kDuplicateWindowNanos;
      cfg.RePublish = &republish;
      jerr = static_cast<jsErrCode>(0);
      s = js_AddStream(&info, js_, &cfg, &wait, &jerr);
      if (s == NATS_OK) {
        jsStreamInfo_Destroy(info);
        spdlog::info("created the JetStream stream {} ({} replicas)", spec.name, options_.replicas);
        return absl::OkStatus();
      }
      if (jerr == JSStreamNameExistErr) continue;  // another node was first: check its config
      if (jerr != 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot create the JetStream stream ", spec.name, " with ", options_.replicas,
            " replicas: ", NatsError(s),
            options_.replicas > 1 ? " (a NATS cluster of fewer servers needs --nats_replicas=1)"
                                  : ""));
      }
    } else if (jerr != 0 || (s != NATS_TIMEOUT && s != NATS_NO_RESPONDERS)) {
      return absl::UnavailableError(absl::StrCat("cannot look up the JetStream stream ", spec.name,
                                                 ": ", NatsError(s)));
    }
    // Not ready, or busy: again.
    last = s;
    if (!said) spdlog::info("waiting for NATS's JetStream to be ready ({})", NatsError(s));
    said = true;
    if (s == NATS_NO_RESPONDERS) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "NATS answers but its JetStream did not within 30 s (", NatsError(last),
      "): start nats-server with --jetstream (-js), which fanoutd needs to number "
      "publishes; in a NATS cluster, JetStream needs a quorum of its servers",
      options_.replicas > 1 ? ", and a stream of --nats_replicas servers" : ""));
}

NatsBroker::~NatsBroker() { Stop(); }

void NatsBroker::Stop() {
  if (stopping_.exchange(true)) return;
  // Queued publishes are answered (UNAVAILABLE) and their threads end.
  workers_.clear();
  {
    MutexLock lock(&interest_mu_);
    interest_stop_ = true;
  }
  interest_cv_.SignalAll();
  if (interest_thread_.joinable()) interest_thread_.join();
  // The interest thread has handed over its reads: the readers answer
  // every one (UNAVAILABLE) and end.
  {
    MutexLock lock(&read_mu_);
    read_stop_ = true;
  }
  read_cv_.SignalAll();
  for (auto& t : readers_) t.join();
  readers_.clear();
  {
    MutexLock lock(&query_mu_);
    query_stop_ = true;
  }
  query_cv_.SignalAll();
  if (query_thread_.joinable()) query_thread_.join();
  {
    MutexLock lock(&presence_mu_);
    presence_stop_ = true;
  }
  presence_cv_.SignalAll();
  if (presence_thread_.joinable()) presence_thread_.join();
  if (nc_ && connected()) {
    // The others stop waiting for this node's answers at once.
    natsConnection_PublishString(nc_, kPresenceBye, options_.node_id.c_str());
    natsConnection_FlushTimeout(nc_, 500);
  }
  if (nc_) {
    if (query_sub_) natsSubscription_Unsubscribe(query_sub_);
    if (presence_sub_) natsSubscription_Unsubscribe(presence_sub_);
    if (counts_sub_) natsSubscription_Unsubscribe(counts_sub_);
    // Each Interest is freed by its completion callback once unsubscribed:
    // only the subscriptions are kept here.
    std::vector<natsSubscription*> subs;
    {
      MutexLock lock(&interest_mu_);
      for (auto& [topic, interest] : interests_) subs.push_back(interest->sub);
      interests_.clear();
    }
    for (natsSubscription* sub : subs) {
      natsSubscription_Unsubscribe(sub);
      natsSubscription_Destroy(sub);
    }
    natsConnection_Close(nc_);
  }
  // No callback is inside the hub once this returns.
  while (delivering_.load() > 0) std::this_thread::yield();
  if (query_sub_) natsSubscription_Destroy(query_sub_);
  if (presence_sub_) natsSubscription_Destroy(presence_sub_);
  if (counts_sub_) natsSubscription_Destroy(counts_sub_);
  query_sub_ = presence_sub_ = counts_sub_ = nullptr;
  if (js_) jsCtx_Destroy(js_);
  js_ = nullptr;
  if (nc_) natsConnection_Destroy(nc_);
  nc_ = nullptr;
  connected_.store(false, std::memory_order_release);
}

void NatsBroker::Attach(LocalDelivery* delivery, DeliveryBudget* budget) {
  delivery_ = delivery;
  budget_ = budget;
  // Broadcasts reach every node: every node has interest in them.
  OnTopicActive("");
}

std::string NatsBroker::connected_url() const {
  char url[256] = {};
  if (nc_ == nullptr || natsConnection_GetConnectedUrl(nc_, url, sizeof(url)) != NATS_OK) return "";
  return url;
}

// ------------------------------------------------------------------ publish

void NatsBroker::Publish(const OutgoingMessage& m, PublishDone done) {
  if (!connected()) {
    publish_errors_.fetch_add(1, std::memory_order_relaxed);
    return std::move(done)(absl::UnavailableError(
        "this node has lost its connection to the NATS cluster; nothing was published (retry, "
        "or publish through another node)"));
  }
  Job job{.topic = m.broadcast ? std::string() : std::string(m.topic),
          .payload = std::string(m.payload),
          .kind = m.kind,
          .exclude = m.exclude,
          .live = m.skip_history && !m.broadcast,
          .done = std::move(done)};
  job.charge = static_cast<int64_t>(job.topic.size() + job.payload.size()) + kJobBytes;
  if (budget_) budget_->Charge(job.charge);
  size_t index = std::hash<std::string>{}(job.topic) % workers_.size();
  workers_[index]->Push(std::move(job));
}

const NatsBroker::HistoryStream* NatsBroker::HistoryStreamOf(absl::string_view topic) const {
  if (topic.empty() || !options_.history.any()) return nullptr;
  const HistoryStream& h = history_streams_[options_.history.RuleOf(topic)];
  return h.enabled ? &h : nullptr;
}

absl::StatusOr<NatsBroker::Position> NatsBroker::LastPosition(const char* stream,
                                                              const std::string& subject) {
  natsMsg* msg = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&msg, js_, stream, subject.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    if (jerr == JSNoMessageFoundErr) return Position{};  // a new topic (or one forgotten)
    return absl::UnavailableError(
        absl::StrCat("cannot read the topic's last position from JetStream: ", NatsError(s)));
  }
  Position p{.stream_seq = natsMsg_GetSequence(msg)};
  const char* seq = Header(msg, kSeqHeader);
  if (seq == nullptr || !absl::SimpleAtoi(seq, &p.seq)) {
    natsMsg_Destroy(msg);
    return absl::DataLossError(absl::StrCat("the stream's last message on ", subject,
                                            " has no ", kSeqHeader, " header"));
  }
  p.epoch = EpochOf(msg);
  natsMsg_Destroy(msg);
  return p;
}

absl::StatusOr<PublishResult> NatsBroker::PublishLive(const Job& job) {
  const std::string subject = DeliverySubject(job.topic);
  natsMsg* msg = nullptr;
  natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, job.payload.data(),
                                static_cast<int>(job.payload.size()));
  if (s != NATS_OK) {
    publish_errors_.fetch_add(1, std::memory_order_relaxed);
    return absl::UnavailableError(absl::StrCat("cannot build the NATS message: ", NatsError(s)));
  }
  thread_local absl::BitGen gen;
  const std::string id = absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
  const std::string exclude = absl::StrCat(job.exclude);
  natsMsgHeader_Set(msg, kSeqHeader, "0");
  natsMsgHeader_Set(msg, kLiveHeader, id.c_str());
  natsMsgHeader_Set(msg, kOriginHeader, options_.node_id.c_str());
  if (const char* kind = KindName(job.kind)) natsMsgHeader_Set(msg, kKindHeader, kind);
  if (job.exclude != 0) natsMsgHeader_Set(msg, kExcludeHeader, exclude.c_str());
  s = natsConnection_PublishMsg(nc_, msg);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    publish_errors_.fetch_add(1, std::memory_order_relaxed);
    return absl::UnavailableError(
        absl::StrCat("cannot send the message to the other nodes: ", NatsError(s)));
  }
  published_live_.fetch_add(1, std::memory_order_relaxed);
  return PublishResult{0, delivery_->LocalSubscribers(job.topic) + RemoteSubscribers(job.topic),
                       std::string()};
}

bool NatsBroker::SeenLive(absl::string_view id) {
  MutexLock lock(&live_mu_);
  if (!live_seen_.emplace(id).second) return true;
  live_order_.emplace_back(id);
  if (live_order_.size() > kLiveIdsKept) {
    live_seen_.erase(live_order_.front());
    live_order_.pop_front();
  }
  return false;
}

absl::StatusOr<PublishResult> NatsBroker::PublishNow(
    Job& job, absl::flat_hash_map<std::string, Position>* positions) {
  if (job.live) return PublishLive(job);
  const HistoryStream* history = HistoryStreamOf(job.topic);
  const char* stream = history != nullptr ? history->name.c_str() : kStream;
  const std::string subject =
      IngestSubject(job.topic, history != nullptr ? history->prefix : kIngestPrefix);
  const std::string exclude = absl::StrCat(job.exclude);
  auto unavailable = [&](absl::string_view what, natsStatus s) {
    publish_errors_.fetch_add(1, std::memory_order_relaxed);
    positions->erase(job.topic);
    return absl::UnavailableError(absl::StrCat(what, ": ", NatsError(s)));
  };
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    auto it = positions->find(job.topic);
    if (it == positions->end()) {
      auto last = LastPosition(stream, subject);
      if (!last.ok()) {
        publish_errors_.fetch_add(1, std::memory_order_relaxed);
        return last.status();
      }
      if (positions->size() >= kMaxPositions) positions->clear();
      it = positions->emplace(job.topic, *last).first;
    }
    const Position base = it->second;
    const uint64_t seq = base.seq + 1;
    const std::string epoch = base.stream_seq == 0 ? NewClusterEpoch() : base.epoch;
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, job.payload.data(),
                                  static_cast<int>(job.payload.size()));
    if (s != NATS_OK) return unavailable("cannot build the NATS message", s);
    std::string seq_text = absl::StrCat(seq);
    natsMsgHeader_Set(msg, kSeqHeader, seq_text.c_str());
    natsMsgHeader_Set(msg, kEpochHeader, epoch.c_str());
    std::string prev = absl::StrCat(base.stream_seq);
    natsMsgHeader_Set(msg, kPrevHeader, prev.c_str());
    std::string now = absl::StrCat(absl::ToUnixMillis(absl::Now()));
    natsMsgHeader_Set(msg, kTimeHeader, now.c_str());
    natsMsgHeader_Set(msg, kOriginHeader, options_.node_id.c_str());
    if (const char* kind = KindName(job.kind)) natsMsgHeader_Set(msg, kKindHeader, kind);
    if (job.exclude != 0) natsMsgHeader_Set(msg, kExcludeHeader, exclude.c_str());
    // Built on the topic's last stored message, by its stream sequence: the
    // stream stores at most one message built on it.
    std::string msg_id = absl::StrCat(job.topic.empty() ? kBroadcastToken : job.topic, "@",
                                      base.stream_seq);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    po.MaxWait = absl::ToInt64Milliseconds(options_.publish_timeout);
    if (base.stream_seq == 0) {
      po.ExpectNoMessage = true;
    } else {
      po.ExpectLastSubjectSeq = base.stream_seq;
    }
    jsPubAck* ack = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    s = js_PublishMsg(&ack, js_, msg, &po, &jerr);
    natsMsg_Destroy(msg);
    if (s == NATS_OK && !ack->Duplicate) {
      it->second = {ack->Sequence, seq, epoch};
      jsPubAck_Destroy(ack);
      published_.fetch_add(1, std::memory_order_relaxed);
      // This node's subscribers and what the others last reported (within
      // a second or so): best effort, without asking anyone.
      return PublishResult{
          seq, delivery_->LocalSubscribers(job.topic) + RemoteSubscribers(job.topic),
          job.topic.empty() ? std::string() : epoch};
    }
    bool lost = (s == NATS_OK && ack->Duplicate) || jerr == JSStreamWrongLastSequenceErr;
    if (ack) jsPubAck_Destroy(ack);
    if (!lost) {
      // Timed out or disconnected: the message may have been stored.
      return unavailable(s == NATS_TIMEOUT
                             ? "JetStream did not acknowledge the publish in time; it may or may "
                               "not have been delivered"
                             : "JetStream refused the publish",
                         s);
    }
    // Another node's message to the topic came first: number after it.
    races_lost_.fetch_add(1, std::memory_order_relaxed);
    positions->erase(it);
  }
  publish_errors_.fetch_add(1, std::memory_order_relaxed);
  return absl::AbortedError(absl::StrCat("lost the race for the topic's next sequence number ",
                                         kMaxAttempts, " times to other nodes; retry"));
}

// ----------------------------------------------------------------- interest

void NatsBroker::OnTopicActive(absl::string_view topic) {
  {
    MutexLock lock(&interest_mu_);
    interest_queue_.push_back({.topic = std::string(topic), .active = true});
  }
  interest_cv_.Signal();
}

void NatsBroker::OnTopicIdle(absl::string_view topic) {
  {
    MutexLock lock(&interest_mu_);
    interest_queue_.push_back({.topic = std::string(topic), .active = false});
  }
  interest_cv_.Signal();
}

void NatsBroker::RunInterest() {
  MutexLock lock(&interest_mu_);
  for (;;) {
    while (interest_queue_.empty() && !interest_stop_) interest_cv_.Wait(&interest_mu_);
    if (interest_stop_) break;
    // Everything queued so far, in order; reads wait for the changes queued
    // before them.
    std::vector<std::unique_ptr<HistoryRead>> reads;
    while (!interest_queue_.empty()) {
      InterestChange change = std::move(interest_queue_.front());
      interest_queue_.pop_front();
      if (change.read) {
        reads.push_back(std::move(change.read));
      } else if (change.active) {
        Subscribe(change.topic);
      } else {
        Unsubscribe(change.topic);
      }
    }
    if (reads.empty()) continue;
    // Once the server has our subscriptions, a message stored after the
    // read's request reaches it, it is republished to this node: the read
    // and the live messages overlap, and the reader drops the overlap.
    // (The request and the subscription travel one route connection to the
    // stream's leader, in that order.)
    interest_mu_.Unlock();
    natsConnection_FlushTimeout(nc_, 2000);
    {
      MutexLock read_lock(&read_mu_);
      for (auto& r : reads) reads_.push_back(std::move(r));
    }
    read_cv_.SignalAll();
    interest_mu_.Lock();
  }
  // Reads still queued are answered by the readers' shutdown.
  MutexLock read_lock(&read_mu_);
  for (auto& change : interest_queue_) {
    if (change.read) reads_.push_back(std::move(change.read));
  }
}

void NatsBroker::ReadHistory(absl::string_view topic, const TopicPosition* since, size_t limit,
                             bool after_interest,
                             absl::AnyInvocable<void(absl::StatusOr<HistoryPage>) &&> done) {
  auto read = std::make_unique<HistoryRead>();
  read->topic = std::string(topic);
  if (since != nullptr) read->since = *since;
  read->limit = limit;
  read->done = std::move(done);
  if (after_interest) {
    {
      MutexLock lock(&interest_mu_);
      if (!interest_stop_) {
        interest_queue_.push_back({.topic = read->topic, .read = std::move(read)});
      }
    }
    if (!read) return interest_cv_.Signal();
  } else {
    {
      MutexLock lock(&read_mu_);
      if (!read_stop_) reads_.push_back(std::move(read));
    }
    if (!read) return read_cv_.Signal();
  }
  std::move(read->done)(absl::UnavailableError("the node is shutting down"));
}

void NatsBroker::RunReader() {
  for (;;) {
    // The first waiting read, and every other one of the same topic: 10,000
    // clients recovering one topic at once share one walk of the stream.
    std::vector<std::unique_ptr<HistoryRead>> group;
    {
      MutexLock lock(&read_mu_);
      while (reads_.empty() && !read_stop_) read_cv_.Wait(&read_mu_);
      if (reads_.empty()) return;
      group.push_back(std::move(reads_.front()));
      reads_.pop_front();
      const std::string& topic = group.front()->topic;
      for (auto it = reads_.begin(); it != reads_.end();) {
        if ((*it)->topic == topic) {
          group.push_back(std::move(*it));
          it = reads_.erase(it);
        } else {
          ++it;
        }
      }
    }
    history_requests_.fetch_add(group.size(), std::memory_order_relaxed);
    if (stopping_.load()) {
      for (auto& read : group) {
        std::move(read->done)(absl::UnavailableError("the node is shutting down"));
      }
      continue;
    }
    // Back far enough for the reader that saw the least (all of it for one
    // without a position).
    uint64_t after = UINT64_MAX;
    for (const auto& read : group) after = std::min(after, read->since ? read->since->seq : 0);
    absl::StatusOr<StoredHistory> stored = ReadStored(group.front()->topic, after);
    for (auto& read : group) {
      if (!stored.ok()) {
        std::move(read->done)(stored.status());
      } else {
        std::move(read->done)(PageFor(*stored, *read));
      }
    }
  }
}

HistoryPage NatsBroker::PageFor(const StoredHistory& stored, const HistoryRead& read) {
  HistoryPage page;
  if (!stored.known) return page;  // nothing kept: not known
  page.known = true;
  page.position = stored.position;
  uint64_t after = 0;
  if (read.since) {
    if (read.since->epoch != page.position.epoch || read.since->seq > page.position.seq) {
      return page;  // another epoch, or a position it never had: incomplete
    }
    after = read.since->seq;
  }
  page.complete = stored.reached <= after + 1;
  // Oldest first, at most `limit`: the ones right after `after`.
  for (auto it = stored.newest_first.rbegin(); it != stored.newest_first.rend(); ++it) {
    if ((*it)->seq <= after) continue;
    if (page.entries.size() >= read.limit) break;
    page.entries.push_back(*it);
  }
  return page;
}

absl::StatusOr<NatsBroker::StoredHistory> NatsBroker::ReadStored(const std::string& topic,
                                                                  uint64_t after) {
  history_reads_.fetch_add(1, std::memory_order_relaxed);
  const HistoryStream* history = HistoryStreamOf(topic);
  const char* stream = history != nullptr ? history->name.c_str() : kStream;
  const std::string subject =
      IngestSubject(topic, history != nullptr ? history->prefix : kIngestPrefix);
  const HistoryPolicy policy = history != nullptr ? history->policy : HistoryPolicy{};
  auto failed = [&](absl::string_view what, natsStatus s) {
    history_read_errors_.fetch_add(1, std::memory_order_relaxed);
    return absl::UnavailableError(absl::StrCat(what, ": ", NatsError(s)));
  };
  StoredHistory out;
  natsMsg* msg = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&msg, js_, stream, subject.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    if (jerr == JSNoMessageFoundErr) return out;  // not known: nothing kept
    return failed("cannot read the topic's last message from JetStream", s);
  }
  out.known = true;
  out.position = {NumberHeader(msg, kSeqHeader), EpochOf(msg)};
  out.reached = out.position.seq + 1;  // the oldest seq collected
  // Walk back from the last message while it is kept (the policy's size
  // and ttl), newer than `after`: one request per message.
  const absl::Time oldest = absl::Now() - policy.ttl;
  while (msg != nullptr) {
    auto entry = std::make_shared<HistoryEntry>();
    entry->seq = NumberHeader(msg, kSeqHeader);
    entry->at = absl::FromUnixMillis(static_cast<int64_t>(NumberHeader(msg, kTimeHeader)));
    const char* data = natsMsg_GetData(msg);
    entry->payload.assign(data == nullptr ? "" : data,
                          static_cast<size_t>(natsMsg_GetDataLength(msg)));
    entry->kind = KindOf(Header(msg, kKindHeader));
    const uint64_t prev = NumberHeader(msg, kPrevHeader);
    const std::string epoch = EpochOf(msg);
    natsMsg_Destroy(msg);
    msg = nullptr;
    // Another epoch's, out of the window, or not one after the other:
    // history ends here.
    if (entry->seq <= after || entry->seq + 1 != out.reached || epoch != out.position.epoch ||
        out.newest_first.size() >= policy.size || entry->at < oldest) {
      break;
    }
    out.reached = entry->seq;
    out.newest_first.push_back(std::move(entry));
    if (out.reached == after + 1 || prev == 0) break;
    jerr = static_cast<jsErrCode>(0);
    s = js_GetMsg(&msg, js_, stream, prev, nullptr, &jerr);
    if (s != NATS_OK) {
      msg = nullptr;
      if (jerr == JSNoMessageFoundErr) break;  // dropped by the stream's limits
      return failed("cannot read a kept message from JetStream", s);
    }
  }
  history_read_messages_.fetch_add(out.newest_first.size(), std::memory_order_relaxed);
  return out;
}

void NatsBroker::Subscribe(const std::string& topic) {
  if (interests_.contains(topic)) return;
  auto* interest = new Interest{this, topic, nullptr, IsPattern(topic)};
  std::string subject = DeliverySubject(topic);
  natsStatus s = natsConnection_Subscribe(&interest->sub, nc_, subject.c_str(),
                                          &NatsBroker::OnMessage, interest);
  if (s != NATS_OK) {
    // Only a closed connection refuses (libnats queues SUBs while it
    // reconnects and sends them again itself).
    spdlog::error("cannot subscribe to NATS subject {}: {}", subject, NatsError(s));
    delete interest;
    return;
  }
  // Bound what one topic may hold in the client if the hub falls behind.
  natsSubscription_SetPendingLimits(interest->sub, 65536, 64 << 20);
  natsSubscription_SetOnCompleteCB(interest->sub, &NatsBroker::OnSubscriptionComplete, interest);
  interests_.emplace(topic, interest);
  subscriptions_.fetch_add(1, std::memory_order_relaxed);
}

void NatsBroker::Unsubscribe(const std::string& topic) {
  if (topic.empty()) return;  // the broadcasts stay
  auto it = interests_.find(topic);
  if (it == interests_.end()) return;
  natsSubscription* sub = it->second->sub;
  interests_.erase(it);
  subscriptions_.fetch_sub(1, std::memory_order_relaxed);
  // The Interest is freed by OnSubscriptionComplete, after its last message.
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
}

void NatsBroker::OnSubscriptionComplete(void* closure) { delete static_cast<Interest*>(closure); }

void NatsBroker::OnMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* interest = static_cast<Interest*>(closure);
  NatsBroker* self = interest->broker;
  self->delivering_.fetch_add(1);  // seq_cst with stopping_, as in Stop
  if (!self->stopping_.load()) {
    self->received_.fetch_add(1, std::memory_order_relaxed);
    uint64_t seq = 0;
    const char* seq_text = Header(msg, kSeqHeader);
    if (seq_text != nullptr && absl::SimpleAtoi(seq_text, &seq)) {
      uint64_t exclude = 0;
      const char* origin = Header(msg, kOriginHeader);
      const char* exclude_text = Header(msg, kExcludeHeader);
      if (origin != nullptr && exclude_text != nullptr && self->options_.node_id == origin) {
        if (!absl::SimpleAtoi(exclude_text, &exclude)) exclude = 0;
      }
      int len = natsMsg_GetDataLength(msg);
      const char* data = natsMsg_GetData(msg);
      // The stream's position of the message (JetStream's republish header):
      // a node whose topic and pattern subscriptions both match gets it twice.
      uint64_t stream_seq = 0;
      if (const char* s = Header(msg, "Nats-Sequence"); s == nullptr || !absl::SimpleAtoi(s, &stream_seq)) {
        stream_seq = 0;
      }
      std::string topic;
      bool broadcast = false;
      if (interest->pattern &&
          (!TopicOfSubject(natsMsg_GetSubject(msg), &topic, &broadcast) || broadcast)) {
        topic.clear();
      }
      const std::string& named = interest->pattern ? topic : interest->topic;
      // A live message (skip_history) has no stream position to recognise
      // a second copy by: its id does.
      const char* live = seq == 0 ? Header(msg, kLiveHeader) : nullptr;
      if ((!interest->pattern || !named.empty()) && (live == nullptr || !self->SeenLive(live))) {
        const std::string epoch = EpochOf(msg);
        self->delivery_->Deliver(
            {.topic = named,
             .broadcast = named.empty(),
             .payload = absl::string_view(data == nullptr ? "" : data, static_cast<size_t>(len)),
             .kind = KindOf(Header(msg, kKindHeader)),
             .exclude = exclude,
             .stream_seq = stream_seq},
            seq, epoch);
      }
    } else {
      spdlog::warn("dropped a message on {} without a {} header (not published by fanoutd)",
                   natsMsg_GetSubject(msg), kSeqHeader);
    }
  }
  natsMsg_Destroy(msg);
  self->delivering_.fetch_sub(1, std::memory_order_acq_rel);
}

// --------------------------------------------------------------- connection

void NatsBroker::SetConnected(bool connected) {
  if (connected_.exchange(connected) == connected) return;
  if (options_.on_connection) options_.on_connection(connected);
}

void NatsBroker::OnDisconnected(natsConnection*, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  if (self->stopping_.load()) return;
  self->disconnects_.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("lost the connection to NATS: this node answers publishes UNAVAILABLE and "
                "reports NOT_SERVING until it is back; reconnecting");
  self->SetConnected(false);
}

void NatsBroker::OnReconnected(natsConnection*, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  if (self->stopping_.load()) return;
  self->reconnects_.fetch_add(1, std::memory_order_relaxed);
  // libnats has sent every subscription again before telling us.
  spdlog::info("reconnected to NATS at {}; serving again", self->connected_url());
  self->SetConnected(true);
}

void NatsBroker::OnClosed(natsConnection*, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  if (self->stopping_.load()) return;
  spdlog::error("the NATS connection is closed for good");
  self->SetConnected(false);
}

void NatsBroker::OnError(natsConnection*, natsSubscription* sub, int status, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  auto s = static_cast<natsStatus>(status);
  if (s == NATS_SLOW_CONSUMER) {
    self->slow_consumer_errors_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("NATS dropped messages for this node: the hub fell behind on {}",
                 sub ? natsSubscription_GetSubject(sub) : "a subscription");
    return;
  }
  spdlog::warn("NATS: {}", natsStatus_GetText(s));
}

// ----------------------------------------------------- cluster-wide answers

void NatsBroker::SetQueryHandler(QueryHandler handler) {
  query_handler_ = std::move(handler);
  natsStatus s = natsConnection_Subscribe(&query_sub_, nc_, kQuerySubjects, &NatsBroker::OnQuery,
                                          this);
  if (s != NATS_OK) spdlog::error("cannot subscribe to {}: {}", kQuerySubjects, NatsError(s));
}

void NatsBroker::OnQuery(natsConnection* nc, natsSubscription*, natsMsg* msg, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  const char* reply_to = natsMsg_GetReply(msg);
  absl::string_view verb = natsMsg_GetSubject(msg);
  verb.remove_prefix(std::strlen(kQueryPrefix));
  self->delivering_.fetch_add(1);  // seq_cst with stopping_, as in Stop
  if (!self->stopping_.load() && reply_to != nullptr && *reply_to != '\0') {
    const char* data = natsMsg_GetData(msg);
    self->query_handler_(
        verb,
        absl::string_view(data == nullptr ? "" : data,
                          static_cast<size_t>(natsMsg_GetDataLength(msg))),
        [self, nc, to = std::string(reply_to)](std::string body) {
          // Maybe later, from an I/O thread: not once Stop has begun.
          self->delivering_.fetch_add(1);  // seq_cst with stopping_, as in Stop
          natsMsg* reply = nullptr;
          if (!self->stopping_.load() &&
              natsMsg_Create(&reply, to.c_str(), nullptr, body.data(),
                             static_cast<int>(body.size())) == NATS_OK) {
            natsMsgHeader_Set(reply, kNodeHeader, self->options_.node_id.c_str());
            natsConnection_PublishMsg(nc, reply);
            natsMsg_Destroy(reply);
          }
          self->delivering_.fetch_sub(1);
        });
  }
  natsMsg_Destroy(msg);
  self->delivering_.fetch_sub(1);
}

void NatsBroker::Gather(absl::string_view verb, std::string request, absl::Duration timeout,
                        absl::AnyInvocable<void(Gathered) &&> done) {
  {
    MutexLock lock(&query_mu_);
    if (!query_stop_) {
      queries_.push_back({std::string(verb), std::move(request), timeout, std::move(done)});
      query_cv_.Signal();
      return;
    }
  }
  std::move(done)(Gathered{.partial = true});
}

void NatsBroker::RunQueries() {
  for (;;) {
    Query q;
    {
      MutexLock lock(&query_mu_);
      while (queries_.empty() && !query_stop_) query_cv_.Wait(&query_mu_);
      if (query_stop_) {
        // Answered, partial: nobody was asked.
        for (auto& left : queries_) std::move(left.done)(Gathered{.partial = true});
        queries_.clear();
        return;
      }
      q = std::move(queries_.front());
      queries_.pop_front();
    }
    Gathered g = Ask(q);
    queries_asked_.fetch_add(1, std::memory_order_relaxed);
    if (g.partial) queries_partial_.fetch_add(1, std::memory_order_relaxed);
    std::move(q.done)(std::move(g));
  }
}

Gathered NatsBroker::Ask(Query& q) {
  Gathered g;
  std::vector<std::string> expected = peers();
  // Without NATS only this node can answer, and the answer says it is not
  // whole.
  auto local_only = [&] {
    Mutex mu;
    CondVar cv;
    std::optional<std::string> body;
    query_handler_(q.verb, q.request, [&](std::string b) {
      MutexLock lock(&mu);
      body = std::move(b);
      cv.Signal();
    });
    MutexLock lock(&mu);
    const absl::Time deadline = absl::Now() + q.timeout;
    while (!body && absl::Now() < deadline) {
      cv.WaitFor(&mu, absl::ToChronoMilliseconds(deadline - absl::Now()));
    }
    if (body) g.answers.push_back({options_.node_id, std::move(*body)});
    g.partial = true;
    // An answer after the deadline must not touch this frame: wait for it.
    while (!body) cv.Wait(&mu);
    return g;
  };
  if (!connected()) return local_only();
  natsInbox* inbox = nullptr;
  natsSubscription* sub = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK ||
      natsConnection_SubscribeSync(&sub, nc_, inbox) != NATS_OK) {
    natsInbox_Destroy(inbox);
    return local_only();
  }
  std::string subject = absl::StrCat(kQueryPrefix, q.verb);
  natsConnection_PublishRequest(nc_, subject.c_str(), inbox, q.request.data(),
                                static_cast<int>(q.request.size()));
  absl::flat_hash_set<std::string> heard;
  const absl::Time deadline = absl::Now() + q.timeout;
  auto all_heard = [&] {
    for (const auto& p : expected) {
      if (!heard.contains(p)) return false;
    }
    return true;
  };
  while (!all_heard()) {
    int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) break;
    natsMsg* msg = nullptr;
    if (natsSubscription_NextMsg(&msg, sub, left) != NATS_OK) break;  // timed out, or closed
    const char* node = Header(msg, kNodeHeader);
    if (node != nullptr && heard.insert(node).second) {
      const char* data = natsMsg_GetData(msg);
      g.answers.push_back(
          {node, std::string(data == nullptr ? "" : data,
                             static_cast<size_t>(natsMsg_GetDataLength(msg)))});
    }
    natsMsg_Destroy(msg);
  }
  g.partial = !all_heard();
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsInbox_Destroy(inbox);
  return g;
}

// ----------------------------------------------------------------- presence

void NatsBroker::RunPresence() {
  // Counts last reported, by topic ("" for the connections); presence
  // thread only.
  absl::flat_hash_map<std::string, uint64_t> reported;
  for (;;) {
    bool full;
    {
      MutexLock lock(&presence_mu_);
      if (presence_stop_) return;
      full = send_full_counts_;
      send_full_counts_ = false;
    }
    if (connected()) {
      natsConnection_PublishString(nc_, kPresenceHello, options_.node_id.c_str());
      ReportCounts(full, &reported);
    }
    MutexLock lock(&presence_mu_);
    if (presence_stop_) return;
    if (!send_full_counts_) {
      presence_cv_.WaitFor(&presence_mu_, absl::ToChronoMilliseconds(options_.presence_interval));
    }
  }
}

// Subscriber counts, for the other nodes' PublishResponse.subscribers: what
// changed since the last report (everything when `full`), as lines of
// "COUNT TOPIC" ("COUNT ~b" for the connections), in messages of at most
// kMaxCountsBytes. Topics have no spaces or newlines.
void NatsBroker::ReportCounts(bool full, absl::flat_hash_map<std::string, uint64_t>* reported) {
  constexpr size_t kMaxCountsBytes = 256 << 10;
  std::vector<std::string> topics;
  {
    MutexLock lock(&interest_mu_);
    topics.reserve(interests_.size());
    for (const auto& [topic, interest] : interests_) topics.push_back(topic);
  }
  absl::flat_hash_map<std::string, uint64_t> now;
  now.reserve(topics.size());
  for (const auto& t : topics) {
    uint64_t n = delivery_->LocalSubscribers(t);
    if (n > 0 || t.empty()) now.emplace(t, n);
  }
  std::string body;
  auto flush = [&] {
    if (body.empty()) return;
    natsMsg* msg = nullptr;
    if (natsMsg_Create(&msg, kCounts, nullptr, body.data(), static_cast<int>(body.size())) ==
        NATS_OK) {
      natsMsgHeader_Set(msg, kNodeHeader, options_.node_id.c_str());
      natsConnection_PublishMsg(nc_, msg);
      natsMsg_Destroy(msg);
    }
    body.clear();
  };
  auto line = [&](const std::string& topic, uint64_t n) {
    absl::StrAppend(&body, n, " ", topic.empty() ? kBroadcastToken : topic, "\n");
    if (body.size() >= kMaxCountsBytes) flush();
  };
  for (const auto& [topic, n] : now) {
    auto it = reported->find(topic);
    if (full || it == reported->end() || it->second != n) line(topic, n);
  }
  for (const auto& [topic, n] : *reported) {
    if (!now.contains(topic)) line(topic, 0);  // gone
  }
  flush();
  *reported = std::move(now);
}

void NatsBroker::OnCounts(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  self->delivering_.fetch_add(1);  // seq_cst with stopping_, as in Stop
  const char* node = Header(msg, kNodeHeader);
  if (node != nullptr && self->options_.node_id != node && !self->stopping_.load()) {
    const char* data = natsMsg_GetData(msg);
    absl::string_view body(data == nullptr ? "" : data,
                           static_cast<size_t>(natsMsg_GetDataLength(msg)));
    MutexLock lock(&self->counts_mu_);
    auto& counts = self->remote_counts_[node];
    for (absl::string_view l : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
      size_t space = l.find(' ');
      uint64_t n = 0;
      if (space == absl::string_view::npos || !absl::SimpleAtoi(l.substr(0, space), &n)) continue;
      absl::string_view token = l.substr(space + 1);
      std::string topic(token == kBroadcastToken ? absl::string_view() : token);
      if (n == 0) {
        counts.erase(topic);
      } else {
        counts[topic] = n;
      }
    }
  }
  natsMsg_Destroy(msg);
  self->delivering_.fetch_sub(1);
}

uint64_t NatsBroker::RemoteSubscribers(const std::string& topic) {
  uint64_t n = 0;
  MutexLock lock(&counts_mu_);
  for (const auto& [node, counts] : remote_counts_) {
    auto it = counts.find(topic);
    if (it != counts.end()) n += it->second;
  }
  return n;
}

void NatsBroker::ForgetNode(const std::string& node) {
  MutexLock lock(&counts_mu_);
  remote_counts_.erase(node);
}

void NatsBroker::OnPresence(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* self = static_cast<NatsBroker*>(closure);
  self->delivering_.fetch_add(1);  // seq_cst with stopping_, as in Stop
  const char* data = natsMsg_GetData(msg);
  std::string node(data == nullptr ? "" : data, static_cast<size_t>(natsMsg_GetDataLength(msg)));
  bool bye = std::strcmp(natsMsg_GetSubject(msg), kPresenceBye) == 0;
  if (!node.empty() && !self->stopping_.load()) {
    bool newcomer = false;
    {
      MutexLock lock(&self->presence_mu_);
      if (bye) {
        self->peers_.erase(node);
      } else {
        newcomer = self->peers_.insert_or_assign(node, absl::Now()).second;
      }
      // A node that just joined learns of this one at once, not at the
      // next heartbeat, with every count it needs.
      if (newcomer && node != self->options_.node_id) self->send_full_counts_ = true;
    }
    if (bye) self->ForgetNode(node);
    if (newcomer && node != self->options_.node_id) self->presence_cv_.Signal();
  }
  natsMsg_Destroy(msg);
  self->delivering_.fetch_sub(1);
}

std::vector<std::string> NatsBroker::peers() {
  std::vector<std::string> out{options_.node_id};
  const absl::Time cutoff = absl::Now() - 3 * options_.presence_interval;
  MutexLock lock(&presence_mu_);
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (it->second < cutoff) {
      ForgetNode(it->first);
      peers_.erase(it++);
      continue;
    }
    if (it->first != options_.node_id) out.push_back(it->first);
    ++it;
  }
  return out;
}

// ------------------------------------------------------------------ metrics

void NatsBroker::AppendMetrics(std::string* out) const {
  auto metric = [&](const char* type, const char* name, const char* help, auto value) {
    absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name,
                    " ", value, "\n");
  };
  metric("gauge", "fanout_cluster_connected",
         "1 while the node is connected to the NATS cluster, 0 otherwise.", connected() ? 1 : 0);
  metric("counter", "fanout_cluster_disconnects_total", "Times the NATS connection was lost.",
         disconnects_.load());
  metric("counter", "fanout_cluster_reconnects_total", "Times the NATS connection came back.",
         reconnects_.load());
  metric("gauge", "fanout_cluster_subscriptions",
         "NATS subscriptions of the node: one per topic with local subscribers, and the "
         "broadcasts'.",
         subscriptions_.load());
  metric("counter", "fanout_cluster_messages_received_total",
         "Messages the node received from the cluster to deliver locally.", received_.load());
  metric("counter", "fanout_cluster_publishes_total",
         "Publishes of this node stored in JetStream.", published_.load());
  metric("counter", "fanout_cluster_live_publishes_total",
         "Publishes of this node with skip_history, sent to the nodes without JetStream.",
         published_live_.load());
  metric("counter", "fanout_cluster_publish_races_lost_total",
         "Publish attempts renumbered because another node's message to the topic came first.",
         races_lost_.load());
  metric("counter", "fanout_cluster_publish_errors_total",
         "Publishes of this node answered UNAVAILABLE or ABORTED by the cluster.",
         publish_errors_.load());
  metric("counter", "fanout_cluster_history_reads_total",
         "Walks of a topic's history in JetStream; recoveries and History calls of one topic "
         "waiting at once share one.",
         history_reads_.load());
  metric("counter", "fanout_cluster_history_requests_total",
         "Recoveries and History calls answered from JetStream.", history_requests_.load());
  metric("counter", "fanout_cluster_history_read_messages_total",
         "Kept messages those reads returned.", history_read_messages_.load());
  metric("counter", "fanout_cluster_history_read_errors_total",
         "History reads that failed (the recovery said recovered:false).",
         history_read_errors_.load());
  metric("counter", "fanout_cluster_queries_total",
         "Cluster-wide questions this node asked (ListSubscribers, ListTopics, GetStats).",
         queries_asked_.load());
  metric("counter", "fanout_cluster_queries_partial_total",
         "Of those, answered partial: a node did not answer in time.", queries_partial_.load());
  metric("counter", "fanout_cluster_slow_consumer_total",
         "Times NATS dropped messages because the node fell behind.",
         slow_consumer_errors_.load());
}

}  // namespace fanout
