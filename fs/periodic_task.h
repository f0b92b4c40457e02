// PeriodicTask: a thread of its own that runs a task every period until it
// is stopped; the destructor stops it and waits for a run in progress.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace dhfs {

class PeriodicTask {
 public:
  PeriodicTask(std::chrono::milliseconds period, std::function<void()> task)
      : period_(period), task_(std::move(task)), thread_([this] { loop(); }) {}
  ~PeriodicTask() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

 private:
  void loop() {
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, period_, [this] { return stop_; })) {
      lk.unlock();
      task_();
      lk.lock();
    }
  }

  const std::chrono::milliseconds period_;
  const std::function<void()> task_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: it runs loop(), which uses everything above
};

}  // namespace dhfs
