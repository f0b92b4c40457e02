// Uring: batched block I/O through io_uring, one ring per thread.
//
// FUSE serves requests from several worker threads. Giving each thread its
// own ring (thread_ring()) means no lock is ever shared across device I/O and
// a ring never needs to be handed between threads. Where io_uring cannot be
// set up (kernel.io_uring_disabled, seccomp, an old kernel) the thread falls
// back to plain pread/pwrite with the same semantics; run_io() picks the path.
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>

#include "fs/device.h"
#include "fs/unique_fd.h"

namespace dhfs {

class Uring {
 public:
  // Queue depth of the per-thread rings: enough to keep a device's queue
  // busy, small enough that a ring costs a few pages per thread.
  static constexpr unsigned kThreadDepth = 64;

  // Sets up a ring with room for `depth` requests in flight. On failure
  // returns nullptr and stores the negative errno in `err`.
  // A ring belongs to the thread that created it (it is set up with
  // IORING_SETUP_SINGLE_ISSUER where the kernel supports that).
  static std::unique_ptr<Uring> create(unsigned depth, int& err);

  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;
  Uring(Uring&&) = delete;
  Uring& operator=(Uring&&) = delete;

  // Performs every I/O of `ios` on `fd` and waits for all of them. Keeps up
  // to depth() requests in flight and refills as completions arrive, so a
  // batch may be larger than the ring. A short transfer is resubmitted for
  // its remainder; a transfer that makes no progress (end of file) fails
  // with -EIO. Once an I/O fails no new ones are started, but every request
  // already in flight is waited for, so the caller's buffers are free again
  // when run() returns. Returns 0 or the first negative errno seen, or the
  // error of io_uring_enter itself if the ring failed (see broken()).
  // Zero-length I/Os are no-ops.
  int run(int fd, std::span<const DeviceIo> ios);

  unsigned depth() const { return depth_; }

  // True once io_uring_enter itself failed in a way that cannot be retried;
  // the ring must not be used again (run_io() then drops it).
  bool broken() const { return broken_; }

 private:
  Uring() = default;

  struct io_uring ring_ {};
  unsigned depth_ = 0;
  bool broken_ = false;
};

// Hybrid polling of small batches. A thread that has submitted at most
// 64 KiB asks the kernel for the completions for up to kPollWindow before it
// sleeps: on a fast device they come in tens of microseconds, and a thread
// that slept pays a wake-up on top, which on a VM's idle vCPU costs a good
// part of a 4 KiB read (cold random reads at queue depth 1 on the bench VM:
// median 11.5k IOPS polling, 9.6k sleeping). One thread polls at a time, so
// that a deep queue of small reads does not turn into threads spinning
// against the device's own work.
//
// Polling stops while most recent polls ran out of the window (a disk, a
// network device), where it would only burn CPU; then every kProbeEvery-th
// small batch polls anyway, to notice when the device is fast again. The
// decision counts polls that came back in time, not how long batches took:
// an average of times let one slow request on the host switch polling off,
// and the batches that then slept took the wake-up on top of the device's
// time, which kept the average up and polling off on a device that answers
// well inside the window (bench VM, random 4 KiB reads: a quarter to half of
// them not polled, bench/results/2026-11-29-poll-in-time-ab).
class SmallBatchPolling {
 public:
  static constexpr std::uint64_t kSmallBytes = 64 << 10;
  static constexpr std::chrono::microseconds kPollWindow{150};
  static constexpr unsigned kProbeEvery = 8;

  // True if the caller may poll now; it must then call polled() and done().
  bool begin();
  void done();
  // Whether a poll got a completion within the window.
  void polled(bool in_time);

 private:
  // Share of recent polls that were in time, in 1/256ths: a moving average
  // that gives each new poll an eighth. Polling is on from half up.
  static constexpr int kAllInTime = 256;
  std::atomic<int> pollers_{0};
  std::atomic<int> in_time_share_{kAllInTime};
  std::atomic<unsigned> not_polled_{0};  // small batches while polling was off
};

// The calling thread's ring, created on first use with kThreadDepth entries,
// or nullptr if this thread uses pread/pwrite (io_uring unavailable, or
// disable_thread_uring() was called). The first time a ring cannot be set
// up, one line saying so goes to stderr.
Uring* thread_ring();

// Makes the calling thread use pread/pwrite from now on (drops its ring).
// Tests use this to cover the fallback path.
void disable_thread_uring();

// Drops the calling thread's ring; the next I/O sets up a fresh one. Call
// before fork(): a ring belongs to the thread that created it, and the
// child's thread is a different one.
void drop_thread_ring();

// The same contract as Uring::run(), with pread/pwrite, one I/O at a time.
int run_sync_io(int fd, std::span<const DeviceIo> ios);

// Runs the batch on the calling thread's ring, or synchronously without one.
int run_io(int fd, std::span<const DeviceIo> ios);

}  // namespace dhfs
