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
  boost::asio::post(threads_[static_cast<size_t>(index)]->context,
                    [fn = std::move(fn)]() mutable { std::move(fn)(); });
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
