#ifndef FANOUT_SERVICE_HEALTH_SERVICE_H_
#define FANOUT_SERVICE_HEALTH_SERVICE_H_

#include <map>
#include <memory>
#include <set>
#include <string>

#include "core/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace fanout {

// grpc.health.v1.Health, overall ("") and per service name. Ours rather than
// gRPC's default so that shutdown ends Watch streams (after they have seen
// NOT_SERVING) instead of holding the drain until its deadline, and so that
// its descriptor is the one reflection serves.
// Thread: safe from any thread; reactors run on gRPC's threads, never block.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Sets `service`'s status and tells its watchers.
  void SetStatus(const std::string& service, ServingStatus status);
  // Every service NOT_SERVING for good; open Watch streams get that status
  // and then end with OK.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse* resp) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req) override;

 private:
  class Watcher;
  ServingStatus StatusLocked(const std::string& service) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Remove(Watcher* w);

  mutable Mutex mu_;
  std::map<std::string, ServingStatus> statuses_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fanout

#endif  // FANOUT_SERVICE_HEALTH_SERVICE_H_
