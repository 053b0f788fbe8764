#include "ws/io_threads.h"

#include <boost/asio/post.hpp>

namespace fanout {

IoThreadPool::IoThreadPool(int count) {
  for (int i = 0; i < std::max(1, count); ++i) {
    auto t = std::make_unique<IoThread>();
    t->index = i;
    threads_.push_back(std::move(t));
  }
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

uint64_t IoThreadPool::Sum(std::atomic<uint64_t> IoThreadStats::*counter) const {
  uint64_t total = 0;
  for (const auto& t : threads_) total += (t->stats.*counter).load(std::memory_order_relaxed);
  return total;
}

}  // namespace fanout
