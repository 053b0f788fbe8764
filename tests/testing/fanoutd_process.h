#ifndef FANOUT_TESTS_TESTING_FANOUTD_PROCESS_H_
#define FANOUT_TESTS_TESTING_FANOUTD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fanout::testing {

// The real fanoutd binary, started on free ports (port 0) and stopped with a
// signal. Start() returns once the first stdout line named the ports and gRPC
// health answers SERVING.
// Thread: one test thread.
class FanoutdProcess {
 public:
  // `args` are extra flags. The binary is FANOUTD_PATH (set by CMake), or
  // the environment's FANOUTD_BINARY when set.
  static absl::StatusOr<std::unique_ptr<FanoutdProcess>> Start(std::vector<std::string> args = {});
  ~FanoutdProcess();

  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& ws_address() const { return ws_address_; }
  pid_t pid() const { return pid_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  // Sends `signal` and waits up to `timeout` for the exit; returns the exit
  // status (the code, or 128 + signal number when killed).
  absl::StatusOr<int> Stop(int signal, absl::Duration timeout = absl::Seconds(20));
  // Resident set size in bytes, from /proc/PID/status.
  absl::StatusOr<size_t> RssBytes() const;
  // What the process wrote to stderr so far.
  std::string Stderr() const;

 private:
  FanoutdProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::string grpc_address_;
  std::string ws_address_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_FANOUTD_PROCESS_H_
