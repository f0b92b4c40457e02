// KernelChannel: what dhfs reads from, and adds to, the raw FUSE protocol
// between the kernel and libfuse.
//
// Why: libfuse 3.14 (Debian 12) cannot negotiate FUSE_HANDLE_KILLPRIV_V2.
// Without it the kernel does not set SB_NOSEC on the mount, so every
// write() and chown() first asks the daemon for security.capability (a
// GETXATTR round trip): on the bench VM that halved random-write IOPS and
// cost a third of the time of an untar. With it, the kernel checks once per
// inode and leaves clearing setuid/setgid to the filesystem, flagging the
// requests where that is due (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID,
// FATTR_KILL_SUIDGID) -- flags libfuse 3.14 does not pass on either.
//
// So the adapter does the /dev/fuse reads and writes itself (libfuse's
// custom I/O hooks) and hands every request and reply to this class, which:
//  - remembers the FUSE_INIT request and, if the kernel offers
//    FUSE_HANDLE_KILLPRIV_V2, adds it to the INIT reply;
//  - records, for the thread that read a request (libfuse handles a request
//    on the thread that read it), whether the kernel asked for setuid and
//    setgid to be cleared (current_request());
//  - counts the requests of each kind and the time from reading one to its
//    reply on the same thread (requests()).
// It only parses bytes: unit tests drive it without FUSE.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "fs/request_stats.h"

namespace dhfs {

// What a request asks beyond what libfuse passes on.
struct RequestExtras {
  // Clear S_ISUID, and S_ISGID if the group may execute, as part of this
  // request (a write, an O_TRUNC open, a truncate or a chown).
  bool kill_suidgid = false;
};

class KernelChannel {
 public:
  // Call with every request as read from /dev/fuse, on the thread that
  // will handle it.
  void on_request(std::span<const std::byte> raw);

  // Call with every reply before it is written to /dev/fuse. May change the
  // INIT reply in place; `iov` must then point at writable memory (libfuse's
  // reply buffers are).
  void on_reply(const iovec* iov, int count);

  // True once the INIT reply went out with FUSE_HANDLE_KILLPRIV_V2.
  bool killpriv_v2() const { return killpriv_v2_.load(std::memory_order_relaxed); }

  // True if the kernel offered FUSE over io_uring in its INIT request (it
  // does while /sys/module/fuse/parameters/enable_uring is Y).
  bool kernel_offers_uring() const { return kernel_offers_uring_.load(std::memory_order_relaxed); }

  // The payload buffer a FUSE over io_uring entry needs on this connection:
  // the kernel's max(8 KiB, max_write, max_pages pages), from the INIT reply.
  std::size_t ring_payload_size() const { return ring_payload_size_.load(std::memory_order_relaxed); }

  // The extras of the request the calling thread read last.
  static const RequestExtras& current_request();

  // Requests answered so far, by kind, with the daemon's time for them.
  const RequestStats& requests() const { return requests_; }

 private:
  void record_ring_payload_size(std::span<const std::byte> init_out, std::uint32_t flags);

  std::atomic<std::uint64_t> init_unique_{0};  // 0: no INIT seen (never a valid unique)
  std::atomic<bool> kernel_offers_v2_{false};
  std::atomic<bool> killpriv_v2_{false};
  std::atomic<bool> kernel_offers_uring_{false};
  std::atomic<std::size_t> ring_payload_size_{0};
  RequestStats requests_;
};

}  // namespace dhfs
