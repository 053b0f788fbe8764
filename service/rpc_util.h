#ifndef FANOUT_SERVICE_RPC_UTIL_H_
#define FANOUT_SERVICE_RPC_UTIL_H_

#include <cstdint>

#include <google/protobuf/timestamp.pb.h>
#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
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

}  // namespace fanout

#endif  // FANOUT_SERVICE_RPC_UTIL_H_
