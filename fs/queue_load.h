// QueueLoad: how busy one CPU queue of FUSE over io_uring is, and from that
// whether the threads serving it should stay on the queue's CPU.
//
// Why: the kernel queues a request on the CPU of the process that made it.
// Served by a thread on that same CPU, the request and its reply are a
// switch between two tasks of one CPU; served from the other CPU, each of
// them wakes a CPU, which on a VM whose idle vCPUs halt at once (the bench
// VM's default: guest halt polling off) costs tens of microseconds: one
// getxattr took 19-27 us against 9-10 us on the queue's CPU, and the issue 4
// image set extracted in 8.1 s against 4.3 s (2026-11-28). But a process that
// keeps many requests in flight (fio at queue depth 32, the read-ahead of a
// large file) puts all of them on its own CPU's queue: held to that CPU, its
// threads leave the others idle (mixed 4 KiB I/O at QD32: 9.6k IOPS against
// 21k with the threads anywhere; bench/results/2026-11-28-ring-pin-ab).
// So a queue's threads stay on its CPU while it serves requests one or two at
// a time (one process waiting for each reply, a release or a write-back
// beside it), and may run anywhere from the moment it serves `busy` at once
// until `hold` has passed without that.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace dhfs {

class QueueLoad {
 public:
  using Clock = std::chrono::steady_clock;

  // `busy`: requests served at once that spread the queue's threads (0:
  // never, they stay on its CPU); `hold`: how long they stay spread after
  // the last time that many were.
  QueueLoad(unsigned busy, std::chrono::nanoseconds hold) : busy_threshold_(busy), hold_(hold) {}

  // A thread of the queue starts serving a request at `now`.
  void begin(Clock::time_point now) {
    const unsigned serving = serving_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (busy_threshold_ != 0 && serving >= busy_threshold_)
      spread_until_ns_.store(ns(now) + hold_.count(), std::memory_order_relaxed);
  }
  // It has replied.
  void end() { serving_.fetch_sub(1, std::memory_order_relaxed); }

  // Whether the queue's threads may run on any CPU at `now`.
  bool spread(Clock::time_point now) const {
    return ns(now) < spread_until_ns_.load(std::memory_order_relaxed);
  }

 private:
  static std::int64_t ns(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  const unsigned busy_threshold_;
  const std::chrono::nanoseconds hold_;
  std::atomic<unsigned> serving_{0};
  std::atomic<std::int64_t> spread_until_ns_{std::numeric_limits<std::int64_t>::min()};
};

}  // namespace dhfs
