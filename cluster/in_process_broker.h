#ifndef FANOUT_CLUSTER_IN_PROCESS_BROKER_H_
#define FANOUT_CLUSTER_IN_PROCESS_BROKER_H_

#include <string>

#include "core/broker.h"

namespace fanout {

// The broker of a standalone node (the default): nothing leaves the process.
// A topic's sequence number lives with its local subscribers (the registry
// takes it and the snapshot under one stripe lock), so a publish is numbered
// and delivered in one step, and `done` runs inline.
// Thread: safe from any thread.
class InProcessBroker final : public Broker {
 public:
  void Attach(LocalDelivery* delivery, DeliveryBudget*) override { delivery_ = delivery; }
  void Publish(const OutgoingMessage& m, PublishDone done) override {
    std::move(done)(delivery_->DeliverNext(m));
  }
  void OnTopicActive(absl::string_view) override {}
  void OnTopicIdle(absl::string_view) override {}
  bool connected() const override { return true; }
  bool clustered() const override { return false; }
  void SetQueryHandler(QueryHandler handler) override { handler_ = std::move(handler); }
  // The only node answers at once.
  void Gather(absl::string_view verb, std::string request, absl::Duration,
              absl::AnyInvocable<void(Gathered) &&> done) override {
    if (!handler_) return std::move(done)(Gathered{});
    handler_(verb, request, [done = std::move(done)](std::string body) mutable {
      Gathered g;
      g.answers.push_back({"", std::move(body)});
      std::move(done)(std::move(g));
    });
  }
  void AppendMetrics(std::string*) const override {}

 private:
  LocalDelivery* delivery_ = nullptr;
  QueryHandler handler_;
};

}  // namespace fanout

#endif  // FANOUT_CLUSTER_IN_PROCESS_BROKER_H_
