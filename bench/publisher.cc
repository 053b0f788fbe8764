#include "bench/publisher.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <atomic>
#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/frame_parser.h"
#include "bench/system.h"

namespace fanout {
namespace {

constexpr absl::Duration kCallDeadline = absl::Seconds(10);

// One call slot: reused call after call, so the request's payload buffer is
// allocated once. Two contexts alternate, because a closed loop starts the next
// call from the completion of the previous one, where that call's context must
// not be destroyed yet.
struct Call {
  std::optional<grpc::ClientContext> contexts[2];
  int current = 0;
  v1::PublishRequest request;
  v1::PublishResponse response;
  v1::PublishBatchRequest batch_request;  // plan.batch > 0
  v1::PublishBatchResponse batch_response;
  int64_t sent_ns = 0;
};

// The state of one Publisher::Run().
class Run {
 public:
  Run(const PublishPlan& plan, const std::vector<std::unique_ptr<v1::Fanout::Stub>>& stubs)
      : plan_(plan), stubs_(stubs) {
    for (size_t i = 0; i < std::max<size_t>(1, plan.concurrency); ++i) {
      calls_.push_back(std::make_unique<Call>());
      calls_.back()->request.mutable_payload()->assign(plan.payload_bytes, '.');
      for (size_t m = 0; m < plan.batch; ++m) {
        calls_.back()->batch_request.add_messages()->mutable_payload()->assign(plan.payload_bytes, '.');
      }
      free_.push_back(calls_.back().get());
    }
  }

  PublishStats Execute() {
    SleepUntilNs(plan_.start_ns);
    if (plan_.rate <= 0) {
      for (size_t i = 0; i < calls_.size(); ++i) Issue(Take());
      SleepUntilNs(plan_.end_ns);
    } else {
      double interval = 1e9 / plan_.rate;
      for (uint64_t i = 0;; ++i) {
        int64_t due = plan_.start_ns + static_cast<int64_t>(static_cast<double>(i) * interval);
        if (due >= plan_.end_ns) break;
        if (MonoNs() < due) SleepUntilNs(due);
        Call* call = Take();
        if (call == nullptr) {
          absl::MutexLock lock(&mu_);
          ++stats_.skipped;
          continue;
        }
        Issue(call);
      }
    }
    // Calls carry a deadline, so this wait ends.
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Run* run) { return run->free_.size() == run->calls_.size(); }, this));
    return stats_;
  }

 private:
  Call* Take() {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) return nullptr;
    Call* call = free_.back();
    free_.pop_back();
    return call;
  }

  void Issue(Call* call) {
    uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
    call->current ^= 1;
    grpc::ClientContext& context = call->contexts[call->current].emplace();
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(kCallDeadline));
    call->sent_ns = MonoNs();
    if (plan_.batch > 0) {
      for (auto& m : *call->batch_request.mutable_messages()) {
        m.set_topic(plan_.topics[n % plan_.topics.size()]);
        std::string* payload = m.mutable_payload();
        WriteStamp(payload->data() + payload->size(), static_cast<uint64_t>(call->sent_ns));
      }
      {
        absl::MutexLock lock(&mu_);
        stats_.issued += plan_.batch;
      }
      stubs_[n % stubs_.size()]->async()->PublishBatch(
          &context, &call->batch_request, &call->batch_response,
          [this, call](grpc::Status status) { OnDone(call, status); });
      return;
    }
    call->request.set_topic(plan_.topics[n % plan_.topics.size()]);
    std::string* payload = call->request.mutable_payload();
    WriteStamp(payload->data() + payload->size(), static_cast<uint64_t>(call->sent_ns));
    {
      absl::MutexLock lock(&mu_);
      ++stats_.issued;
    }
    stubs_[n % stubs_.size()]->async()->Publish(&context, &call->request, &call->response,
                                                [this, call](grpc::Status status) { OnDone(call, status); });
  }

  void OnDone(Call* call, const grpc::Status& status) {
    int64_t now = MonoNs();
    bool again = plan_.rate <= 0 && now < plan_.end_ns;
    {
      absl::MutexLock lock(&mu_);
      bool in_window = call->sent_ns >= plan_.window_t0 && call->sent_ns < plan_.window_t1;
      if (status.ok() && plan_.batch > 0) {
        for (const auto& r : call->batch_response.results()) {
          if (r.code() != 0) {
            ++stats_.failed;
            if (stats_.first_error.empty()) stats_.first_error = absl::StrCat("PublishBatch result: ", r.error());
            continue;
          }
          ++stats_.ok;
          stats_.subscribers_total += r.subscribers();
          if (in_window) {
            ++stats_.ok_in_window;
            stats_.expected_in_window += r.subscribers();
          }
        }
        if (in_window) stats_.rpc_latency.Record(static_cast<uint64_t>(now - call->sent_ns));
      } else if (status.ok()) {
        ++stats_.ok;
        stats_.subscribers_total += call->response.subscribers();
        if (in_window) {
          ++stats_.ok_in_window;
          stats_.expected_in_window += call->response.subscribers();
          stats_.rpc_latency.Record(static_cast<uint64_t>(now - call->sent_ns));
        }
      } else {
        stats_.failed += std::max<size_t>(1, plan_.batch);
        if (stats_.first_error.empty()) {
          stats_.first_error = absl::StrCat(plan_.batch > 0 ? "PublishBatch: " : "Publish: ",
                                            static_cast<int>(status.error_code()), " ",
                                            status.error_message());
        }
      }
      if (!again) free_.push_back(call);
    }
    // Issuing from a completion does not block: the callback API only queues.
    if (again) Issue(call);
  }

  const PublishPlan& plan_;
  const std::vector<std::unique_ptr<v1::Fanout::Stub>>& stubs_;
  std::vector<std::unique_ptr<Call>> calls_;
  std::atomic<uint64_t> next_{0};
  absl::Mutex mu_;
  std::vector<Call*> free_ ABSL_GUARDED_BY(mu_);
  PublishStats stats_ ABSL_GUARDED_BY(mu_);
};

// One PublishStream call: writes requests back to back while fewer than
// `window` results are outstanding; results come back in request order, so a
// queue of send stamps matches them. Thread: gRPC reactor threads (reads and
// writes may complete concurrently, hence mu_); never blocks.
class PublishStreamReactor : public grpc::ClientBidiReactor<v1::PublishRequest, v1::PublishResult> {
 public:
  PublishStreamReactor(v1::Fanout::Stub* stub, const PublishPlan& plan, size_t window, size_t first)
      : plan_(plan), window_(std::max<size_t>(1, window)), next_(first) {
    request_.mutable_payload()->assign(plan.payload_bytes, '.');
    stub->async()->PublishStream(&context_, this);
    StartRead(&result_);
    {
      absl::MutexLock lock(&mu_);
      MaybeWrite();
    }
    StartCall();
  }

  // Waits for the call to end and returns what it counted.
  PublishStats Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return stats_;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      writes_done_ = true;  // the stream is broken; OnDone() reports why
      return;
    }
    MaybeWrite();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // no more results; OnDone() follows
    int64_t now = MonoNs();
    {
      absl::MutexLock lock(&mu_);
      int64_t sent = stamps_.front();
      stamps_.pop_front();
      bool in_window = sent >= plan_.window_t0 && sent < plan_.window_t1;
      if (result_.code() == 0) {
        ++stats_.ok;
        stats_.subscribers_total += result_.subscribers();
        if (in_window) {
          ++stats_.ok_in_window;
          stats_.expected_in_window += result_.subscribers();
          stats_.rpc_latency.Record(static_cast<uint64_t>(now - sent));
        }
      } else {
        ++stats_.failed;
        if (stats_.first_error.empty()) stats_.first_error = absl::StrCat("PublishStream result: ", result_.error());
      }
      MaybeWrite();
    }
    StartRead(&result_);
  }

  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && stats_.first_error.empty()) {
      stats_.first_error = absl::StrCat("PublishStream: ", static_cast<int>(status.error_code()), " ",
                                        status.error_message());
    }
    stats_.failed += stamps_.size();  // requests that got no result
    done_ = true;
  }

 private:
  // Starts the next write if none is in flight and the window allows; ends
  // the writes once the plan's time is up.
  void MaybeWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || writes_done_) return;
    int64_t now = MonoNs();
    if (now >= plan_.end_ns) {
      writes_done_ = true;
      StartWritesDone();
      return;
    }
    if (stamps_.size() >= window_) return;  // a result will call again
    request_.set_topic(plan_.topics[next_++ % plan_.topics.size()]);
    std::string* payload = request_.mutable_payload();
    WriteStamp(payload->data() + payload->size(), static_cast<uint64_t>(now));
    stamps_.push_back(now);
    ++stats_.issued;
    writing_ = true;
    StartWrite(&request_);
  }

  const PublishPlan& plan_;
  const size_t window_;
  grpc::ClientContext context_;
  v1::PublishResult result_;  // only the read side touches it
  absl::Mutex mu_;
  v1::PublishRequest request_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_);
  std::deque<int64_t> stamps_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  PublishStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

PublishStats Publisher::RunStreams(const PublishPlan& plan, int streams, size_t window) {
  SleepUntilNs(plan.start_ns);
  std::vector<std::unique_ptr<PublishStreamReactor>> reactors;
  for (int i = 0; i < std::max(1, streams); ++i) {
    reactors.push_back(std::make_unique<PublishStreamReactor>(stubs_[i % stubs_.size()].get(), plan, window,
                                                              static_cast<size_t>(i)));
  }
  PublishStats total;
  for (auto& r : reactors) {
    PublishStats s = r->Wait();
    total.issued += s.issued;
    total.ok += s.ok;
    total.failed += s.failed;
    total.subscribers_total += s.subscribers_total;
    total.ok_in_window += s.ok_in_window;
    total.expected_in_window += s.expected_in_window;
    total.rpc_latency.Merge(s.rpc_latency);
    if (total.first_error.empty()) total.first_error = s.first_error;
  }
  return total;
}

absl::StatusOr<std::unique_ptr<Publisher>> Publisher::Create(const std::string& target, int channels,
                                                             absl::Duration ready_timeout) {
  std::unique_ptr<Publisher> publisher(new Publisher());
  auto deadline = std::chrono::system_clock::now() + absl::ToChronoNanoseconds(ready_timeout);
  for (int i = 0; i < std::max(1, channels); ++i) {
    grpc::ChannelArguments args;
    // A channel of its own per stub: separate HTTP/2 connections.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(deadline)) {
      return absl::UnavailableError(absl::StrCat("cannot connect to gRPC at ", target, " within ",
                                                 absl::FormatDuration(ready_timeout)));
    }
    publisher->stubs_.push_back(v1::Fanout::NewStub(channel));
  }
  return publisher;
}

PublishStats Publisher::Run(const PublishPlan& plan) {
  class Run run(plan, stubs_);
  return run.Execute();
}

absl::StatusOr<v1::GetStatsResponse> Publisher::GetStats() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetStatsRequest request;
  v1::GetStatsResponse response;
  grpc::Status status = stubs_[0]->GetStats(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("GetStats: ", status.error_message()));
  }
  return response;
}

absl::StatusOr<v1::PublishResponse> Publisher::PublishOne(const std::string& topic,
                                                          const std::string& payload) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::PublishRequest request;
  request.set_topic(topic);
  request.set_payload(payload);
  v1::PublishResponse response;
  grpc::Status status = stubs_[0]->Publish(&context, request, &response);
  if (!status.ok()) return absl::UnavailableError(absl::StrCat("Publish: ", status.error_message()));
  return response;
}

}  // namespace fanout
