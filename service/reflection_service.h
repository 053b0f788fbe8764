#ifndef FANOUT_SERVICE_REFLECTION_SERVICE_H_
#define FANOUT_SERVICE_REFLECTION_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_builder.h>

#include "service/fanout_service.h"

namespace fanout {

// gRPC server reflection, grpc.reflection.v1 and its pre-release twin v1alpha
// (which older clients such as grpcurl 1.8.0 ask for), answered from the
// generated descriptor pool. Ours rather than gRPC's plugin: gRPC C++ copies
// descriptors without their json_name, and clients that read it (grpcurl 1.8)
// then print proto field names ("node_id") instead of the proto3 JSON names
// ("nodeId") that servers in other languages give them. Every file served here
// carries json_name for every field; a file comes with its transitive
// dependencies, as gRPC's does.
// Thread: safe from any thread; each stream is a reactor on gRPC's threads
// with one operation in flight, and never blocks.
class ReflectionService {
 public:
  // `services`: the full names of the server's other services, in the order
  // list_services answers them; the two reflection services follow.
  explicit ReflectionService(std::vector<std::string> services);
  ~ReflectionService();

  // Registers both versions. Once, before the builder starts the server;
  // this object must outlive the server.
  void RegisterWith(grpc::ServerBuilder* builder);

  // Ends every open reflection stream with UNAVAILABLE (once its answer in
  // flight, if any, is written), so that an idle client does not hold up the
  // server's shutdown.
  void Shutdown();

 private:
  const std::vector<std::string> services_;
  StreamRegistry streams_;
  std::unique_ptr<grpc::Service> v1_;
  std::unique_ptr<grpc::Service> v1alpha_;
};

}  // namespace fanout

#endif  // FANOUT_SERVICE_REFLECTION_SERVICE_H_
