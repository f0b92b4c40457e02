// FuseRing: serves a mounted session's requests over FUSE over io_uring
// (see ring_entry.h for the protocol and why it is cheaper than /dev/fuse).
//
// Each CPU queue of the kernel gets the same number of threads; each thread
// owns one io_uring and registers one RingEntry. The kernel hands a request
// only to a free entry, so, as with threads reading /dev/fuse, a request
// never waits behind a busy thread while another is idle, and a thread
// blocked on the device holds up nothing but its own request. A thread is
// pinned to its queue's CPU where it can be: the kernel queues a request on
// the CPU of the process that made it, and serving it there saves a wake-up
// across cores.
//
// The session's /dev/fuse loop keeps running beside it: the kernel still
// sends FORGET and INTERRUPT there, and every request until all queues have
// an entry registered.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

#include "fs/kernel_channel.h"
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
  // from the same CPU. Call once the kernel has applied the INIT reply. Returns 0, or the first negative errno of a
  // registration the kernel refused; the threads whose entries it took keep
  // serving (while a queue has none, every request stays on /dev/fuse).
  int start(unsigned max_threads, std::size_t payload_size);

  // Stops the threads (their entries are cancelled with their rings).
  void stop();

  // True once every entry start() registered was taken, so every CPU queue
  // has entries and the kernel sends its requests to the ring.
  bool serving() const { return serving_.load(std::memory_order_relaxed); }

  // Give every reply libfuse sends to this first: true if it answered the
  // request the calling thread is serving from the ring, and is now stored
  // in its entry.
  static bool take_reply(const iovec* iov, int count);

 private:
  struct Startup;
  void serve(unsigned qid, std::size_t payload_size, Startup& startup);

  fuse_session* se_;
  KernelChannel& channel_;
  UniqueFd stop_fd_;  // an eventfd: readable once the threads must stop
  std::atomic<bool> serving_{false};
  std::vector<std::jthread> threads_;
};

}  // namespace dhfs
