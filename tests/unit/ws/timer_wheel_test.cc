#include "ws/timer_wheel.h"

#include <chrono>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "gtest/gtest.h"

namespace fanout {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

class Probe : public TimerWheel::Entry {
 public:
  explicit Probe(std::vector<int>* log, int id) : log_(log), id_(id) {}
  void OnDeadline() override {
    log_->push_back(id_);
    fired_at = Clock::now();
  }
  Clock::time_point fired_at;

 private:
  std::vector<int>* log_;
  int id_;
};

TEST(TimerWheel, FiresInDeadlineOrderNeverEarlyAndSkipsCancelled) {
  boost::asio::io_context ctx;
  TimerWheel wheel(ctx, milliseconds(5), /*slots=*/8);  // 40 ms per turn
  std::vector<int> log;
  Probe a(&log, 1), b(&log, 2), c(&log, 3), gone(&log, 4);
  Clock::time_point t0 = Clock::now();
  wheel.Schedule(&b, t0 + milliseconds(60));  // more than one turn away
  wheel.Schedule(&a, t0 + milliseconds(10));
  wheel.Schedule(&c, t0 + milliseconds(90));
  wheel.Schedule(&gone, t0 + milliseconds(20));
  wheel.Cancel(&gone);
  EXPECT_FALSE(gone.scheduled());
  ctx.run_for(milliseconds(300));
  EXPECT_EQ(log, (std::vector<int>{1, 2, 3}));
  EXPECT_GE(a.fired_at, t0 + milliseconds(10));
  EXPECT_GE(b.fired_at, t0 + milliseconds(60));
  EXPECT_GE(c.fired_at, t0 + milliseconds(90));
  EXPECT_FALSE(a.scheduled());
}

TEST(TimerWheel, RescheduleMovesAnEntryAndAnEntryMayOutliveTheWheel) {
  std::vector<int> log;
  Probe p(&log, 1);
  {
    boost::asio::io_context ctx;
    TimerWheel wheel(ctx, milliseconds(5));
    wheel.Schedule(&p, Clock::now() + milliseconds(10));
    wheel.Schedule(&p, Clock::now() + milliseconds(30));  // moved, not added twice
    ctx.run_for(milliseconds(100));
    EXPECT_EQ(log, std::vector<int>{1});
    wheel.Schedule(&p, Clock::now() + milliseconds(1000));
  }
  EXPECT_FALSE(p.scheduled()) << "the wheel's end unlinks what it held";
}

}  // namespace
}  // namespace fanout
