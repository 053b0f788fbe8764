#include "bench/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/system.h"

namespace fanout {
namespace {

std::atomic<pid_t> g_server_pid{-1};

// The value of "key":"value" in the server's one-line JSON.
std::string JsonField(const std::string& line, const std::string& key) {
  std::string needle = absl::StrCat("\"", key, "\":\"");
  size_t at = line.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  size_t end = line.find('"', at);
  return end == std::string::npos ? "" : line.substr(at, end - at);
}

}  // namespace

void KillServerForWatchdog() {
  pid_t pid = g_server_pid.load();
  if (pid > 0) kill(pid, SIGKILL);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const ServerOptions& options) {
  if (access(options.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("fanoutd not found at '", options.binary,
                                            "': build it or pass --fanoutd=PATH"));
  }
  std::vector<std::string> argv_storage = {options.binary, "--grpc_listen=127.0.0.1:0",
                                           "--ws_listen=127.0.0.1:0"};
  argv_storage.insert(argv_storage.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  int log_fd = open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", options.log_path, ": ", std::strerror(errno)));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (options.cpu >= 0) CPU_SET(options.cpu, &set);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    // What `taskset -c CPU fanoutd ...` does: pin, then exec.
    if (options.cpu >= 0 && sched_setaffinity(0, sizeof(set), &set) != 0) _exit(126);
    if (options.nice != 0 && setpriority(PRIO_PROCESS, 0, options.nice) != 0) _exit(125);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(log_fd);
  g_server_pid.store(pid);
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->pid_ = pid;
  server->stdout_fd_ = out[0];

  // The first stdout line is {"grpc":"HOST:PORT","ws":"HOST:PORT"}.
  std::string line;
  int64_t deadline = MonoNs() + absl::ToInt64Nanoseconds(options.ready_timeout);
  while (line.find('\n') == std::string::npos) {
    int64_t left_ms = (deadline - MonoNs()) / 1'000'000;
    if (left_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("fanoutd printed no address line within ",
                                                      absl::FormatDuration(options.ready_timeout),
                                                      "; see ", options.log_path));
    }
    pollfd p{.fd = out[0], .events = POLLIN, .revents = 0};
    if (poll(&p, 1, static_cast<int>(left_ms)) <= 0) continue;
    char buf[512];
    ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat("fanoutd exited before it was ready; see ",
                                                 options.log_path, " (",
                                                 absl::StrJoin(argv_storage, " "), ")"));
    }
    line.append(buf, static_cast<size_t>(n));
  }
  server->grpc_address_ = JsonField(line, "grpc");
  server->ws_address_ = JsonField(line, "ws");
  if (server->grpc_address_.empty() || server->ws_address_.empty()) {
    return absl::InternalError(absl::StrCat("unexpected first line from fanoutd: ", line));
  }
  return server;
}

absl::Status ServerProcess::Stop(absl::Duration timeout) {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGTERM);
  int64_t deadline = MonoNs() + absl::ToInt64Nanoseconds(timeout);
  int status = 0;
  absl::Status result;
  for (;;) {
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        result = absl::InternalError(
            WIFEXITED(status) ? absl::StrCat("fanoutd exited with status ", WEXITSTATUS(status))
                              : absl::StrCat("fanoutd died of signal ", WTERMSIG(status)));
      }
      break;
    }
    if (MonoNs() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      result = absl::DeadlineExceededError(
          absl::StrCat("fanoutd did not exit within ", absl::FormatDuration(timeout), " of SIGTERM"));
      break;
    }
    usleep(10'000);
  }
  g_server_pid.store(-1);
  pid_ = -1;
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
  return result;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
    g_server_pid.store(-1);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

}  // namespace fanout
