#ifndef FANOUT_BENCH_SYSTEM_H_
#define FANOUT_BENCH_SYSTEM_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fanout {

// CLOCK_MONOTONIC in nanoseconds: the clock of payload stamps, comparable
// between processes on one machine.
int64_t MonoNs();

// Sleeps until MonoNs() >= `deadline_ns`.
void SleepUntilNs(int64_t deadline_ns);

// What /proc says about one process.
struct ProcSample {
  int64_t at_ns = 0;          // MonoNs() when read
  double cpu_seconds = 0;     // utime + stime over all threads
  int64_t rss_kib = 0;        // VmRSS
  int64_t hwm_kib = 0;        // VmHWM, the peak RSS
  int64_t threads = 0;
};

// Reads /proc/PID/stat and /proc/PID/status.
absl::StatusOr<ProcSample> ReadProcess(pid_t pid);

// Busy and total time of each CPU from /proc/stat, in seconds (busy: all
// but idle and iowait). Tells how much else ran on the benchmark's cores.
struct CpuTimes {
  std::vector<double> busy;
  std::vector<double> total;
};
CpuTimes ReadCpuTimes();

// The 1-minute load average.
double LoadAverage();

// CPU seconds (user + system) of this process, all threads.
double SelfCpuSeconds();

// The machine a result was measured on.
struct Machine {
  int nproc = 0;
  std::string cpu_model;
  std::string kernel;
  int64_t mem_total_kib = 0;
};
Machine DescribeMachine();

// The open-files limit, raised to the hard limit.
struct FileLimit {
  uint64_t soft_before = 0;
  uint64_t soft = 0;
  uint64_t hard = 0;
};
FileLimit RaiseFileLimit();

// `git rev-parse --short HEAD` in `dir` ("" when git or the repository is
// missing) and whether the working tree differs from it.
struct GitState {
  std::string commit;
  bool dirty = false;
};
GitState DescribeGit(const std::string& dir);

// The directory holding this executable.
std::string SelfDirectory();

// Pins the calling thread (and the threads it creates later) to `cpu`.
// cpu < 0 leaves the affinity alone.
absl::Status PinToCpu(int cpu);

}  // namespace fanout

#endif  // FANOUT_BENCH_SYSTEM_H_
