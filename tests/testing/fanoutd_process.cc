#include "tests/testing/fanoutd_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <boost/json/parse.hpp>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace fanout::testing {

absl::StatusOr<std::unique_ptr<FanoutdProcess>> FanoutdProcess::Start(std::vector<std::string> args) {
  std::unique_ptr<FanoutdProcess> p(new FanoutdProcess());
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  char tmpl[] = "/tmp/fanoutd-stderr-XXXXXX";
  int err_fd = mkstemp(tmpl);
  if (err_fd < 0) return absl::InternalError("mkstemp failed");
  p->stderr_path_ = tmpl;

  // FANOUTD_BINARY runs the tests against another build (an older commit, say).
  const char* binary = std::getenv("FANOUTD_BINARY");
  std::vector<std::string> argv = {binary && *binary ? binary : FANOUTD_PATH,
                                   "--grpc_listen=127.0.0.1:0",
                                   "--ws_listen=127.0.0.1:0", "--io_threads=2"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(out[1]);
  close(err_fd);
  p->pid_ = pid;
  p->stdout_fd_ = out[0];

  // The first stdout line names the bound ports once the node is ready.
  std::string line;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (line.find('\n') == std::string::npos) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left <= 0) return absl::DeadlineExceededError("fanoutd printed no address line");
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    if (poll(&pfd, 1, left) <= 0) continue;
    char buf[512];
    ssize_t n = read(p->stdout_fd_, buf, sizeof(buf));
    if (n <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("fanoutd exited before it was ready: ", p->Stderr()));
    }
    line.append(buf, static_cast<size_t>(n));
  }
  line = line.substr(0, line.find('\n'));
  boost::system::error_code ec;
  auto doc = boost::json::parse(line, ec);
  if (ec || !doc.is_object() || !doc.as_object().contains("grpc") ||
      !doc.as_object().contains("ws")) {
    return absl::InternalError(absl::StrCat("bad address line: ", line));
  }
  p->grpc_address_ = doc.at("grpc").as_string().c_str();
  p->ws_address_ = doc.at("ws").as_string().c_str();
  p->channel_ = grpc::CreateChannel(p->grpc_address_, grpc::InsecureChannelCredentials());

  // Ready means health SERVING, as an orchestrator would check it.
  auto health = grpc::health::v1::Health::NewStub(p->channel_);
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ctx.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    if (s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) break;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("health never SERVING: ", s.error_message()));
    }
  }
  return p;
}

FanoutdProcess::~FanoutdProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (!stderr_path_.empty()) unlink(stderr_path_.c_str());
}

absl::StatusOr<int> FanoutdProcess::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  kill(pid_, signal);
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("fanoutd did not exit");
    // Polling a child's exit: there is no portable blocking wait with timeout.
    absl::SleepFor(absl::Milliseconds(5));
  }
}

absl::StatusOr<size_t> FanoutdProcess::RssBytes() const {
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      size_t kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb * 1024;
    }
  }
  return absl::NotFoundError("no VmRSS");
}

std::string FanoutdProcess::Stderr() const {
  std::ifstream in(stderr_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace fanout::testing
