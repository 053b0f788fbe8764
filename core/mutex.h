#ifndef FANOUT_CORE_MUTEX_H_
#define FANOUT_CORE_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace fanout {

// A std::mutex with abseil's thread-safety annotations.
//
// Why not absl::Mutex: Debian's abseil is built without ThreadSanitizer, so
// TSan cannot see absl::Mutex's lock and unlock and reports every access it
// guards as a race. std::mutex goes through pthread, which TSan intercepts.
class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace fanout

#endif  // FANOUT_CORE_MUTEX_H_
