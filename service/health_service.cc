#include "service/health_service.h"

namespace fanout {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream. Writes the latest status, one write in flight; a status
// that changes during a write is sent when the write completes.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  // Called with the service's lock held.
  void Update(ServingStatus status, bool finish) ABSL_EXCLUSIVE_LOCKS_REQUIRED(service_->mu_) {
    MutexLock lock(&mu_);
    next_ = status;
    has_next_ = true;
    finish_after_ = finish_after_ || finish;
    MaybeWriteLocked();
  }

  void OnWriteDone(bool ok) override {
    MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishOnce(grpc::Status::CANCELLED);
      return;
    }
    MaybeWriteLocked();
  }

  void OnCancel() override {
    MutexLock lock(&mu_);
    FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    // Taking mu_ first makes the construction (which took it too, in Update)
    // visibly happen before: gRPC's hand-over is invisible to TSan.
    { MutexLock lock(&mu_); }
    service_->Remove(this);
    delete this;
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (has_next_) {
      has_next_ = false;
      response_.set_status(next_);
      writing_ = true;
      StartWrite(&response_);
      return;
    }
    if (finish_after_) FinishOnce(grpc::Status::OK);
  }
  void FinishOnce(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  HealthService* const service_;
  const std::string name_;
  Mutex mu_;
  HealthCheckResponse response_ ABSL_GUARDED_BY(mu_);
  ServingStatus next_ ABSL_GUARDED_BY(mu_) = HealthCheckResponse::UNKNOWN;
  bool has_next_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_after_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;

 public:
  const std::string& name() const { return name_; }
};

HealthService::ServingStatus HealthService::StatusLocked(const std::string& service) const {
  auto it = statuses_.find(service);
  return it == statuses_.end() ? HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

void HealthService::SetStatus(const std::string& service, ServingStatus status) {
  MutexLock lock(&mu_);
  if (shutdown_) return;
  statuses_[service] = status;
  for (Watcher* w : watchers_) {
    if (w->name() == service) w->Update(status, false);
  }
}

void HealthService::Shutdown() {
  MutexLock lock(&mu_);
  if (shutdown_) return;
  shutdown_ = true;
  for (auto& [name, status] : statuses_) status = HealthCheckResponse::NOT_SERVING;
  for (Watcher* w : watchers_) w->Update(StatusLocked(w->name()), /*finish=*/true);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const HealthCheckRequest* req,
                                               HealthCheckResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  ServingStatus status;
  {
    MutexLock lock(&mu_);
    status = StatusLocked(req->service());
  }
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service; try \"\" or \"fanout.v1.Fanout\""));
  } else {
    resp->set_status(status);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* ctx, const HealthCheckRequest* req) {
  auto* w = new Watcher(this, req->service());
  MutexLock lock(&mu_);
  watchers_.insert(w);
  w->Update(StatusLocked(req->service()), shutdown_);
  return w;
}

void HealthService::Remove(Watcher* w) {
  MutexLock lock(&mu_);
  watchers_.erase(w);
}

}  // namespace fanout
