#include "ws/io_threads.h"

#include <boost/asio/post.hpp>

namespace fanout {

IoThread::IoThread(int i, std::chrono::milliseconds tick)
    : index(i), wheel(std::make_unique<TimerWheel>(context, tick)), read_buffer(64 << 10) {}

IoThreadPool::IoThreadPool(int count, std::chrono::milliseconds tick) {
  for (int i = 0; i < std::max(1, count); ++i) threads_.push_back(std::make_unique<IoThread>(i, tick));
}

IoThreadPool::~IoThreadPool() { Stop(); }

void IoThreadPool::Post(int index, absl::AnyInvocable<void() &&> fn) {
  IoThread* t = threads_[static_cast<size_t>(index)].get();
  {
    MutexLock lock(&t->inbox_mu);
    t->inbox.push_back(std::move(fn));
    if (t->inbox_posted) return;
    t->inbox_posted = true;
  }
  boost::asio::post(t->context, [t] { RunInbox(t); });
}

void IoThreadPool::RunInbox(IoThread* t) {
  std::vector<absl::AnyInvocable<void() &&>> tasks;
  {
    MutexLock lock(&t->inbox_mu);
    tasks.swap(t->inbox);
    t->inbox_posted = false;
  }
  t->lone_task = tasks.size() == 1;
  for (auto& task : tasks) std::move(task)();
  t->lone_task = false;
  // Keep the list's capacity for the next burst unless it was huge.
  if (tasks.capacity() > 4096) return;
  tasks.clear();
  MutexLock lock(&t->inbox_mu);
  if (t->inbox.empty()) t->inbox.swap(tasks);
}

void IoThreadPool::Start() {
  for (auto& t : threads_) {
    guards_.push_back(boost::asio::make_work_guard(t->context));
    IoThread* raw = t.get();
    t->thread = std::thread([raw] { raw->context.run(); });
  }
}

void IoThreadPool::Stop() {
  guards_.clear();
  for (auto& t : threads_) t->context.stop();
  for (auto& t : threads_) {
    if (t->thread.joinable()) t->thread.join();
  }
}

}  // namespace fanout
