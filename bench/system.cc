#include "bench/system.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanout {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command, returning its stdout without the trailing newline.
std::string Capture(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void SleepUntilNs(int64_t deadline_ns) {
  timespec ts{.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000),
              .tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

absl::StatusOr<ProcSample> ReadProcess(pid_t pid) {
  ProcSample sample;
  sample.at_ns = MonoNs();
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  // The command name may hold spaces and parentheses: fields follow the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) {
    return absl::NotFoundError(absl::StrCat("cannot read /proc/", pid, "/stat"));
  }
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
  int64_t utime = 0, stime = 0;
  if (f.size() < 18 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime) ||
      !absl::SimpleAtoi(f[17], &sample.threads)) {
    return absl::InternalError(absl::StrCat("unexpected /proc/", pid, "/stat"));
  }
  sample.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    auto value = [&](absl::string_view key, int64_t* out) {
      if (!absl::ConsumePrefix(&line, key)) return;
      line = absl::StripAsciiWhitespace(line);
      absl::ConsumeSuffix(&line, "kB");
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line), out);
    };
    value("VmRSS:", &sample.rss_kib);
    value("VmHWM:", &sample.hwm_kib);
  }
  return sample;
}

CpuTimes ReadCpuTimes() {
  CpuTimes t;
  double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/stat"), '\n')) {
    if (!absl::ConsumePrefix(&line, "cpu") || line.empty() || !absl::ascii_isdigit(line[0])) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    double total = 0, idle = 0;
    for (size_t i = 1; i < f.size() && i <= 8; ++i) {
      int64_t v = 0;
      (void)absl::SimpleAtoi(f[i], &v);
      total += static_cast<double>(v);
      if (i == 4 || i == 5) idle += static_cast<double>(v);  // idle, iowait
    }
    t.busy.push_back((total - idle) / tick);
    t.total.push_back(total / tick);
  }
  return t;
}

double LoadAverage() {
  double load = 0;
  std::string text = ReadFile("/proc/loadavg");
  (void)absl::SimpleAtod(text.substr(0, text.find(' ')), &load);
  return load;
}

double SelfCpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

Machine DescribeMachine() {
  Machine m;
  m.nproc = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/cpuinfo"), '\n')) {
    if (absl::ConsumePrefix(&line, "model name")) {
      size_t colon = line.find(':');
      if (colon != absl::string_view::npos) {
        m.cpu_model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
      break;
    }
  }
  utsname u;
  if (uname(&u) == 0) m.kernel = absl::StrCat(u.sysname, " ", u.release, " ", u.machine);
  for (absl::string_view line : absl::StrSplit(ReadFile("/proc/meminfo"), '\n')) {
    if (absl::ConsumePrefix(&line, "MemTotal:")) {
      line = absl::StripAsciiWhitespace(line);
      absl::ConsumeSuffix(&line, "kB");
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &m.mem_total_kib);
    }
  }
  return m;
}

FileLimit RaiseFileLimit() {
  FileLimit limit;
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return limit;
  limit.soft_before = rl.rlim_cur;
  limit.hard = rl.rlim_max;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
    limit.soft = rl.rlim_max;
  } else {
    limit.soft = limit.soft_before;
  }
  return limit;
}

GitState DescribeGit(const std::string& dir) {
  GitState git;
  std::string quoted = absl::StrCat("'", dir, "'");
  git.commit = Capture(absl::StrCat("git -C ", quoted, " rev-parse --short HEAD 2>/dev/null"));
  if (!git.commit.empty()) {
    git.dirty = !Capture(absl::StrCat("git -C ", quoted,
                                      " status --porcelain --untracked-files=no 2>/dev/null"))
                     .empty();
  }
  return git;
}

std::string SelfDirectory() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

absl::Status PinToCpu(int cpu) {
  if (cpu < 0) return absl::OkStatus();
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot pin to CPU ", cpu, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace fanout
