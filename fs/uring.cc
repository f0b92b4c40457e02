#include "fs/uring.h"

#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "fs/log.h"

namespace dhfs {
namespace {

// EINTR and EAGAIN (and EBUSY from io_uring_enter) mean "try again", but a
// descriptor that keeps answering EAGAIN (say, one opened O_NONBLOCK) must
// not spin forever, so each I/O gets a bounded number of retries.
constexpr std::uint32_t kMaxRetries = 1000;

bool retryable_enter_error(int err) { return err == -EINTR || err == -EAGAIN || err == -EBUSY; }
bool retryable_io_error(int err) { return err == -EINTR || err == -EAGAIN; }

// Bookkeeping for one batch: how much of each I/O is done, which I/Os still
// have to be (re)submitted, and the first error.
class Batch {
 public:
  explicit Batch(std::span<const DeviceIo> ios) : ios_(ios), progress_(ios.size()) {
    todo_.reserve(ios.size());
    // todo_ is consumed from the back; pushing in reverse issues the I/Os in
    // batch order, which keeps sequential batches sequential on the device.
    for (std::size_t i = ios.size(); i-- > 0;) {
      if (ios[i].len > 0) todo_.push_back(i);
    }
  }

  // True while something is left to submit and nothing has failed yet.
  bool has_pending() const { return first_error_ == 0 && !todo_.empty(); }

  std::uint64_t bytes() const {
    std::uint64_t n = 0;
    for (const DeviceIo& io : ios_) n += io.len;
    return n;
  }

  // Fills `sqe` with the next pending I/O, or with what is left of it after
  // a short transfer.
  void prepare(io_uring_sqe* sqe, int fd) {
    const std::size_t i = todo_.back();
    todo_.pop_back();
    const DeviceIo& io = ios_[i];
    const std::uint32_t done = progress_[i].done;
    std::byte* buf = static_cast<std::byte*>(io.buf) + done;
    if (io.op == DeviceIo::Op::Read) {
      io_uring_prep_read(sqe, fd, buf, io.len - done, io.offset + done);
    } else {
      io_uring_prep_write(sqe, fd, buf, io.len - done, io.offset + done);
    }
    io_uring_sqe_set_data64(sqe, i);
  }

  // Accounts for the completion of I/O `i` with result `res` (bytes moved or
  // a negative errno).
  void complete(std::size_t i, int res) {
    Progress& p = progress_[i];
    if (res < 0) {
      if (retryable_io_error(res) && ++p.retries < kMaxRetries) {
        todo_.push_back(i);
      } else {
        fail(res);
      }
    } else if (res == 0) {
      fail(-EIO);  // no progress: end of file or device, cannot complete
    } else {
      p.done += static_cast<std::uint32_t>(res);
      if (p.done < ios_[i].len) todo_.push_back(i);  // short transfer: do the rest
    }
  }

  int error() const { return first_error_; }

 private:
  void fail(int err) {
    if (first_error_ == 0) first_error_ = err;
  }

  struct Progress {
    std::uint32_t done = 0;
    std::uint32_t retries = 0;
  };
  std::span<const DeviceIo> ios_;
  std::vector<Progress> progress_;
  std::vector<std::size_t> todo_;
  int first_error_ = 0;
};

// Queues pending I/Os of the batch until `room` requests are outstanding or
// the submission queue is full. Returns how many were queued.
unsigned fill(io_uring& ring, Batch& batch, int fd, unsigned room) {
  unsigned queued = 0;
  while (queued < room && batch.has_pending()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) break;
    batch.prepare(sqe, fd);
    ++queued;
  }
  return queued;
}

// Hands every completion that is ready to the batch. Returns how many.
unsigned reap(io_uring& ring, Batch& batch) {
  unsigned reaped = 0;
  io_uring_cqe* cqe = nullptr;
  while (io_uring_peek_cqe(&ring, &cqe) == 0) {
    batch.complete(static_cast<std::size_t>(cqe->user_data), cqe->res);
    io_uring_cqe_seen(&ring, cqe);
    ++reaped;
  }
  return reaped;
}

// Waits for `count` completions and discards them. Used when the ring has
// failed: requests the kernel already took may still write into the caller's
// buffers, so they must finish before run() returns.
void drain(io_uring& ring, unsigned count) {
  while (count > 0) {
    io_uring_cqe* cqe = nullptr;
    const int r = io_uring_wait_cqe(&ring, &cqe);
    if (r == 0) {
      io_uring_cqe_seen(&ring, cqe);
      --count;
    } else if (!retryable_io_error(r)) {
      return;  // nothing more can be learnt from this ring
    }
  }
}

// Says once per process, in the log, that I/O is going through pread/pwrite.
void report_fallback(const char* what, int err) {
  static std::once_flag once;
  std::call_once(once, [&] {
    const std::string reason = std::generic_category().message(-err);
    log::warning("{} failed ({}); using pread/pwrite instead of io_uring", what, reason);
  });
}

// The process's polling policy: one poller at a time across all threads.
SmallBatchPolling g_polling;

// Asks for completions until one is there or the window has passed, giving
// the CPU to anyone else who wants it in between. Returns how many it reaped.
unsigned poll_for_completions(io_uring& ring, Batch& batch) {
  const auto until = std::chrono::steady_clock::now() + SmallBatchPolling::kPollWindow;
  unsigned got = 0;
  while ((got = reap(ring, batch)) == 0 && std::chrono::steady_clock::now() < until) {
    (void)io_uring_get_events(&ring);  // completions arrive as task work, run on entering the kernel
    sched_yield();
  }
  return got;
}

// The calling thread's ring. thread_local so that each FUSE worker thread has
// its own, and the ring is torn down when its thread exits.
struct ThreadRing {
  std::unique_ptr<Uring> ring;
  bool set_up = false;  // creation was attempted (or the thread opted out)
};
thread_local ThreadRing t_ring;

}  // namespace

// ---- SmallBatchPolling -----------------------------------------------------

bool SmallBatchPolling::begin() {
  if (in_time_share_.load(std::memory_order_relaxed) < kAllInTime / 2 &&
      not_polled_.fetch_add(1, std::memory_order_relaxed) % kProbeEvery != kProbeEvery - 1)
    return false;
  int idle = 0;
  return pollers_.compare_exchange_strong(idle, 1, std::memory_order_acquire);
}

void SmallBatchPolling::done() { pollers_.store(0, std::memory_order_release); }

void SmallBatchPolling::polled(bool in_time) {
  // Only the one poller updates it: a plain load and store suffice.
  const int was = in_time_share_.load(std::memory_order_relaxed);
  in_time_share_.store(was + ((in_time ? kAllInTime : 0) - was) / 8, std::memory_order_relaxed);
}

std::unique_ptr<Uring> Uring::create(unsigned depth, int& err) {
  std::unique_ptr<Uring> u(new Uring());
  // The ring is only ever used by the thread that made it: SINGLE_ISSUER lets
  // the kernel skip submission-side locking, and COOP_TASKRUN spares the
  // thread an interrupt per completion (it collects them when it waits
  // anyway). Kernels before 6.0 reject these flags with EINVAL.
  int r = io_uring_queue_init(depth, &u->ring_,
                              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN);
  if (r == -EINVAL) r = io_uring_queue_init(depth, &u->ring_, 0);
  if (r < 0) {
    err = r;
    return nullptr;
  }
  u->depth_ = u->ring_.sq.ring_entries;
  return u;
}

Uring::~Uring() {
  if (depth_ != 0) io_uring_queue_exit(&ring_);  // depth_ is 0 until init succeeded
}

int Uring::run(int fd, std::span<const DeviceIo> ios) {
  if (broken_) return -EIO;
  Batch batch(ios);
  // Requests queued in the ring whose completion has not been reaped. It is
  // kept at or below depth_: the completion queue holds twice that, so it
  // can never overflow.
  unsigned inflight = 0;
  const bool small = batch.bytes() <= SmallBatchPolling::kSmallBytes;
  while (inflight > 0 || batch.has_pending()) {
    inflight += fill(ring_, batch, fd, depth_ - inflight);
    if (small && g_polling.begin()) {
      const int submitted = io_uring_submit(&ring_);
      const unsigned got = submitted < 0 ? 0 : poll_for_completions(ring_, batch);
      if (submitted >= 0) g_polling.polled(got > 0);
      g_polling.done();
      if (got > 0) {
        inflight -= got;
        continue;
      }
    }
    // One system call both submits and waits; inflight > 0 here, so waiting
    // for one completion always terminates.
    const int r = io_uring_submit_and_wait(&ring_, 1);
    if (r < 0 && !retryable_enter_error(r)) {
      // Requests still in the submission queue never reached the kernel and
      // die with the ring; wait for those that did.
      broken_ = true;
      drain(ring_, inflight - io_uring_sq_ready(&ring_));
      return r;
    }
    inflight -= reap(ring_, batch);
  }
  return batch.error();
}

Uring* thread_ring() {
  ThreadRing& t = t_ring;
  if (!t.set_up) {
    t.set_up = true;
    int err = 0;
    t.ring = Uring::create(Uring::kThreadDepth, err);
    if (!t.ring) report_fallback("io_uring_queue_init", err);
  }
  return t.ring.get();
}

void drop_thread_ring() {
  t_ring.set_up = false;
  t_ring.ring.reset();
}

void disable_thread_uring() {
  t_ring.set_up = true;
  t_ring.ring.reset();
}

namespace {

int sync_one(int fd, const DeviceIo& io) {
  std::byte* buf = static_cast<std::byte*>(io.buf);
  std::uint32_t done = 0;
  std::uint32_t retries = 0;
  while (done < io.len) {
    const off_t off = static_cast<off_t>(io.offset + done);
    const ssize_t n = io.op == DeviceIo::Op::Read ? ::pread(fd, buf + done, io.len - done, off)
                                                  : ::pwrite(fd, buf + done, io.len - done, off);
    if (n < 0) {
      const int err = -errno;
      if (retryable_io_error(err) && ++retries < kMaxRetries) continue;
      return err;
    }
    if (n == 0) return -EIO;  // no progress: end of file or device
    done += static_cast<std::uint32_t>(n);
  }
  return 0;
}

}  // namespace

int run_sync_io(int fd, std::span<const DeviceIo> ios) {
  for (const DeviceIo& io : ios) {
    if (const int r = sync_one(fd, io); r < 0) return r;
  }
  return 0;
}

int run_io(int fd, std::span<const DeviceIo> ios) {
  Uring* ring = thread_ring();
  if (ring == nullptr) return run_sync_io(fd, ios);
  const int r = ring->run(fd, ios);
  if (ring->broken()) {
    // Keep serving this thread, without the ring that just failed.
    report_fallback("io_uring_enter", r);
    t_ring.ring.reset();
  }
  return r;
}

}  // namespace dhfs
