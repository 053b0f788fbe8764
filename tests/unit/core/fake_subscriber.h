#ifndef FANOUT_TESTS_UNIT_CORE_FAKE_SUBSCRIBER_H_
#define FANOUT_TESTS_UNIT_CORE_FAKE_SUBSCRIBER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cluster/in_process_broker.h"
#include "core/hub.h"
#include "core/subscriber.h"

namespace fanout {

// A hub with a standalone node's broker, which answers publishes inline.
struct StandaloneHub {
  StandaloneHub(const Hub::Options& options, Dispatcher* dispatcher)
      : hub(options, dispatcher, &broker) {}
  InProcessBroker broker;
  Hub hub;
};

// Publish and Broadcast, answered inline (the in-process broker does).
inline absl::StatusOr<PublishResult> PublishNow(Hub& hub, absl::string_view topic,
                                                absl::string_view payload) {
  absl::StatusOr<PublishResult> out = absl::InternalError("not answered inline");
  hub.Publish(topic, payload, {}, [&](absl::StatusOr<PublishResult> r) { out = std::move(r); });
  return out;
}
inline absl::StatusOr<PublishResult> BroadcastNow(Hub& hub, absl::string_view payload) {
  absl::StatusOr<PublishResult> out = absl::InternalError("not answered inline");
  hub.Broadcast(payload, Hub::Admission::kRefuseWhenOverloaded,
                [&](absl::StatusOr<PublishResult> r) { out = std::move(r); });
  return out;
}

// A subscriber whose control calls answer at once and do nothing: core
// tests exercise delivery, not connection control.
class PassiveSubscriber : public Subscriber {
 public:
  using Subscriber::Subscriber;
  void Close(uint16_t, std::string) override {}
  void Subscribe(std::string, absl::AnyInvocable<void(absl::Status) &&> done) override {
    std::move(done)(absl::OkStatus());
  }
  void Unsubscribe(std::string, absl::AnyInvocable<void(bool) &&> done) override {
    std::move(done)(false);
  }
  void Describe(absl::AnyInvocable<void(State) &&> done) override { std::move(done)(State{}); }
};

// Records what it is handed.
class FakeSubscriber : public PassiveSubscriber {
 public:
  FakeSubscriber(uint64_t id, int io_index, DeliveryFormat format = DeliveryFormat::kJson)
      : PassiveSubscriber(Identity{.id = id, .io_index = io_index, .format = format}) {}
  void DeliverOnIoThread(const std::shared_ptr<const Message>& m) override {
    received.push_back(std::string(m->Frame(identity().format)));
    count.fetch_add(1, std::memory_order_relaxed);
  }
  std::vector<std::string> received;
  std::atomic<int> count{0};
};

// Queues posted work per thread and runs it when asked, like I/O loops would.
class QueueDispatcher : public Dispatcher {
 public:
  explicit QueueDispatcher(int threads) : queues_(static_cast<size_t>(threads)) {}
  int thread_count() const override { return static_cast<int>(queues_.size()); }
  void Post(int index, absl::AnyInvocable<void() &&> fn) override {
    queues_[static_cast<size_t>(index)].push_back(std::move(fn));
  }
  size_t pending(int index) const { return queues_[static_cast<size_t>(index)].size(); }
  void RunAll() {
    for (auto& q : queues_) {
      for (auto& fn : q) std::move(fn)();
      q.clear();
    }
  }

 private:
  std::vector<std::vector<absl::AnyInvocable<void() &&>>> queues_;
};

}  // namespace fanout

#endif  // FANOUT_TESTS_UNIT_CORE_FAKE_SUBSCRIBER_H_
