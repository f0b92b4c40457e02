// FuseRing: serves a mounted session's requests over FUSE over io_uring
// (see ring_entry.h for the protocol and why it is cheaper than /dev/fuse).
//
// Each CPU queue of the kernel gets the same number of threads; each thread
// owns one io_uring and registers one RingEntry. The kernel hands a request
// only to a free entry, so, as with threads reading /dev/fuse, a request
// never waits behind a busy thread while another is idle, and a thread
// blocked on the device holds up nothing but its own request. While a
// queue serves its requests one or two at a time, its threads run on the
// queue's CPU, where the process that made the request waits; once it
// serves three at once they may run on any CPU, until that has not happened
// for a while (see QueueLoad for why and the measurements). Held to their
// queue's CPU for good, the threads left one process's many requests one
// core only: on the 2-core bench VM 4 KiB random reads at QD32 fell from
// 37-59k to 10-13k IOPS (2026-11-28, with guest halt polling on).
//
// The session's /dev/fuse loop keeps running beside it: the kernel still
// sends FORGET and INTERRUPT there, and every request until all queues have
// an entry registered.
#pragma once

#include <sched.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "fs/device.h"  // AlignedBuffer
#include "fs/kernel_channel.h"
#include "fs/options.h"
#include "fs/queue_load.h"
#include "fs/unique_fd.h"

struct fuse_session;

namespace dhfs {

class FuseRing {
 public:
  FuseRing(fuse_session* se, KernelChannel& channel) : se_(se), channel_(channel) {}
  ~FuseRing() { stop(); }
  FuseRing(const FuseRing&) = delete;
  FuseRing& operator=(const FuseRing&) = delete;

  // Makes sure the kernel offers FUSE over io_uring to the next mount:
  // turns on /sys/module/fuse/parameters/enable_uring if it is off (root
  // only). Call before mounting. False if the kernel lacks the feature or
  // the parameter cannot be changed.
  static bool allow_in_kernel();

  // Registers the entries and starts their threads: about `max_threads`
  // spread over the kernel's queues (one per possible CPU), at least two per
  // queue so that a request blocked on the device does not hold up the next
  // from the same CPU. Call once the kernel has applied the INIT reply, and
  // only once (-EBUSY while threads run). Returns 0, or the first negative
  // errno of a registration the kernel refused; the threads whose entries
  // it took keep serving (while a queue has none, every request stays on
  // /dev/fuse).
  // After a reply, a thread asks for the next request for `spin` before it
  // sleeps (FsOptions::ring_spin), one thread per queue at a time. `pin`:
  // where the threads run (FsOptions::ring_pin, fs/queue_load.h).
  int start(unsigned max_threads, std::size_t payload_size, std::chrono::microseconds spin,
            FsOptions::RingPin pin = FsOptions::RingPin::kAuto);

  // Stops the threads (their entries are cancelled with their rings).
  void stop();

  // True once every entry start() registered was taken, so every CPU queue
  // has entries and the kernel sends its requests to the ring.
  bool serving() const { return serving_.load(std::memory_order_relaxed); }

  // Give every reply libfuse sends to this first: true if it answered the
  // request the calling thread is serving from the ring, and is now stored
  // in its entry.
  static bool take_reply(const iovec* iov, int count);

  // The payload buffer of the ring entry whose request the calling thread
  // serves, where a reply body can be built without a copy (see
  // RingEntry::payload); empty when the request came over /dev/fuse.
  static std::span<std::byte> reply_buffer();

  // Runs `fn` once the reply to the request the calling thread serves has
  // reached the kernel. A ring entry's reply is committed only with the
  // next fetch, after the handler returns, so `fn` waits until then; over
  // /dev/fuse the reply was written already and `fn` runs at once. For
  // notifications that follow a reply: sent before it, they would delay it,
  // and the kernel may wait for that very reply while the notification
  // looks up the inode (an inode being evicted waits for its write-back).
  static void after_reply(std::function<void()> fn);

 private:
  struct Startup;
  void serve(unsigned qid, std::span<std::byte> entry_memory, Startup& startup);

  fuse_session* se_;
  KernelChannel& channel_;
  UniqueFd stop_fd_;  // an eventfd: readable once the threads must stop
  std::atomic<bool> serving_{false};
  std::chrono::microseconds spin_{0};
  // Per queue: bumped by each thread that starts to spin, so that only the
  // latest one of the queue keeps on.
  std::unique_ptr<std::atomic<std::uint64_t>[]> spin_tickets_;
  FsOptions::RingPin pin_ = FsOptions::RingPin::kAuto;
  cpu_set_t any_cpu_{};  // the CPUs the daemon may use, for threads not held to one
  std::vector<std::unique_ptr<QueueLoad>> loads_;  // per queue
  // Every entry's buffer, one slice each, in huge pages: the kernel and
  // the device read and write a request's data there (a read from the
  // device lands in the payload with direct I/O), and physically
  // contiguous memory makes a 1 MiB transfer one device request instead of
  // two (see AlignedBuffer::huge_pages). One buffer for all: 16 entries of
  // 1 MiB take 9 huge pages, where one each would take 16 (each half used).
  // Resident once the entries are used (with THP off: page by page).
  // Outlives the threads, declared before them.
  AlignedBuffer entry_memory_;
  std::vector<std::jthread> threads_;
};

}  // namespace dhfs
