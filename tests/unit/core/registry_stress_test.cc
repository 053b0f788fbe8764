// Concurrent subscribe/unsubscribe/publish against one hub, as gRPC threads
// and I/O threads do in fanoutd. Run under TSan and ASan in CI.
#include <atomic>
#include <thread>
#include <vector>

#include "core/hub.h"
#include "core/mutex.h"
#include "gtest/gtest.h"
#include "tests/unit/core/fake_subscriber.h"

namespace fanout {
namespace {

// Runs posted work on real threads, one queue per "I/O thread".
class ThreadDispatcher : public Dispatcher {
 public:
  explicit ThreadDispatcher(int n) : queues_(static_cast<size_t>(n)) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { Loop(i); });
  }
  ~ThreadDispatcher() override {
    stop_.store(true);
    for (auto& t : threads_) t.join();
  }
  int thread_count() const override { return static_cast<int>(queues_.size()); }
  void Post(int index, absl::AnyInvocable<void() &&> fn) override {
    Queue& q = queues_[static_cast<size_t>(index)];
    MutexLock lock(&q.mu);
    q.work.push_back(std::move(fn));
  }

 private:
  struct Queue {
    Mutex mu;
    std::vector<absl::AnyInvocable<void() &&>> work;
  };
  void Loop(int i) {
    Queue& q = queues_[static_cast<size_t>(i)];
    while (true) {
      std::vector<absl::AnyInvocable<void() &&>> batch;
      {
        MutexLock lock(&q.mu);
        batch.swap(q.work);
      }
      for (auto& fn : batch) std::move(fn)();
      if (batch.empty()) {
        if (stop_.load()) return;
        std::this_thread::yield();
      }
    }
  }
  std::vector<Queue> queues_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
};

// A subscriber whose delivery runs on its "I/O thread" only; counts.
class CountingSubscriber : public PassiveSubscriber {
 public:
  CountingSubscriber(uint64_t id, int io) : PassiveSubscriber(Identity{.id = id, .io_index = io}) {}
  void DeliverOnIoThread(const std::shared_ptr<const Message>& m) override {
    last_seq_ = m->seq();  // plain write: TSan flags it if two threads deliver
    count.fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> count{0};

 private:
  uint64_t last_seq_ = 0;
};

TEST(RegistryStress, ConcurrentSubscribeUnsubscribePublishBroadcastAndList) {
  constexpr int kIoThreads = 3;
  std::atomic<uint64_t> delivered_total{0};
  std::vector<std::shared_ptr<CountingSubscriber>> stable;
  {
    ThreadDispatcher dispatcher(kIoThreads);
    StandaloneHub standalone({.stripes = 8}, &dispatcher);
  Hub& hub = standalone.hub;
    // Stable subscribers must receive every publish to "stable".
    for (uint64_t id = 1; id <= 30; ++id) {
      stable.push_back(std::make_shared<CountingSubscriber>(id, static_cast<int>(id % kIoThreads)));
      ASSERT_TRUE(hub.Subscribe("stable", stable.back()).ok());
      ASSERT_TRUE(hub.AddConnection(stable.back()));
    }
    std::atomic<bool> stop{false};
    std::atomic<int> publishes{0};
    std::vector<std::thread> workers;
    // Churners subscribe and unsubscribe to a few hot topics.
    for (int w = 0; w < 3; ++w) {
      workers.emplace_back([&, w] {
        uint64_t next = 1000 + static_cast<uint64_t>(w) * 100000;
        while (!stop.load()) {
          auto s = std::make_shared<CountingSubscriber>(next++, static_cast<int>(next % kIoThreads));
          std::string topic = "hot" + std::to_string(next % 4);
          ASSERT_TRUE(hub.Subscribe(topic, s).ok());
          hub.AddConnection(s);
          hub.Unsubscribe(topic, s->id());
          hub.RemoveConnection(s->id());
        }
      });
    }
    // Publishers hit the hot topics and the stable one.
    for (int w = 0; w < 2; ++w) {
      workers.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
          ASSERT_TRUE(PublishNow(hub, "hot" + std::to_string(i % 4), "x").ok());
          ASSERT_TRUE(PublishNow(hub, "stable", "y").ok());
          publishes.fetch_add(1);
          if (i % 100 == 0) {
            ASSERT_TRUE(BroadcastNow(hub, "z").ok());
          }
        }
      });
    }
    // An operator lists while all this happens.
    workers.emplace_back([&] {
      while (!stop.load()) {
        bool more;
        hub.registry().ListTopics("", "", 100, &more);
        hub.registry().ListSubscribers("stable", 0, 10);
      }
    });
    while (publishes.load() < 4000) std::this_thread::yield();
    stop.store(true);
    for (auto& t : workers) t.join();
    // ~ThreadDispatcher drains each queue before its thread exits.
  }
  for (auto& s : stable) {
    delivered_total += s->count.load();
    // 4000 publishes to "stable" plus 2 x 20 broadcasts.
    EXPECT_EQ(s->count.load(), 4040u) << "subscriber " << s->id();
  }
  EXPECT_EQ(delivered_total.load(), 30u * 4040u);
}

}  // namespace
}  // namespace fanout
