#include "core/subscriber.h"

namespace fanout {

bool SubscriberSet::Add(std::shared_ptr<Subscriber> subscriber) {
  uint64_t id = subscriber->id();
  bool inserted = members_.try_emplace(id, std::move(subscriber)).second;
  if (inserted) snapshot_.reset();
  return inserted;
}

bool SubscriberSet::Remove(uint64_t id) {
  bool erased = members_.erase(id) > 0;
  if (erased) snapshot_.reset();
  return erased;
}

std::shared_ptr<Subscriber> SubscriberSet::Find(uint64_t id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : it->second;
}

std::shared_ptr<const SubscriberSnapshot> SubscriberSet::Snapshot(int thread_count) {
  if (snapshot_) return snapshot_;
  auto snap = std::make_shared<SubscriberSnapshot>();
  snap->by_thread.resize(static_cast<size_t>(thread_count));
  for (const auto& [id, sub] : members_) {
    snap->by_thread[static_cast<size_t>(sub->io_index())].push_back(sub);
    if (sub->identity().format == DeliveryFormat::kRaw) {
      ++snap->raw_count;
    } else {
      ++snap->json_count;
    }
  }
  snap->size = members_.size();
  snapshot_ = std::move(snap);
  return snapshot_;
}

bool SubscriberSet::Page(uint64_t after_id, size_t limit,
                         std::vector<std::shared_ptr<Subscriber>>* out) const {
  auto it = members_.upper_bound(after_id);
  for (; it != members_.end() && limit > 0; ++it, --limit) out->push_back(it->second);
  return it != members_.end();
}

}  // namespace fanout
