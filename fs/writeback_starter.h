// WritebackStarter: has the kernel start writing a medium's page cache to
// the device while small writes still come in, so that the next flush finds
// little left to write.
//
// Small writes go through the medium's page cache (DeviceIo::cached) and
// used to stay there until the flush before the next journal commit. An
// fsync after many of them then paid twice in a row: first the kernel's
// FUSE write-back brought the pages to the daemon (32 MiB of random 4 KiB
// writes: 7k WRITE requests, 60-70 ms on the bench VM), then the daemon's
// FSYNC wrote them all to the device (70-80 ms, as long as ext4's whole
// fsync). Started once per MiB written, the device works while the WRITEs
// still arrive: the FSYNC took 25-45 ms, and fio's random 4 KiB write jobs
// with end_fsync gained 15-25% (quick suite, 2026-11-28).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stop_token>
#include <thread>

namespace dhfs {

class WritebackStarter {
 public:
  // Once every `every_bytes` noted by wrote(), `start` runs on the
  // starter's own thread: it must only start the write-back
  // (sync_file_range with SYNC_FILE_RANGE_WRITE), yet even that may block
  // while the device's queue is full, which no writer should wait for.
  WritebackStarter(std::function<void()> start, std::uint64_t every_bytes);
  WritebackStarter(const WritebackStarter&) = delete;
  WritebackStarter& operator=(const WritebackStarter&) = delete;

  // `bytes` more were written through the page cache. Cheap: one atomic
  // add, and a wake-up once per `every_bytes`.
  void wrote(std::uint64_t bytes);

  // How many times `start` has returned (for tests and statistics).
  std::uint64_t starts() const { return starts_.load(std::memory_order_acquire); }

 private:
  void run(std::stop_token stop);

  const std::function<void()> start_;
  const std::uint64_t every_bytes_;
  std::atomic<std::uint64_t> pending_{0};  // bytes since the last wake-up
  std::atomic<std::uint64_t> starts_{0};
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool wanted_ = false;  // under mu_
  // Made at the first wake-up, not in the constructor: the device is
  // opened before dhfs goes to the background, and a thread does not
  // survive the fork.
  std::once_flag thread_once_;
  std::jthread thread_;  // last: it uses the members above
};

}  // namespace dhfs
