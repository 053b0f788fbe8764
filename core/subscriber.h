#ifndef FANOUT_CORE_SUBSCRIBER_H_
#define FANOUT_CORE_SUBSCRIBER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/message.h"

namespace fanout {

// A connection that receives messages: the registry's view of a WebSocket
// session. Identity fields are immutable after construction.
// Thread: identity accessors are safe from any thread; DeliverOnIoThread only
// on the subscriber's own I/O thread (`io_index`).
class Subscriber {
 public:
  struct Identity {
    uint64_t id = 0;
    int io_index = 0;
    DeliveryFormat format = DeliveryFormat::kJson;
    std::string remote_address;
    absl::Time connected_at;
  };

  explicit Subscriber(Identity identity) : identity_(std::move(identity)) {}
  virtual ~Subscriber() = default;
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  const Identity& identity() const { return identity_; }
  uint64_t id() const { return identity_.id; }
  int io_index() const { return identity_.io_index; }

  // The authenticated user (a token's `sub`); empty for an anonymous
  // connection. Changes at most when the client authenticates after the
  // upgrade, through Hub::SetUser. Thread: safe from any thread.
  std::string user() const {
    auto u = user_.load(std::memory_order_acquire);
    return u ? *u : std::string();
  }
  void set_user(std::string user) {
    user_.store(user.empty() ? nullptr : std::make_shared<const std::string>(std::move(user)),
                std::memory_order_release);
  }

  // Queues `message` for the client. Must not block, publish, or touch the
  // registry (it runs inside a delivery loop).
  virtual void DeliverOnIoThread(const std::shared_ptr<const Message>& message) = 0;

  // -- Control by the API; each may be called from any thread. `done` runs
  // later on the subscriber's I/O thread, exactly once. --

  // Starts a close with `code` and `reason`.
  virtual void Close(uint16_t code, std::string reason) = 0;
  // Subscribes as if the client had asked; `done` gets OK (also when already
  // subscribed), RESOURCE_EXHAUSTED at the subscription limit, or
  // NOT_FOUND when the connection has closed.
  virtual void Subscribe(std::string topic, absl::AnyInvocable<void(absl::Status) &&> done) = 0;
  // Unsubscribes; `done` gets true when the connection was on the topic.
  virtual void Unsubscribe(std::string topic, absl::AnyInvocable<void(bool) &&> done) = 0;
  struct State {
    bool open = false;
    std::vector<std::string> topics;  // sorted
    uint64_t queued_bytes = 0;
    uint64_t messages_sent = 0;
  };
  // Reports the connection's state as its I/O thread sees it.
  virtual void Describe(absl::AnyInvocable<void(State) &&> done) = 0;

 private:
  const Identity identity_;
  std::atomic<std::shared_ptr<const std::string>> user_;
};

// An immutable view of a subscriber set, grouped by I/O thread so that one
// task per thread delivers a publish.
struct SubscriberSnapshot {
  std::vector<std::vector<std::shared_ptr<Subscriber>>> by_thread;
  size_t size = 0;
  size_t json_count = 0;
  size_t raw_count = 0;
};

// The members of one topic (or of "every connection"), ordered by id, with a
// sequence counter and a snapshot that is rebuilt lazily after a change.
// Thread: not thread-safe; its owner guards it with a lock.
class SubscriberSet {
 public:
  // Returns false when a subscriber with that id is already a member.
  bool Add(std::shared_ptr<Subscriber> subscriber);
  // Returns false when `id` is not a member.
  bool Remove(uint64_t id);
  bool empty() const { return members_.empty(); }
  size_t size() const { return members_.size(); }
  std::shared_ptr<Subscriber> Find(uint64_t id) const;

  // The next sequence number (the first is 1).
  uint64_t NextSeq() { return ++seq_; }

  // The current members grouped by thread; shared, never copied per publish.
  std::shared_ptr<const SubscriberSnapshot> Snapshot(int thread_count);

  // Appends up to `limit` members with id > `after_id` to `out`; returns true
  // when more members follow.
  bool Page(uint64_t after_id, size_t limit, std::vector<std::shared_ptr<Subscriber>>* out) const;

 private:
  absl::btree_map<uint64_t, std::shared_ptr<Subscriber>> members_;
  std::shared_ptr<const SubscriberSnapshot> snapshot_;  // null when stale
  uint64_t seq_ = 0;
};

}  // namespace fanout

#endif  // FANOUT_CORE_SUBSCRIBER_H_
