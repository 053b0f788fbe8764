#include "service/reflection_service.h"

#include <algorithm>
#include <set>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "core/mutex.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace fanout {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::FileDescriptorProto;

// The two versions have the same messages under different packages; the code
// below is written once for both.
struct V1 {
  using Service = grpc::reflection::v1::ServerReflection;
  using Request = grpc::reflection::v1::ServerReflectionRequest;
  using Response = grpc::reflection::v1::ServerReflectionResponse;
};
struct V1Alpha {
  using Service = grpc::reflection::v1alpha::ServerReflection;
  using Request = grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = grpc::reflection::v1alpha::ServerReflectionResponse;
};

std::string SerializeFile(const FileDescriptor* file) {
  FileDescriptorProto proto;
  file->CopyTo(&proto);
  // What gRPC's reflection leaves out, and why this service exists.
  file->CopyJsonNameTo(&proto);
  return proto.SerializeAsString();
}

// `file`, then the files it imports, each once per answer (as gRPC does:
// clients need not ask for every dependency themselves).
template <typename FileResponse>
void AddFileAndDependencies(const FileDescriptor* file, std::set<const FileDescriptor*>* seen,
                            FileResponse* out) {
  if (!seen->insert(file).second) return;
  out->add_file_descriptor_proto(SerializeFile(file));
  for (int i = 0; i < file->dependency_count(); ++i) {
    AddFileAndDependencies(file->dependency(i), seen, out);
  }
}

// One answer per request. A request that finds nothing is answered with an
// error_response and the stream goes on; the messages are gRPC's own.
template <typename Api>
void Answer(const std::vector<std::string>& services, const typename Api::Request& request,
            typename Api::Response* response) {
  using Request = typename Api::Request;
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  auto fail = [response](grpc::StatusCode code, const char* message) {
    response->mutable_error_response()->set_error_code(static_cast<int>(code));
    response->mutable_error_response()->set_error_message(message);
  };
  auto send_file = [response](const FileDescriptor* file) {
    std::set<const FileDescriptor*> seen;
    AddFileAndDependencies(file, &seen, response->mutable_file_descriptor_response());
  };
  switch (request.message_request_case()) {
    case Request::kFileByFilename: {
      const FileDescriptor* file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) return fail(grpc::StatusCode::NOT_FOUND, "File not found.");
      return send_file(file);
    }
    case Request::kFileContainingSymbol: {
      const FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) return fail(grpc::StatusCode::NOT_FOUND, "Symbol not found.");
      return send_file(file);
    }
    case Request::kFileContainingExtension: {
      const auto& ext = request.file_containing_extension();
      const Descriptor* type = pool->FindMessageTypeByName(ext.containing_type());
      if (type == nullptr) return fail(grpc::StatusCode::NOT_FOUND, "Type not found.");
      const FieldDescriptor* field = pool->FindExtensionByNumber(type, ext.extension_number());
      if (field == nullptr) return fail(grpc::StatusCode::NOT_FOUND, "Extension not found.");
      return send_file(field->file());
    }
    case Request::kAllExtensionNumbersOfType: {
      const Descriptor* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) return fail(grpc::StatusCode::NOT_FOUND, "Type not found.");
      std::vector<const FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      std::vector<int> numbers;
      for (const FieldDescriptor* e : extensions) numbers.push_back(e->number());
      std::sort(numbers.begin(), numbers.end());
      auto* out = response->mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (int n : numbers) out->add_extension_number(n);
      return;
    }
    case Request::kListServices: {
      auto* out = response->mutable_list_services_response();
      for (const std::string& name : services) out->add_service()->set_name(name);
      return;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      break;
  }
  fail(grpc::StatusCode::UNIMPLEMENTED, "The provided request is not supported.");
}

// One ServerReflectionInfo stream: read a request, write its answer, read the
// next. One operation in flight, so reactions never overlap, except for a
// shutdown, hence mu_. Owns itself until OnDone.
template <typename Api>
class ReflectionStream final
    : public grpc::ServerBidiReactor<typename Api::Request, typename Api::Response>,
      public StreamRegistry::Stream {
 public:
  ReflectionStream(const std::vector<std::string>* services, StreamRegistry* registry)
      : services_(services), registry_(registry) {
    {
      // Under mu_, which every reaction takes first: gRPC hands the reactor
      // to its other threads invisibly to TSan, and this makes the
      // construction visibly happen before them.
      MutexLock lock(&mu_);
      this->StartRead(&request_);
    }
    // Not under mu_: shutdown takes the registry's lock, then ours.
    if (!registry_->Add(this)) OnNodeShutdown();  // opened during shutdown
  }

  void OnNodeShutdown() override {
    MutexLock lock(&mu_);
    stopping_ = true;
    // With a write in flight, OnWriteDone finishes.
    if (!writing_) FinishOnceLocked(Stopping());
  }

  void OnReadDone(bool ok) override {
    MutexLock lock(&mu_);
    if (finished_) return;  // ended by shutdown while this read was pending
    if (!ok) {              // the client half-closed, or the call is cancelled
      FinishOnceLocked(grpc::Status::OK);
      return;
    }
    response_.Clear();
    Answer<Api>(*services_, request_, &response_);
    writing_ = true;
    this->StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishOnceLocked(grpc::Status::CANCELLED);
    } else if (stopping_) {
      FinishOnceLocked(Stopping());
    } else {
      this->StartRead(&request_);
    }
  }

  void OnDone() override {
    { MutexLock lock(&mu_); }
    registry_->Remove(this);
    delete this;
  }

 private:
  static grpc::Status Stopping() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down");
  }
  void FinishOnceLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    this->Finish(status);
  }

  const std::vector<std::string>* const services_;
  StreamRegistry* const registry_;
  Mutex mu_;
  typename Api::Request request_;    // owned by the pending read
  typename Api::Response response_;  // owned by the pending write
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename Api>
class VersionedReflection final : public Api::Service::CallbackService {
 public:
  VersionedReflection(const std::vector<std::string>* services, StreamRegistry* streams)
      : services_(services), streams_(streams) {}

  grpc::ServerBidiReactor<typename Api::Request, typename Api::Response>* ServerReflectionInfo(
      grpc::CallbackServerContext* /*ctx*/) override {
    return new ReflectionStream<Api>(services_, streams_);
  }

 private:
  const std::vector<std::string>* const services_;
  StreamRegistry* const streams_;
};

std::vector<std::string> WithReflection(std::vector<std::string> services) {
  services.push_back(V1::Service::service_full_name());
  services.push_back(V1Alpha::Service::service_full_name());
  return services;
}

}  // namespace

ReflectionService::ReflectionService(std::vector<std::string> services)
    : services_(WithReflection(std::move(services))),
      v1_(std::make_unique<VersionedReflection<V1>>(&services_, &streams_)),
      v1alpha_(std::make_unique<VersionedReflection<V1Alpha>>(&services_, &streams_)) {}

ReflectionService::~ReflectionService() = default;

void ReflectionService::RegisterWith(grpc::ServerBuilder* builder) {
  builder->RegisterService(v1_.get());
  builder->RegisterService(v1alpha_.get());
}

void ReflectionService::Shutdown() { streams_.ShutdownAll(); }

}  // namespace fanout
