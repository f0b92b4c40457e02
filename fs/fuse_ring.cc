#include "fs/fuse_ring.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <fmt/format.h>

#include "fs/log.h"
#include "fs/ring_entry.h"

namespace dhfs {

namespace {

// The entry the calling thread is serving, for take_reply().
thread_local RingEntry* t_serving = nullptr;
// What after_reply() left to run once that entry's reply is committed.
thread_local std::vector<std::function<void()>> t_after_reply;

// QueueLoad's settings: three requests in service at once let a queue's
// threads leave its CPU for 20 ms. One process that waits for each reply
// keeps at most two (its request, and a release or write-back beside it).
constexpr unsigned kSpreadBusy = 3;
constexpr std::chrono::milliseconds kSpreadHold{20};

// Holds the calling thread to `cpu`, or lets it run on `any`; false if the
// kernel refused (the thread then stays where it may run).
bool run_on(const cpu_set_t* any, int cpu) {
  cpu_set_t one;
  if (cpu >= 0) {
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
  }
  return ::pthread_setaffinity_np(::pthread_self(), sizeof(cpu_set_t), cpu >= 0 ? &one : any) == 0;
}

constexpr std::uint64_t kEntryTag = 1;
constexpr std::uint64_t kStopTag = 2;

// Owns an io_uring with 128-byte SQEs (a FUSE command does not fit in 64).
class CmdRing {
 public:
  // Deferred task running: the kernel completes a FUSE command with task
  // work, which then runs when this thread waits in io_uring_enter, not by
  // interrupting it. Older kernels lack it; the ring then works without.
  int init() {
    io_uring_params p{};
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int rc = io_uring_queue_init_params(4, &ring_, &p);
    if (rc < 0) {
      p = {};
      p.flags = IORING_SETUP_SQE128;
      rc = io_uring_queue_init_params(4, &ring_, &p);
    }
    ok_ = rc == 0;
    return rc;
  }
  ~CmdRing() {
    if (ok_) io_uring_queue_exit(&ring_);
  }
  CmdRing() = default;
  CmdRing(const CmdRing&) = delete;
  CmdRing& operator=(const CmdRing&) = delete;

  // Queues a FUSE command for `entry` of queue `qid` on /dev/fuse `fd`.
  // False only if the submission queue is full, which two commands at most
  // in flight never make it.
  bool push_cmd(int fd, std::uint32_t op, unsigned qid, RingEntry& entry) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return false;
    std::memset(sqe, 0, 2 * sizeof *sqe);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = op;
    sqe->addr = reinterpret_cast<std::uintptr_t>(entry.buffers());
    sqe->len = RingEntry::kBufferCount;
    sqe->user_data = kEntryTag;
    fuse_uring::CmdReq req{};
    req.commit_id = op == fuse_uring::kCmdCommitAndFetch ? entry.commit_id() : 0;
    req.qid = static_cast<std::uint16_t>(qid);
    std::memcpy(sqe->cmd, &req, sizeof req);
    return true;
  }

  bool push_poll(int fd) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return false;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    sqe->user_data = kStopTag;
    return true;
  }

  // Submits what is queued and, if `wait`, waits for a completion.
  int submit(bool wait) {
    for (;;) {
      const int rc = wait ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit(&ring_);
      if (rc != -EINTR) return rc < 0 ? rc : 0;
    }
  }

  // Lets the kernel deliver what it has for this ring (a FUSE request comes
  // as deferred task work, run only when the thread enters the kernel) and
  // returns without waiting.
  void run_task_work() { (void)io_uring_get_events(&ring_); }

  // Takes the next completion if there is one: its tag and result.
  bool next(std::uint64_t* tag, int* res) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&ring_, &cqe) != 0 || !cqe) return false;
    *tag = cqe->user_data;
    *res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return true;
  }

 private:
  io_uring ring_{};
  bool ok_ = false;
};

// "dhfs-ring-qN": what ps -L and the tests see of the ring's threads.
void name_thread(unsigned qid) {
  const std::string name = fmt::format("dhfs-ring-q{}", qid);
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

constexpr const char* kEnableParameter = "/sys/module/fuse/parameters/enable_uring";

// How many queues the kernel gives a FUSE ring: one per possible CPU
// (/sys/devices/system/cpu/possible, a list such as "0-3" or "0,2-5").
unsigned possible_cpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string list;
  unsigned count = 0;
  if (in >> list) {
    std::istringstream ranges(list);
    for (std::string range; std::getline(ranges, range, ',');) {
      unsigned lo = 0, hi = 0;
      const int n = std::sscanf(range.c_str(), "%u-%u", &lo, &hi);
      if (n == 1) ++count;
      else if (n == 2 && hi >= lo) count += hi - lo + 1;
    }
  }
  return count > 0 ? count : static_cast<unsigned>(get_nprocs_conf());
}

}  // namespace

// What the threads report back to start(): each one's registration result.
struct FuseRing::Startup {
  std::mutex mu;
  std::condition_variable cv;
  unsigned reported = 0;
  int first_error = 0;

  void report(int rc) {
    std::lock_guard lock(mu);
    ++reported;
    if (rc < 0 && first_error == 0) first_error = rc;
    cv.notify_all();
  }
};

bool FuseRing::allow_in_kernel() {
  char now = 0;
  {
    UniqueFd fd(::open(kEnableParameter, O_RDONLY | O_CLOEXEC));
    if (!fd || ::read(fd.get(), &now, 1) != 1) return false;  // a kernel without the feature
  }
  if (now == 'Y' || now == '1') return true;
  UniqueFd fd(::open(kEnableParameter, O_WRONLY | O_CLOEXEC));
  return fd && ::write(fd.get(), "Y", 1) == 1;
}

int FuseRing::start(unsigned max_threads, std::size_t payload_size, std::chrono::microseconds spin,
                    FsOptions::RingPin pin) {
  // Running threads use the stop eventfd and their slices of entry_memory_,
  // both replaced below.
  if (!threads_.empty()) return -EBUSY;
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_) return -errno;
  Startup startup;
  const unsigned queues = possible_cpus();
  spin_ = spin;
  spin_tickets_ = std::make_unique<std::atomic<std::uint64_t>[]>(queues);
  pin_ = pin;
  CPU_ZERO(&any_cpu_);
  if (::sched_getaffinity(0, sizeof any_cpu_, &any_cpu_) != 0) pin_ = FsOptions::RingPin::kOff;
  loads_.clear();
  for (unsigned q = 0; q < queues; ++q)
    loads_.push_back(std::make_unique<QueueLoad>(pin == FsOptions::RingPin::kAuto ? kSpreadBusy : 0, kSpreadHold));
  const unsigned total = queues * std::max(2u, max_threads / queues);
  const std::size_t stride = (RingEntry::memory_size(payload_size) + 4095) / 4096 * 4096;
  entry_memory_ = AlignedBuffer::huge_pages(total * stride);
  for (unsigned i = 0; i < total; ++i) {
    const std::span<std::byte> memory(entry_memory_.data() + i * stride, RingEntry::memory_size(payload_size));
    threads_.emplace_back([this, qid = i % queues, memory, &startup] { serve(qid, memory, startup); });
  }
  std::unique_lock lock(startup.mu);
  startup.cv.wait(lock, [&] { return startup.reported == total; });
  // The threads whose entries were taken keep serving even if others
  // failed: once every queue has an entry the kernel sends all requests to
  // the ring for good, and stopping them would strand those requests.
  serving_.store(startup.first_error == 0, std::memory_order_relaxed);
  return startup.first_error;
}

void FuseRing::stop() {
  if (threads_.empty()) return;
  const std::uint64_t one = 1;
  if (::write(stop_fd_.get(), &one, sizeof one) != sizeof one)
    log::error("cannot signal the FUSE ring threads to stop: {}", std::strerror(errno));
  threads_.clear();  // joins
  stop_fd_.reset();
  serving_.store(false, std::memory_order_relaxed);
}

bool FuseRing::take_reply(const iovec* iov, int count) { return t_serving && t_serving->take_reply(iov, count); }

std::span<std::byte> FuseRing::reply_buffer() { return t_serving ? t_serving->payload() : std::span<std::byte>{}; }

void FuseRing::after_reply(std::function<void()> fn) {
  if (t_serving) t_after_reply.push_back(std::move(fn));
  else fn();
}

void FuseRing::serve(unsigned qid, std::span<std::byte> entry_memory, Startup& startup) {
  // On the queue's CPU (see QueueLoad) unless told otherwise, or that CPU
  // is not one the daemon may use; from the start, before the thread has a
  // name by which anyone could look for it.
  QueueLoad& load = *loads_[qid];
  const int home = qid < CPU_SETSIZE && CPU_ISSET(qid, &any_cpu_) ? static_cast<int>(qid) : -1;
  const bool pinned = home >= 0 && pin_ != FsOptions::RingPin::kOff;
  // Only with ring_pin=auto does a thread move once placed: it then tracks
  // its queue's load on every request (with on or off, no clock read).
  const bool adaptive = pinned && pin_ == FsOptions::RingPin::kAuto;
  bool at_home = false;
  auto place = [&](bool want_home) {
    if (want_home != at_home && run_on(&any_cpu_, want_home ? home : -1)) at_home = want_home;
  };
  if (pinned) place(true);
  name_thread(qid);
  CmdRing ring;
  if (int rc = ring.init(); rc < 0) return startup.report(rc);
  RingEntry entry(entry_memory);
  const int fd = fuse_session_fd(se_);
  if (!ring.push_poll(stop_fd_.get()) || !ring.push_cmd(fd, fuse_uring::kCmdRegister, qid, entry))
    return startup.report(-EBUSY);
  // The kernel refuses a registration at once (the CQE is there when the
  // submit returns); an accepted one completes when a request arrives.
  int rc = ring.submit(false);
  std::uint64_t tag = 0;
  int res = 0;
  bool have = rc == 0 && ring.next(&tag, &res);
  if (rc == 0 && have && tag == kEntryTag && res < 0) rc = res;
  startup.report(rc);
  if (rc < 0) return;
  for (;;) {
    if (!have && spin_.count() > 0) {
      // Commit, then ask for the next request for a while before sleeping;
      // the kernel gives it to the entry committed last, so an earlier
      // spinner of the queue stops once a later one starts.
      if (ring.submit(false) < 0) return;
      std::atomic<std::uint64_t>& ticket = spin_tickets_[qid];
      const std::uint64_t mine = ticket.fetch_add(1, std::memory_order_relaxed) + 1;
      const auto until = std::chrono::steady_clock::now() + spin_;
      while (!(have = ring.next(&tag, &res)) && ticket.load(std::memory_order_relaxed) == mine &&
             std::chrono::steady_clock::now() < until) {
        ring.run_task_work();
        // A task woken on this CPU (often the one whose request this thread
        // just answered) runs first.
        sched_yield();
      }
    }
    if (!have) {
      if (adaptive) place(!load.spread(QueueLoad::Clock::now()));  // sleep where the next request will come from
      if (ring.submit(true) < 0) return;
      if (!ring.next(&tag, &res)) continue;
    }
    have = false;
    if (tag == kStopTag) return;
    // -ENOTCONN: unmounted or aborted; -ECANCELED: the ring is going away.
    if (res < 0) return;
    const std::span<std::byte> raw = entry.request();
    if (raw.empty()) {
      entry.reply_error(EIO);
    } else {
      if (adaptive) {
        const QueueLoad::Clock::time_point now = QueueLoad::Clock::now();
        load.begin(now);
        place(!load.spread(now));
      }
      channel_.on_request(raw);
      const fuse_buf buf{.size = raw.size(), .flags = static_cast<fuse_buf_flags>(0), .mem = raw.data(), .fd = -1,
                         .pos = 0};
      t_serving = &entry;
      fuse_session_process_buf(se_, &buf);
      t_serving = nullptr;
      // Every request that comes over the ring has a reply (FORGET, the one
      // without, comes over /dev/fuse); commit one anyway so that the entry
      // is not lost.
      if (!entry.take_replied()) entry.reply_error(EIO);
      if (adaptive) load.end();
    }
    if (!ring.push_cmd(fd, fuse_uring::kCmdCommitAndFetch, qid, entry)) return;  // submitted with the next wait
    if (!t_after_reply.empty()) {
      // The reply first (the commit does not wait for the next request).
      const int submitted = ring.submit(false);
      for (auto& fn : t_after_reply) fn();
      t_after_reply.clear();
      if (submitted < 0) return;
    }
  }
}

}  // namespace dhfs
