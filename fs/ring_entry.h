// RingEntry: one request slot of FUSE over io_uring, and the byte layout
// that protocol uses (kernel 6.14+, FUSE 7.42).
//
// Why: over /dev/fuse every request costs the daemon a read() and a
// writev(), and the kernel wakes whichever thread is reading. Over
// io_uring the daemon registers slots (a header buffer and a payload
// buffer each) per CPU queue; the kernel writes a request into a free
// slot of the requesting CPU's queue and completes that slot's command,
// and one io_uring_enter both returns the reply and waits for the next
// request (FUSE_IO_URING_CMD_COMMIT_AND_FETCH).
//
// The kernel splits a request over the slot: struct fuse_in_header in
// `in_out`, the operation's fixed struct (its first argument) in `op_in`,
// the rest (names, write data) in the payload buffer. libfuse 3.14 parses
// only the /dev/fuse layout, all of it contiguous, so request() moves the
// two headers into the headroom just before the payload and hands out that
// contiguous view; the payload itself is never copied. A reply goes back
// the other way: fuse_out_header into `in_out`, the reply body into the
// payload buffer (take_reply()).
//
// Debian 12's kernel headers (6.1) predate the protocol, so the structures
// are defined here, as include/uapi/linux/fuse.h has them.
// It only moves bytes: unit tests drive it without FUSE.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace dhfs {

namespace fuse_uring {

// struct fuse_uring_ent_in_out
struct EntInOut {
  std::uint64_t flags;
  std::uint64_t commit_id;   // the request's unique, echoed in the commit
  std::uint32_t payload_sz;  // bytes used in the payload buffer, either way
  std::uint32_t padding;
  std::uint64_t reserved;
};

// struct fuse_uring_req_header
struct ReqHeader {
  std::array<std::byte, 128> in_out;  // fuse_in_header / fuse_out_header
  std::array<std::byte, 128> op_in;   // the operation's first argument
  EntInOut ent_in_out;
};
static_assert(sizeof(ReqHeader) == 288);

// enum fuse_uring_cmd: the cmd_op of an IORING_OP_URING_CMD on /dev/fuse
constexpr std::uint32_t kCmdRegister = 1;
constexpr std::uint32_t kCmdCommitAndFetch = 2;

// struct fuse_uring_cmd_req, in the command area of a 128-byte SQE
struct CmdReq {
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};
static_assert(sizeof(CmdReq) == 24);

// FUSE_OVER_IO_URING: bit 41 of the INIT flags (bit 9 of flags2). The
// kernel offers it only while /sys/module/fuse/parameters/enable_uring is Y.
constexpr std::uint64_t kInitOverIoUring = 1ULL << 41;

}  // namespace fuse_uring

class RingEntry {
 public:
  // In memory lent by the caller, which outlives the entry:
  // memory_size(payload size) bytes, 4 KiB-aligned (FuseRing gives its
  // entries slices of one huge-page buffer, see there). The payload size
  // must be at least the connection's largest request or reply body:
  // max(8 KiB, max_write, max_pages pages).
  explicit RingEntry(std::span<std::byte> memory);
  static constexpr std::size_t memory_size(std::size_t payload_size) { return kPayloadOffset + payload_size; }
  RingEntry(const RingEntry&) = delete;
  RingEntry& operator=(const RingEntry&) = delete;

  // The two buffers to register (header, payload). The kernel keeps their
  // addresses until the connection ends, so an entry never moves.
  const iovec* buffers() const { return iov_.data(); }
  static constexpr unsigned kBufferCount = 2;

  // The request the kernel put in this entry, laid out as /dev/fuse would
  // deliver it; empty if the entry holds no well-formed request.
  std::span<std::byte> request();

  // The unique of the request in this entry (its commit id).
  std::uint64_t commit_id() const { return headers_.ent_in_out.commit_id; }

  // Stores a reply given as libfuse builds it (fuse_out_header first, then
  // the body). Returns false, storing nothing, if it answers another request
  // or one already answered.
  // A body larger than the payload buffer becomes an EIO reply.
  bool take_reply(const iovec* iov, int count);

  // Stores an error reply for the request in this entry.
  void reply_error(int error);

  // Whether a reply was stored since the last request(), and forgets it.
  bool take_replied();

  // The payload buffer, 4 KiB-aligned: a handler may build its reply body
  // there (a read fills it from the device with direct I/O), and
  // take_reply() then copies nothing. Holds the request's own payload until
  // the handler overwrites it.
  std::span<std::byte> payload() { return {payload_at(), payload_size_}; }

 private:
  static constexpr std::size_t kHeadroom = 256;  // >= fuse_in_header + op_in
  // The payload starts on a block of its own, the headroom ends just
  // before it.
  static constexpr std::size_t kPayloadOffset = 4096;
  static_assert(kHeadroom <= kPayloadOffset);
  std::byte* payload_at() { return memory_ + kPayloadOffset; }

  fuse_uring::ReqHeader headers_{};
  // kPayloadOffset, then the payload, in the caller's memory.
  std::byte* memory_;
  std::size_t payload_size_;
  std::array<iovec, kBufferCount> iov_{};
  std::uint64_t serving_ = 0;  // unique of the request being handled, 0: none
  bool replied_ = false;
};

}  // namespace dhfs
