// fanout.v1.Fanout: PublishBatch, PublishStream and Watch.
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/alarm.h"
#include "core/delivery_budget.h"
#include "core/mutex.h"
#include "core/topic_pattern.h"
#include "service/fanout_service.h"
#include "service/rpc_util.h"

namespace fanout {
namespace {

constexpr int kMaxBatch = 1000;
// Results a PublishStream client may leave unread before the server stops
// reading its requests (backpressure instead of unbounded memory).
constexpr size_t kMaxUnreadResults = 10000;

// Result batching. A read that completes within kBackToBackNs of being
// started found its request already waiting: the client sends ahead of its
// results. Once kBatchAfter such reads have come in a row (a slow one halves
// the count), the last ready result is held back while the next read is
// pending, and the results before it are written with gRPC's buffer hint, so
// a burst of requests is answered by one write instead of a sendmsg (and a
// client wake-up) per result. A held result waits at most until the next
// request arrives or a flush alarm fires (gRPC's timers round up to the
// millisecond, so 1-2 ms). A client that waits for each result never reaches
// batching. One that sends a few ahead and then waits for them would wait for
// the alarm: when the alarm finds a result held and no request has come
// since it was held, the stream stops holding for the next kHoldOffReads <<
// (stalls in a row, at most 4) requests, so such a client pays one alarm now
// and then, not one per window. A client busy elsewhere can pause past the
// alarm too, and looks the same; its stalls come far apart, and a stall that
// comes long after the hold-off ended counts as the first again.
constexpr int64_t kBackToBackNs = 50'000;
constexpr int kBatchAfter = 32;
constexpr std::chrono::milliseconds kFlushDelay{1};
constexpr uint64_t kHoldOffReads = 1000;
// At most this many results wait in gRPC's buffer: a client that keeps more
// requests than this outstanding is never left waiting on the buffer.
constexpr int kMaxUnflushed = 64;
constexpr int kMaxHoldOffShift = 4;

// Orders the setting of a flush alarm before its callback (see its use).
// Held only around one Set or one copy: taken under a reactor's mu_, never
// while taking another lock.
Mutex alarm_handoff_mu;

int64_t MonoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// One PublishStream call: reads requests, publishes each, writes one result
// per request in order. One read and one write in flight at most. Reading
// pauses while too many results wait for the client, and while the node's
// delivery budget is spent: a producer that outruns delivery is slowed by
// HTTP/2 flow control instead of failed or buffered for.
// Thread: gRPC callback threads (and, to resume, whichever thread frees
// budget); reactions may run concurrently, so state is under mu_. Owns itself
// until OnDone, or until the budget callback it waits for has run.
class PublishStreamReactor final : public grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResult>,
                                   public StreamRegistry::Stream {
 public:
  using PublishFn = std::function<void(const v1::PublishRequest&, v1::PublishResult*,
                                       absl::AnyInvocable<void() &&>)>;
  PublishStreamReactor(PublishFn publish, std::function<bool()> serving, DeliveryBudget* budget,
                       StreamRegistry* registry)
      : publish_(std::move(publish)),
        serving_(std::move(serving)),
        budget_(budget),
        registry_(registry) {
    {
      MutexLock lock(&alarm_link_->mu);
      alarm_link_->reactor = this;
    }
    {
      // gRPC hands this reactor to its other threads through its own
      // synchronization, which ThreadSanitizer cannot see in Debian's
      // uninstrumented gRPC: taking mu_ here, as every reaction does first,
      // makes the construction visibly happen before them.
      MutexLock lock(&mu_);
      StartReadLocked();
    }
    // Not under mu_: shutdown takes the registry's lock, then ours.
    if (!registry_->Add(this)) OnNodeShutdown();  // opened during shutdown
  }

  // The node is stopping: owed results are written, then the stream ends with
  // UNAVAILABLE, even if the producer is idle with a read pending.
  void OnNodeShutdown() override {
    MutexLock lock(&mu_);
    if (read_done_) return;
    read_done_ = true;
    final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down");
    MaybeWriteLocked();  // a held result
    MaybeFinishLocked();
  }

  void OnCancel() override {
    MutexLock lock(&mu_);
    if (read_done_) return;
    // A pending read ends with !ok by itself; a paused stream has none.
    if (!read_paused_ && !waiting_budget_) return;
    read_done_ = true;
    final_status_ = grpc::Status::CANCELLED;
    results_.clear();
    MaybeFinishLocked();
  }

  void OnReadDone(bool ok) override {
    auto slot = std::make_shared<Slot>();
    {
      MutexLock lock(&mu_);
      ++reads_;
      if (hold_off_ > 0) --hold_off_;
      last_back_to_back_ = MonoNs() - read_started_ns_ < kBackToBackNs;
      if (last_back_to_back_) {
        back_to_back_ = std::min(back_to_back_ + 1, 2 * kBatchAfter);
      } else {
        back_to_back_ /= 2;
      }
      if (read_done_) {  // ended by shutdown while this read was pending
        MaybeWriteLocked();
        MaybeFinishLocked();
        return;
      }
      if (!ok) {  // the client half-closed, or the call is cancelled
        read_done_ = true;
        MaybeWriteLocked();  // a held result
        MaybeFinishLocked();
        return;
      }
      if (!serving_()) {
        read_done_ = true;
        final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down");
        MaybeWriteLocked();
        MaybeFinishLocked();
        return;
      }
      results_.push_back(slot);
      ++publishing_;
    }
    // Not under mu_: a standalone node's broker answers inline. Results are
    // written in request order, each once it has its answer.
    publish_(request_, &slot->result, [this, slot] {
      {
        MutexLock lock(&mu_);
        slot->ready = true;
        --publishing_;
        if (!ReleasableLocked()) {
          MaybeWriteLocked();
          MaybeFinishLocked();
          return;
        }
      }
      Release();
    });
    {
      MutexLock lock(&mu_);
      if (read_done_) {  // ended meanwhile (shutdown, or the client went away)
        MaybeWriteLocked();
        MaybeFinishLocked();
        return;
      }
      if (results_.size() >= kMaxUnreadResults) {
        read_paused_ = true;
        MaybeWriteLocked();  // a held result: no read is coming for it
        return;
      }
      if (!budget_->over()) {
        StartReadLocked();
        return;
      }
      waiting_budget_ = true;
      MaybeWriteLocked();
    }
    WaitForBudget();
  }

  void OnWriteDone(bool ok) override {
    {
      MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client went away; stop reading and end.
        final_status_ = grpc::Status::CANCELLED;
        results_.clear();
        // A pending read ends with !ok by itself.
        if (!read_paused_ && !read_done_ && !waiting_budget_) return;
        read_done_ = true;
        MaybeFinishLocked();
        return;
      }
      MaybeWriteLocked();
      MaybeFinishLocked();
      if (!read_paused_ || results_.size() >= kMaxUnreadResults / 2) return;
      read_paused_ = false;
      if (read_done_) return;
      if (!budget_->over()) {
        StartReadLocked();
        return;
      }
      waiting_budget_ = true;
    }
    WaitForBudget();
  }

  void OnDone() override {
    AlarmLink* link;
    {
      MutexLock lock(&mu_);  // see the constructor
      link = alarm_link_.get();
    }
    {
      // From here a flush alarm still pending finds no reactor. Not under
      // mu_: the alarm's callback holds the link's lock while it takes mu_.
      MutexLock lock(&link->mu);
      link->reactor = nullptr;
    }
    {
      MutexLock lock(&mu_);
      done_ = true;
      // The budget callback, or a publish's answer, still refers to this:
      // the last of them frees it.
      if (!ReleasableLocked()) return;
    }
    Release();
  }

 private:
  // Called without mu_: the callback may run at once, on this thread.
  void WaitForBudget() {
    budget_->WhenRoom([this] { Resume(); });
  }
  void Resume() {
    {
      MutexLock lock(&mu_);
      waiting_budget_ = false;
      if (!done_) {
        if (read_done_) {
          MaybeFinishLocked();
        } else if (!read_paused_) {
          StartReadLocked();
        }
        return;
      }
      if (!ReleasableLocked()) return;
    }
    Release();
  }

  // Whether gRPC is done with this and nothing else refers to it.
  bool ReleasableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done_ && !waiting_budget_ && publishing_ == 0;
  }
  void Release() {
    registry_->Remove(this);
    delete this;
  }

  void StartReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    read_started_ns_ = MonoNs();
    StartRead(&request_);
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (done_ || writing_ || results_.empty() || !results_.front()->ready) return;
    bool next_ready = results_.size() > 1 && results_[1]->ready;
    bool room = unflushed_ + 1 < kMaxUnflushed;
    if (!next_ready && room && HoldLocked()) {
      reads_when_held_ = reads_;
      if (!alarm_set_) {
        // A new alarm each time: the last one's callback may still be
        // returning on another thread, and gRPC keeps an alarm alive until
        // its callback has returned even when the object is destroyed. The
        // callback reaches this through the link, so the reactor may be
        // freed (after OnDone) with an alarm pending. Set under mu_ is
        // safe: a deadline in the future never runs the callback inside Set.
        // gRPC hands the callback to its timer thread through its own
        // synchronization, which ThreadSanitizer cannot see in Debian's
        // uninstrumented gRPC: the callback takes the same lock before it
        // reads what it captured.
        alarm_set_ = true;
        flush_alarm_ = std::make_unique<grpc::Alarm>();
        MutexLock handoff(&alarm_handoff_mu);
        flush_alarm_->Set(std::chrono::system_clock::now() + kFlushDelay, [link = alarm_link_](bool) {
          std::shared_ptr<AlarmLink> l;
          {
            MutexLock handoff(&alarm_handoff_mu);
            l = link;
          }
          MutexLock lock(&l->mu);
          if (l->reactor != nullptr) l->reactor->OnFlushAlarm();
        });
      }
      return;
    }
    writing_ = true;
    writing_result_ = std::move(results_.front()->result);
    results_.pop_front();
    // Hinted, the result waits in gRPC's buffer for the one after it, which
    // is either ready now or held (and then written by the next read, the
    // alarm, or the end of reading); unhinted, everything buffered leaves.
    if (room && (next_ready || HoldLocked())) {
      ++unflushed_;
      StartWrite(&writing_result_, grpc::WriteOptions().set_buffer_hint());
    } else {
      unflushed_ = 0;
      flush_due_ = false;
      StartWrite(&writing_result_);
    }
  }
  // Whether the last ready result may wait for the next request (above).
  bool HoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return last_back_to_back_ && back_to_back_ >= kBatchAfter && hold_off_ == 0 && !flush_due_ &&
           !read_done_ && !read_paused_ && !waiting_budget_;
  }
  // Thread: a gRPC executor thread, under alarm_link_->mu, before OnDone.
  void OnFlushAlarm() {
    MutexLock lock(&mu_);
    alarm_set_ = false;
    if (done_) return;
    if (reads_ == reads_when_held_ && !writing_ && !results_.empty() && results_.front()->ready) {
      // Held, and no request came since: the client waited for it.
      if (reads_ - last_stall_reads_ > 2 * last_hold_off_ + kHoldOffReads) stalls_ = 0;
      last_stall_reads_ = reads_;
      hold_off_ = last_hold_off_ = kHoldOffReads << std::min(stalls_++, kMaxHoldOffShift);
    }
    flush_due_ = true;
    MaybeWriteLocked();
    MaybeFinishLocked();
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (done_ || finished_ || !read_done_ || writing_ || !results_.empty()) return;
    finished_ = true;
    Finish(final_status_);
  }

  // One request's result, written once `ready`.
  struct Slot {
    v1::PublishResult result;
    bool ready = false;  // guarded by mu_
  };

  const PublishFn publish_;
  const std::function<bool()> serving_;
  DeliveryBudget* const budget_;
  StreamRegistry* const registry_;
  Mutex mu_;
  v1::PublishRequest request_;  // owned by the pending read
  // What a flush alarm's callback holds: the reactor until OnDone, then null.
  struct AlarmLink {
    Mutex mu;
    PublishStreamReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  };
  const std::shared_ptr<AlarmLink> alarm_link_ = std::make_shared<AlarmLink>();
  std::unique_ptr<grpc::Alarm> flush_alarm_ ABSL_GUARDED_BY(mu_);
  int64_t read_started_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int back_to_back_ ABSL_GUARDED_BY(mu_) = 0;  // recent reads that found a request waiting
  bool last_back_to_back_ ABSL_GUARDED_BY(mu_) = false;  // the last read did
  int unflushed_ ABSL_GUARDED_BY(mu_) = 0;  // results written with the hint since the last flush
  uint64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reads_when_held_ ABSL_GUARDED_BY(mu_) = 0;  // reads_ when a result was last held
  uint64_t hold_off_ ABSL_GUARDED_BY(mu_) = 0;  // requests to come before holding again
  int stalls_ ABSL_GUARDED_BY(mu_) = 0;  // alarms that found a result held
  uint64_t last_stall_reads_ ABSL_GUARDED_BY(mu_) = 0;  // reads_ at the last one
  uint64_t last_hold_off_ ABSL_GUARDED_BY(mu_) = 0;
  bool alarm_set_ ABSL_GUARDED_BY(mu_) = false;
  bool flush_due_ ABSL_GUARDED_BY(mu_) = false;  // the alarm fired: write what is held
  v1::PublishResult writing_result_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Slot>> results_ ABSL_GUARDED_BY(mu_);
  int publishing_ ABSL_GUARDED_BY(mu_) = 0;  // publishes not answered yet
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;     // too many unread results
  bool waiting_budget_ ABSL_GUARDED_BY(mu_) = false;  // the node is overloaded
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_) = grpc::Status::OK;
};

// The hub-side half of a Watch: filters publishes and queues events for the
// reactor. Lives as long as either the hub or the reactor holds it.
class WatchTap;

// One Watch call: writes queued events, one write in flight.
// Thread: gRPC callback threads and publishing threads, under the tap's lock.
class WatchReactor final : public grpc::ServerWriteReactor<v1::WatchEvent> {
 public:
  WatchReactor(Hub* hub, std::shared_ptr<WatchTap> tap);
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Set by the constructor, read first by every reaction: the construction
  // then visibly happens before them (see PublishStreamReactor).
  std::atomic<bool> published_{false};
  Hub* const hub_;
  std::shared_ptr<WatchTap> tap_;
};

// What an event costs while queued: the payload and topic copies, the
// message object and its timestamp, and the deque's slot.
int64_t WatchEventCost(absl::string_view topic, absl::string_view payload) {
  return static_cast<int64_t>(sizeof(v1::WatchEvent) + sizeof(google::protobuf::Timestamp) + 64 +
                              topic.size() + payload.size());
}

class WatchTap final : public Hub::PublishObserver {
 public:
  // `topic` may be a pattern (orders.*, orders.>): the registry's matcher.
  WatchTap(std::string topic, std::optional<TopicPattern> pattern, std::string prefix,
           WatchLimits limits)
      : topic_(std::move(topic)),
        pattern_(std::move(pattern)),
        prefix_(std::move(prefix)),
        limits_(limits) {}

  bool Wants(absl::string_view topic) const override {
    if (pattern_) return pattern_->Matches(topic);
    return topic_.empty() ? absl::StartsWith(topic, prefix_) : topic == topic_;
  }

  void OnPublish(absl::string_view topic, uint64_t seq, absl::string_view payload) override {
    MutexLock lock(&mu_);
    if (!reactor_ || finishing_) return;
    int64_t cost = WatchEventCost(topic, payload);
    if (queued_bytes_ + cost > limits_.max_bytes || queue_.size() >= limits_.max_messages) {
      // Too far behind: end this watcher rather than buffer without bound.
      finishing_ = true;
      final_status_ = grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("watcher fell too far behind (", queue_.size(), " events, ", queued_bytes_,
                       " bytes queued) and was cut off"));
      queue_.clear();
      queued_bytes_ = 0;
      MaybeFinishLocked();
      return;
    }
    v1::WatchEvent& e = queue_.emplace_back();
    e.set_topic(std::string(topic));
    e.set_seq(seq);
    e.set_payload(std::string(payload));
    SetTimestamp(absl::Now(), e.mutable_published_at());
    queued_bytes_ += cost;
    MaybeWriteLocked();
  }

  void Attach(WatchReactor* r) {
    MutexLock lock(&mu_);
    reactor_ = r;
  }
  void Detach() {
    MutexLock lock(&mu_);
    reactor_ = nullptr;
  }
  void WriteDone(bool ok) {
    MutexLock lock(&mu_);
    writing_ = false;
    queued_bytes_ -= std::min(queued_bytes_, writing_cost_);
    writing_cost_ = 0;
    if (!ok) {
      finishing_ = true;
      queue_.clear();
      queued_bytes_ = 0;
      final_status_ = grpc::Status::CANCELLED;
    }
    MaybeWriteLocked();
    MaybeFinishLocked();
  }
  void OnShutdown() override {
    FinishWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down"));
  }
  // End the stream once what is being written is written.
  void FinishWith(grpc::Status status) {
    MutexLock lock(&mu_);
    if (finishing_) return MaybeFinishLocked();
    finishing_ = true;
    final_status_ = std::move(status);
    queue_.clear();
    queued_bytes_ = writing_cost_;
    MaybeFinishLocked();
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || queue_.empty() || !reactor_ || finishing_) return;
    writing_ = true;
    writing_event_ = std::move(queue_.front());
    queue_.pop_front();
    writing_cost_ = WatchEventCost(writing_event_.topic(), writing_event_.payload());
    reactor_->StartWrite(&writing_event_);
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!finishing_ || writing_ || finished_ || !reactor_) return;
    finished_ = true;
    reactor_->Finish(final_status_);
  }

  const std::string topic_;
  const std::optional<TopicPattern> pattern_;
  const std::string prefix_;
  const WatchLimits limits_;
  Mutex mu_;
  WatchReactor* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<v1::WatchEvent> queue_ ABSL_GUARDED_BY(mu_);
  v1::WatchEvent writing_event_ ABSL_GUARDED_BY(mu_);
  int64_t writing_cost_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

WatchReactor::WatchReactor(Hub* hub, std::shared_ptr<WatchTap> tap)
    : hub_(hub), tap_(std::move(tap)) {
  tap_->Attach(this);
  // Opened while the node stops: the shutdown notice has gone out already.
  if (!hub_->AddObserver(tap_)) {
    tap_->FinishWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down"));
  }
  published_.store(true, std::memory_order_release);
}

void WatchReactor::OnWriteDone(bool ok) {
  published_.load(std::memory_order_acquire);
  tap_->WriteDone(ok);
}

// The client went away: end now, not at the next matching publish.
void WatchReactor::OnCancel() {
  published_.load(std::memory_order_acquire);
  tap_->FinishWith(grpc::Status::CANCELLED);
}

void WatchReactor::OnDone() {
  published_.load(std::memory_order_acquire);
  hub_->RemoveObserver(tap_.get());
  tap_->Detach();
  delete this;
}

}  // namespace

bool StreamRegistry::Add(Stream* s) {
  MutexLock lock(&mu_);
  if (shut_down_) return false;
  streams_.insert(s);
  return true;
}

void StreamRegistry::Remove(Stream* s) {
  MutexLock lock(&mu_);
  streams_.erase(s);
}

void StreamRegistry::ShutdownAll() {
  // Held throughout: a stream's OnDone (which removes it, then frees it)
  // waits here, so no stream is freed while being told.
  MutexLock lock(&mu_);
  shut_down_ = true;
  for (Stream* s : streams_) s->OnNodeShutdown();
}

void FanoutServiceImpl::Shutdown() { streams_.ShutdownAll(); }

void FanoutServiceImpl::PublishOne(const v1::PublishRequest& req, v1::PublishResult* result,
                                   Hub::Admission admission, absl::AnyInvocable<void() &&> done) {
  if (!counters_.serving()) {
    rejected_shutting_down_.fetch_add(1, std::memory_order_relaxed);
    result->set_code(static_cast<int32_t>(grpc::StatusCode::UNAVAILABLE));
    result->set_error("node is shutting down");
    return std::move(done)();
  }
  hub_->Publish(req.topic(), req.payload(),
                {.admission = admission, .skip_history = req.skip_history()},
                [result, done = std::move(done)](absl::StatusOr<PublishResult> r) mutable {
                  if (r.ok()) {
                    result->set_seq(r->seq);
                    result->set_subscribers(r->subscribers);
                  } else {
                    result->set_code(static_cast<int32_t>(r.status().code()));
                    result->set_error(std::string(r.status().message()));
                  }
                  std::move(done)();
                });
}

grpc::ServerUnaryReactor* FanoutServiceImpl::PublishBatch(grpc::CallbackServerContext* ctx,
                                                          const v1::PublishBatchRequest* req,
                                                          v1::PublishBatchResponse* resp) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kPublish); !s.ok()) return Finish(ctx, s);
  if (req->messages_size() > kMaxBatch) {
    return Finish(ctx, absl::InvalidArgumentError(
                           absl::StrCat("a batch holds at most ", kMaxBatch, " messages")));
  }
  if (!counters_.serving()) {
    rejected_shutting_down_.fetch_add(1, std::memory_order_relaxed);
    return Finish(ctx, absl::UnavailableError("node is shutting down"));
  }
  // Refused whole when the node is overloaded; otherwise every message is
  // taken (a batch is at most one gRPC message, so it cannot overshoot much).
  if (hub_->budget().over()) {
    return Finish(ctx, absl::ResourceExhaustedError(absl::StrCat(
                           "node overloaded: ", hub_->budget().used(),
                           " bytes of deliveries are pending (limit ", hub_->budget().limit(),
                           "); retry later")));
  }
  // Answered once every message has its result; one count for this loop, so
  // that results finishing while it runs cannot answer early.
  AsyncUnary call(ctx);
  auto left = std::make_shared<std::atomic<int>>(req->messages_size() + 1);
  auto finish = call.Finisher([] { return absl::OkStatus(); });
  auto one_done = [left, finish]() mutable {
    if (left->fetch_sub(1, std::memory_order_acq_rel) == 1) finish();
  };
  for (const auto& m : req->messages()) {
    // The results are written under the call's lock, so that every one is
    // seen written by whichever thread finishes (and serializes) the call.
    PublishOne(m, resp->add_results(), Hub::Admission::kAccept,
               [one_done, mu = call.mu()]() mutable {
                 { MutexLock lock(mu.get()); }
                 one_done();
               });
  }
  one_done();
  return call.Return();
}

grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResult>* FanoutServiceImpl::PublishStream(
    grpc::CallbackServerContext* ctx) {
  if (absl::Status s = Authorize(ctx, ApiTokens::Scope::kPublish); !s.ok()) {
    class Refuse final : public grpc::ServerBidiReactor<v1::PublishRequest, v1::PublishResult> {
     public:
      explicit Refuse(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(s);
  }
  return new PublishStreamReactor(
      [this](const v1::PublishRequest& r, v1::PublishResult* out,
             absl::AnyInvocable<void() &&> done) {
        PublishOne(r, out, Hub::Admission::kAccept, std::move(done));
      },
      counters_.serving, &hub_->budget(), &streams_);
}

grpc::ServerWriteReactor<v1::WatchEvent>* FanoutServiceImpl::Watch(grpc::CallbackServerContext* ctx,
                                                                   const v1::WatchRequest* req) {
  std::optional<TopicPattern> pattern;
  auto validate = [&]() -> absl::Status {
    if (!req->topic().empty() && !req->prefix().empty()) {
      return absl::InvalidArgumentError("set topic or prefix, not both");
    }
    if (IsPattern(req->topic())) {
      auto parsed = TopicPattern::Parse(req->topic(), hub_->limits().max_topic_length);
      if (!parsed.ok()) return absl::InvalidArgumentError(parsed.status().message());
      pattern = *std::move(parsed);
      return absl::OkStatus();
    }
    if (!req->topic().empty()) return hub_->ValidateTopic(req->topic());
    if (!req->prefix().empty()) {
      if (absl::Status s = hub_->ValidateTopic(req->prefix()); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("prefix: ", s.message()));
      }
    }
    return absl::OkStatus();
  };
  absl::Status status = Authorize(ctx, ApiTokens::Scope::kAdmin);
  if (status.ok()) status = validate();
  if (status.ok() && hub_->observer_count() >= watch_limits_.max_watchers) {
    status = absl::ResourceExhaustedError(
        absl::StrCat("the node already has the limit of ", watch_limits_.max_watchers,
                     " Watch streams"));
  }
  if (!status.ok()) {
    class Refuse final : public grpc::ServerWriteReactor<v1::WatchEvent> {
     public:
      explicit Refuse(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(status);
  }
  auto tap =
      std::make_shared<WatchTap>(req->topic(), std::move(pattern), req->prefix(), watch_limits_);
  // Send the response headers now so a client (grpcurl) sees the stream open
  // before the first event.
  auto* reactor = new WatchReactor(hub_, tap);
  reactor->StartSendInitialMetadata();
  return reactor;
}

}  // namespace fanout
