#ifndef FANOUT_BENCH_SERVER_PROCESS_H_
#define FANOUT_BENCH_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fanout {

// How to start the fanoutd under test.
struct ServerOptions {
  std::string binary;              // path to fanoutd
  int cpu = 0;                     // pinned like `taskset -c CPU`; < 0: not pinned
  int nice = 0;                    // scheduling niceness (negative: favoured)
  std::vector<std::string> args;   // flags after the listen addresses
  std::string log_path;            // its stderr goes here
  absl::Duration ready_timeout = absl::Seconds(20);
};

// ServerProcess is a running fanoutd child: started with port 0 on loopback,
// its addresses read from its first stdout line. It dies with the bench
// (PR_SET_PDEATHSIG) and is killed by the destructor if Stop() was not called.
// Thread: confined to the thread that created it.
class ServerProcess {
 public:
  // Starts the server and waits for its first stdout line.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerOptions& options);
  ~ServerProcess();

  pid_t pid() const { return pid_; }
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& ws_address() const { return ws_address_; }

  // Sends SIGTERM and waits up to `timeout` for exit status 0. On timeout the
  // server is killed and DEADLINE_EXCEEDED returned; another exit status is
  // INTERNAL.
  absl::Status Stop(absl::Duration timeout);

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string grpc_address_;
  std::string ws_address_;
};

// Kills the most recently started server with SIGKILL; async-signal-safe, for
// the bench's watchdog.
void KillServerForWatchdog();

}  // namespace fanout

#endif  // FANOUT_BENCH_SERVER_PROCESS_H_
