#include "fs/writeback_starter.h"

#include <pthread.h>

#include <utility>

namespace dhfs {

WritebackStarter::WritebackStarter(std::function<void()> start, std::uint64_t every_bytes)
    : start_(std::move(start)), every_bytes_(every_bytes) {}

void WritebackStarter::wrote(std::uint64_t bytes) {
  const std::uint64_t before = pending_.fetch_add(bytes, std::memory_order_relaxed);
  // Only the writer that crosses the threshold wakes the thread; bytes
  // that others add meanwhile count towards the next start.
  if (before >= every_bytes_ || before + bytes < every_bytes_) return;
  pending_.fetch_sub(before + bytes, std::memory_order_relaxed);
  std::call_once(thread_once_, [this] { thread_ = std::jthread([this](std::stop_token stop) { run(stop); }); });
  {
    std::lock_guard lock(mu_);
    wanted_ = true;
  }
  cv_.notify_one();
}

void WritebackStarter::run(std::stop_token stop) {
  // Named, or it shows in top and perf under the name of the ring thread
  // that happened to make it.
  (void)pthread_setname_np(pthread_self(), "dhfs-writeback");
  std::unique_lock lock(mu_);
  while (cv_.wait(lock, stop, [this] { return wanted_; })) {
    // Wake-ups while the write-back is being started collapse into one
    // more start: it covers every page dirty by then.
    wanted_ = false;
    lock.unlock();
    start_();
    starts_.fetch_add(1, std::memory_order_release);
    lock.lock();
  }
}

}  // namespace dhfs
