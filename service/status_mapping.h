#ifndef FANOUT_SERVICE_STATUS_MAPPING_H_
#define FANOUT_SERVICE_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace fanout {

// The one place absl::Status becomes a gRPC status. The codes share numbers;
// this keeps the message and makes the mapping explicit and testable.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace fanout

#endif  // FANOUT_SERVICE_STATUS_MAPPING_H_
