#ifndef FANOUT_SERVICE_RPC_UTIL_H_
#define FANOUT_SERVICE_RPC_UTIL_H_

#include <atomic>
#include <cstdint>

#include <google/protobuf/timestamp.pb.h>
#include <grpcpp/support/server_callback.h>

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/mutex.h"
#include "service/status_mapping.h"

namespace fanout {

inline void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  absl::Duration since_epoch = t - absl::UnixEpoch();
  int64_t seconds = absl::ToInt64Seconds(since_epoch);
  out->set_seconds(seconds);
  out->set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(since_epoch - absl::Seconds(seconds))));
}

// Finishes a unary call with `status` on its default reactor.
inline grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx,
                                        const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// A unary call answered by a callback that may run on another thread, even
// before the handler has returned. Two hand-overs go through gRPC's own
// locks, which ThreadSanitizer cannot see in Debian's uninstrumented gRPC:
// gRPC writes the response while it binds the call, on the handler's thread,
// ordered after Finish; and it destroys the response on whichever of its
// threads completes the call. This lock, taken by the callback around filling
// in the response and finishing, by the handler before it returns, and by the
// reactor's OnDone (which gRPC runs on the destroying thread, just before it
// frees the response), makes both orders visible.
// A third cannot be made visible: a callback that finishes after the handler
// returned but before gRPC bound the reactor leaves the Finish in the
// reactor's backlog, and gRPC serializes the response on the handler's thread
// ordered only by its own (uninstrumented) lock; tests/tsan_reports.py judges
// that report gRPC's.
class AsyncUnary {
 public:
  explicit AsyncUnary(grpc::CallbackServerContext*)
      : mu_(std::make_shared<Mutex>()), reactor_(new Reactor(mu_)) {}
  // What the callback runs: `fill(args...)` returns the call's status.
  template <typename Fill>
  auto Finisher(Fill fill) const {
    return [reactor = reactor_, mu = mu_, fill = std::move(fill)](auto&&... args) mutable {
      MutexLock lock(mu.get());
      absl::Status s = fill(std::forward<decltype(args)>(args)...);
      reactor->Finish(ToGrpcStatus(s));  // may be deleted from here on
    };
  }
  // For callbacks that fill in parts of the response one by one: held while
  // each writes its part.
  const std::shared_ptr<Mutex>& mu() const { return mu_; }
  grpc::ServerUnaryReactor* reactor() const { return reactor_; }
  // The handler's last step.
  grpc::ServerUnaryReactor* Return() const {
    { MutexLock lock(mu_.get()); }
    return reactor_;
  }

 private:
  class Reactor final : public grpc::ServerUnaryReactor {
   public:
    // gRPC hands the reactor from the handler's thread to the one running
    // OnDone; the release store (and OnDone's acquire load) makes what the
    // constructor wrote visible to TSan too.
    explicit Reactor(std::shared_ptr<Mutex> mu) : owner_(std::move(mu)) {
      mu_.store(owner_.get(), std::memory_order_release);
    }
    void OnDone() override {
      Mutex* mu = mu_.load(std::memory_order_acquire);
      { MutexLock lock(mu); }
      delete this;
    }

   private:
    const std::shared_ptr<Mutex> owner_;
    std::atomic<Mutex*> mu_{nullptr};
  };

  const std::shared_ptr<Mutex> mu_;
  Reactor* const reactor_;
};

}  // namespace fanout

#endif  // FANOUT_SERVICE_RPC_UTIL_H_
