#ifndef FANOUT_CLUSTER_NATS_BROKER_H_
#define FANOUT_CLUSTER_NATS_BROKER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/broker.h"
#include "core/history.h"
#include "core/mutex.h"

struct __natsConnection;
struct __jsCtx;
struct __natsSubscription;
struct __natsMsg;

namespace fanout {

struct NatsBrokerOptions {
  // nats://host:port URLs of the NATS cluster's servers (any subset: the
  // client learns the others from the cluster).
  std::vector<std::string> servers;
  // The node's id: its NATS connection is named fanout-<node_id>.
  std::string node_id;
  // Replicas of the JetStream stream that numbers publishes (created by the
  // first node that finds it missing): 3 survives the loss of one server.
  int replicas = 3;
  // Threads that publish into JetStream. A topic's publishes go through one
  // of them in order, so this bounds how many topics commit at once.
  int publish_workers = 8;
  // Which topics keep history (the nodes' --history flags, the same on
  // every node): theirs go into the stream FANOUT_HISTORY, which keeps the
  // most any policy keeps; each topic's own policy applies when read.
  HistoryConfig history;
  // How long a publish waits for JetStream's acknowledgement.
  absl::Duration publish_timeout = absl::Seconds(5);
  // Nodes announce themselves this often; one silent for three periods is
  // no longer waited for by cluster-wide answers.
  absl::Duration presence_interval = absl::Seconds(1);
  // Told when the connection to NATS is lost (false) and back (true).
  // Thread: libnats' callback thread.
  std::function<void(bool connected)> on_connection;
};

// The broker of a cluster: every node connects to one NATS cluster.
//
// Numbering: a publish goes into the JetStream stream FANOUT on
// `fanout.t.<topic>`, carrying its sequence number in the topic (the topic's
// last number plus one) as the header Fanout-Seq. Two nodes publishing to one
// topic at once must not both take the same number, so each publish names the
// stream sequence of the topic's last message it built on, twice: as
// Nats-Expected-Last-Subject-Sequence (the stream refuses it if another
// message came in between) and in its Nats-Msg-Id (the stream drops it as a
// duplicate if another one built on the same message was stored first: in a
// replicated stream of nats-server 2.9 the first check alone lets concurrent
// proposals through). The loser re-reads the topic's last message and tries
// again with the next number. docs/design/cluster.md has the experiments.
//
// Delivery: the stream republishes each stored message on `fanout.d.<topic>`
// in stream order; a node subscribes there while it has local subscribers of
// the topic (interest), so every node delivers every message once, in one
// order, with one sequence, and a node without subscribers of a topic gets
// none of its traffic. The publishing node delivers its own message the same
// way. Broadcasts use the topic `~b`, to which every node subscribes.
//
// Thread: safe from any thread. libnats' delivery threads call the hub;
// one interest thread subscribes and unsubscribes; publish workers block on
// JetStream, never a caller.
class NatsBroker final : public Broker {
 public:
  // Connects, and creates the stream if it is missing. UNAVAILABLE when no
  // server answers, FAILED_PRECONDITION when NATS has no JetStream or the
  // stream exists with another configuration.
  static absl::StatusOr<std::unique_ptr<NatsBroker>> Create(NatsBrokerOptions options);
  ~NatsBroker() override;

  void Attach(LocalDelivery* delivery, DeliveryBudget* budget) override;
  void Publish(const OutgoingMessage& m, PublishDone done) override;
  void OnTopicActive(absl::string_view topic) override;
  void OnTopicIdle(absl::string_view topic) override;
  bool connected() const override { return connected_.load(std::memory_order_acquire); }
  bool clustered() const override { return true; }
  void SetQueryHandler(QueryHandler handler) override;
  // Publishes the question on fanout.q.<verb> and waits (on a broker thread)
  // for an answer from every node heard from lately, or the timeout;
  // `partial` when one of them did not answer.
  void Gather(absl::string_view verb, std::string request, absl::Duration timeout,
              absl::AnyInvocable<void(Gathered) &&> done) override;
  void AppendMetrics(std::string* out) const override;
  // History lives in JetStream: each stored message names the stream
  // sequence of the topic's previous one (Fanout-Prev), and a read walks
  // back from the topic's last message, one request per message, on a
  // reader thread.
  bool keeps_history() const override { return true; }
  void ReadHistory(absl::string_view topic, const TopicPosition* since, size_t limit,
                   bool after_interest,
                   absl::AnyInvocable<void(absl::StatusOr<HistoryPage>) &&> done) override;
  // The nodes heard from lately, this one included, by id.
  std::vector<std::string> peers();

  // Stops delivering to the hub and answers every queued publish with
  // UNAVAILABLE; closes the connection. Idempotent; called by the destructor.
  void Stop();

  std::string connected_url() const;

 private:
  struct Interest;
  struct Job {
    std::string topic;  // empty for a broadcast
    std::string payload;
    std::optional<PayloadKind> kind;
    uint64_t exclude = 0;
    // skip_history: delivered live (core NATS), never numbered or stored.
    bool live = false;
    int64_t charge = 0;
    PublishDone done;
  };
  // The stream sequence, fanout sequence and epoch of a topic's last
  // message.
  struct Position {
    uint64_t stream_seq = 0;
    uint64_t seq = 0;
    std::string epoch;
  };
  struct StreamSpec {
    const char* name;
    const char* subjects;
    int64_t max_per_subject;
    int64_t max_age_nanos;
    std::string description;
  };
  struct HistoryRead {
    std::string topic;
    std::optional<TopicPosition> since;
    size_t limit = 0;
    absl::AnyInvocable<void(absl::StatusOr<HistoryPage>) &&> done;
  };
  // A change of interest (a topic gained or lost its last local subscriber),
  // or a history read waiting for the interest before it.
  struct InterestChange {
    std::string topic;
    bool active = false;
    std::unique_ptr<HistoryRead> read;
  };
  class Worker;
  struct Query {
    std::string verb;
    std::string request;
    absl::Duration timeout;
    absl::AnyInvocable<void(Gathered) &&> done;
  };

  explicit NatsBroker(NatsBrokerOptions options);
  absl::Status Connect();
  absl::Status EnsureStream(const StreamSpec& spec);
  // The stream of a --history rule that keeps messages: FANOUT_HISTORY for
  // the default policy, FANOUT_HISTORY_<id> for an override, each with that
  // rule's limits.
  struct HistoryStream {
    bool enabled = false;
    HistoryPolicy policy;
    std::string pattern;   // empty: the default policy
    std::string name;      // FANOUT_HISTORY[_<id>]
    std::string prefix;    // fanout.h<id>.
    std::string subjects;  // fanout.h<id>.>
  };
  // The history stream `topic` goes into; null when its policy keeps
  // nothing (then FANOUT numbers it).
  const HistoryStream* HistoryStreamOf(absl::string_view topic) const;
  // What one walk of a topic's stream found: its position, and its kept
  // messages after some seq, newest first, down to `reached` (the oldest).
  struct StoredHistory {
    bool known = false;
    TopicPosition position;
    std::vector<std::shared_ptr<const HistoryEntry>> newest_first;
    uint64_t reached = 0;
  };
  absl::StatusOr<StoredHistory> ReadStored(const std::string& topic, uint64_t after);
  // One reader's page of a walk that reached back at least to its since.
  static HistoryPage PageFor(const StoredHistory& stored, const HistoryRead& read);
  void RunReader();
  absl::StatusOr<PublishResult> PublishLive(const Job& job);
  // Whether live message `id` was delivered already (and remembers it).
  bool SeenLive(absl::string_view id);
  absl::StatusOr<PublishResult> PublishNow(Job& job,
                                           absl::flat_hash_map<std::string, Position>* positions);
  absl::StatusOr<Position> LastPosition(const char* stream, const std::string& subject);
  void RunInterest();
  void RunPresence();
  void RunQueries();
  Gathered Ask(Query& q);
  static void OnQuery(__natsConnection* nc, __natsSubscription* sub, __natsMsg* msg,
                      void* closure);
  static void OnPresence(__natsConnection* nc, __natsSubscription* sub, __natsMsg* msg,
                         void* closure);
  static void OnCounts(__natsConnection* nc, __natsSubscription* sub, __natsMsg* msg,
                       void* closure);
  void ReportCounts(bool full, absl::flat_hash_map<std::string, uint64_t>* reported);
  uint64_t RemoteSubscribers(const std::string& topic);
  void ForgetNode(const std::string& node);
  void Subscribe(const std::string& topic) ABSL_EXCLUSIVE_LOCKS_REQUIRED(interest_mu_);
  void Unsubscribe(const std::string& topic) ABSL_EXCLUSIVE_LOCKS_REQUIRED(interest_mu_);

  static void OnMessage(__natsConnection* nc, __natsSubscription* sub, __natsMsg* msg,
                        void* closure);
  static void OnSubscriptionComplete(void* closure);
  static void OnDisconnected(__natsConnection* nc, void* closure);
  static void OnReconnected(__natsConnection* nc, void* closure);
  static void OnClosed(__natsConnection* nc, void* closure);
  static void OnError(__natsConnection* nc, __natsSubscription* sub, int status, void* closure);
  void SetConnected(bool connected);

  const NatsBrokerOptions options_;
  LocalDelivery* delivery_ = nullptr;
  DeliveryBudget* budget_ = nullptr;
  __natsConnection* nc_ = nullptr;
  __jsCtx* js_ = nullptr;
  std::atomic<bool> connected_{false};
  std::atomic<bool> stopping_{false};
  // libnats callbacks inside the hub right now; Stop waits for none.
  std::atomic<int> delivering_{0};

  // Interest changes, applied in order by the interest thread.
  Mutex interest_mu_;
  CondVar interest_cv_;
  std::deque<InterestChange> interest_queue_ ABSL_GUARDED_BY(interest_mu_);
  absl::flat_hash_map<std::string, Interest*> interests_ ABSL_GUARDED_BY(interest_mu_);
  bool interest_stop_ ABSL_GUARDED_BY(interest_mu_) = false;
  std::thread interest_thread_;

  std::vector<std::unique_ptr<Worker>> workers_;

  // History reads, answered by reader threads.
  Mutex read_mu_;
  CondVar read_cv_;
  std::deque<std::unique_ptr<HistoryRead>> reads_ ABSL_GUARDED_BY(read_mu_);
  bool read_stop_ ABSL_GUARDED_BY(read_mu_) = false;
  std::vector<std::thread> readers_;

  // Cluster-wide questions: this node's answers, and the ones it asks.
  QueryHandler query_handler_;
  __natsSubscription* query_sub_ = nullptr;
  Mutex query_mu_;
  CondVar query_cv_;
  std::deque<Query> queries_ ABSL_GUARDED_BY(query_mu_);
  bool query_stop_ ABSL_GUARDED_BY(query_mu_) = false;
  std::thread query_thread_;

  // Presence: who is in the cluster, by their heartbeats.
  __natsSubscription* presence_sub_ = nullptr;
  Mutex presence_mu_;
  CondVar presence_cv_;
  absl::flat_hash_map<std::string, absl::Time> peers_ ABSL_GUARDED_BY(presence_mu_);
  bool presence_stop_ ABSL_GUARDED_BY(presence_mu_) = false;
  bool send_full_counts_ ABSL_GUARDED_BY(presence_mu_) = false;
  std::thread presence_thread_;

  // Subscriber counts the other nodes reported (fanout.counts), by node,
  // then topic ("" for their connections).
  __natsSubscription* counts_sub_ = nullptr;
  Mutex counts_mu_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, uint64_t>> remote_counts_
      ABSL_GUARDED_BY(counts_mu_);

  std::atomic<uint64_t> reconnects_{0};
  std::atomic<uint64_t> disconnects_{0};
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> published_live_{0};
  Mutex live_mu_;
  absl::flat_hash_set<std::string> live_seen_ ABSL_GUARDED_BY(live_mu_);
  std::deque<std::string> live_order_ ABSL_GUARDED_BY(live_mu_);
  std::atomic<uint64_t> races_lost_{0};
  std::atomic<uint64_t> publish_errors_{0};
  std::atomic<uint64_t> slow_consumer_errors_{0};
  std::atomic<int64_t> subscriptions_{0};
  std::atomic<uint64_t> queries_asked_{0};
  std::atomic<uint64_t> queries_partial_{0};
  // By --history rule (HistoryConfig::RuleOf).
  std::vector<HistoryStream> history_streams_;
  std::atomic<uint64_t> history_reads_{0};
  std::atomic<uint64_t> history_requests_{0};
  std::atomic<uint64_t> history_read_messages_{0};
  std::atomic<uint64_t> history_read_errors_{0};
};

}  // namespace fanout

#endif  // FANOUT_CLUSTER_NATS_BROKER_H_
