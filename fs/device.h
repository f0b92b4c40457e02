// Device: block I/O to the medium dhfs lives on (a block device or an image
// file), plus the RAII helpers for aligned buffers.
//
// All I/O is in whole 4 KiB blocks from 4 KiB-aligned buffers, so the real
// implementation can use O_DIRECT and data is not cached twice (the kernel
// already caches file pages above FUSE); only I/O marked `cached` (small
// reads and writes, the first write of an empty file below 1 MiB) passes
// through the medium's page cache (see DeviceIo).
// Each thread submits through its own io_uring, so no lock is held across
// device I/O.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "alloc/extent.h"  // BlockNo, kBlockSize

namespace dhfs {

// A heap buffer aligned to 4 KiB, freed on destruction.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size);  // zero-filled
  // Not zeroed: pages never written stay out of memory (a FUSE ring
  // entry's 1 MiB buffer, of which metadata requests touch a page).
  static AlignedBuffer uninitialized(std::size_t size);
  // Not zeroed, and backed by transparent huge pages where the kernel
  // allows that (THP "always" or "madvise"): physically contiguous in 2 MiB
  // pieces, so that a large direct I/O from or into it is one device
  // request. Made of 4 KiB pages scattered in memory, 1 MiB is 256
  // segments, and a loop device takes 128 (of at most 64 KiB) per request:
  // a cold 1 GiB read into such buffers made 1.5-1.9 loop requests per MiB
  // and ran at 1.0-1.27 GB/s; in huge pages, one request per MiB and
  // 1.67-1.98 GB/s (bench VM, bench/results/2026-11-28-huge-pages-read-plan-ab).
  // Resident 2 MiB at a time as it is touched (with THP "never", 4 KiB at a
  // time, as any buffer). A mapping of its own, never heap memory: glibc
  // serves even large aligned allocations from the heap once freed large
  // blocks have raised its mmap threshold, and heap pages that earlier use
  // faulted in as 4 KiB pages stay that way whatever the advice says (a
  // unit test got such a buffer after other tests had freed theirs; the
  // daemon could, after a mount that loaded a large image).
  static AlignedBuffer huge_pages(std::size_t size);
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<std::byte> span() { return {data_, size_}; }
  // Grows (contents not preserved) if smaller than `size`.
  void ensure(std::size_t size);

 private:
  void release();

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t mapped_ = 0;  // bytes mapped at data_ (huge_pages), 0: heap memory
};

// A 4 KiB-aligned buffer lent by a pool of the calling thread and given
// back when it goes out of scope. Its contents are NOT zeroed. For the data
// paths' buffers of up to a few MiB: an AlignedBuffer of 1 MiB made afresh
// for each write-back request costs a mmap, 256 page faults that zero a
// page each, a memset and a munmap; during an overlay copy-up that was
// about a sixth of the daemon's CPU (perf, bench VM). A thread keeps at
// most kKept buffers of at most kKeptBytes (nested leases, rare, get their
// own): with 16 ring threads that is at most 32 MiB of the daemon's memory.
class ScratchBuffer {
 public:
  static constexpr std::size_t kKept = 1;
  static constexpr std::size_t kKeptBytes = 2 << 20;

  explicit ScratchBuffer(std::size_t size);
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  std::byte* data() { return buf_.data(); }
  std::size_t size() const { return size_; }

 private:
  AlignedBuffer buf_;  // at least size_ bytes
  std::size_t size_;
};

struct DeviceIo {
  enum class Op : std::uint8_t { Read, Write };
  Op op = Op::Read;
  std::uint64_t offset = 0;  // bytes, multiple of 4096
  void* buf = nullptr;       // 4096-aligned
  std::uint32_t len = 0;     // bytes, multiple of 4096
  // A write that may go through the medium's own page cache and be written
  // back by the next flush(): a small random write (or the first write of an
  // empty file below 1 MiB, most often all of it, as an untar writes) then
  // costs a memory copy instead of a device round trip, and the kernel
  // merges the write-back. Direct I/O on the same blocks stays coherent (the
  // kernel writes such pages back before direct I/O touches them).
  // A small read marked so goes through the same cache: blocks written that
  // way lately are found in memory, where a direct read would first have
  // the kernel write them back and then read them from the device.
  bool cached = false;

  // `count` blocks from device block `start`, to or from `buf`.
  static DeviceIo blocks(Op op, BlockNo start, void* buf, std::uint64_t count) {
    return {op, start * kBlockSize, buf, static_cast<std::uint32_t>(count * kBlockSize)};
  }
};

class Device {
 public:
  virtual ~Device() = default;

  // Performs every I/O of the batch (in parallel where the medium allows)
  // and waits for all of them. Returns 0, or the negative errno of the first
  // failed I/O (-EIO for a short transfer that cannot be completed).
  virtual int submit(std::span<const DeviceIo> ios) = 0;

  // Makes every completed write durable (FLUSH / fdatasync).
  virtual int flush() = 0;

  virtual std::uint64_t size_bytes() const = 0;
  virtual bool read_only() const = 0;
  virtual std::string describe() const = 0;  // path, for messages

  // Backs the byte range of an image file with space of the filesystem
  // that holds it (fallocate), so that writes there never fail for lack of
  // it: a sparse image can outgrow what its host has free, and the journal
  // must stay writable then, or nothing could be changed any more, not even
  // deleted. Block devices and memory need nothing. 0 or a negative errno
  // (-EOPNOTSUPP where the host cannot preallocate).
  virtual int preallocate(std::uint64_t /*offset*/, std::uint64_t /*len*/) { return 0; }

  // The byte range (whole blocks) holds nothing anyone will read again: an
  // image file gives its space back to the filesystem that holds it (a hole
  // punched), a block device is told with BLKDISCARD (an SSD, a thin volume
  // or a loop device over a file frees it). What the range reads afterwards
  // is undefined. 0 or a negative errno (-EOPNOTSUPP where the medium
  // cannot).
  virtual int discard(std::uint64_t /*offset*/, std::uint64_t /*len*/) { return -EOPNOTSUPP; }

  // The medium becomes at least `bytes` long, for a filesystem that grows
  // onto it (0: whatever it has now). An image file shorter than that is
  // extended, sparse; a block device cannot grow itself, so its size is
  // read again (after lvextend, or `losetup -c` on a loop device) and must
  // be at least `bytes`. size_bytes() then reports the new size. 0 or a
  // negative errno (-EFBIG: the medium is smaller and cannot grow to it;
  // -EOPNOTSUPP where the size is fixed).
  virtual int extend(std::uint64_t /*bytes*/) { return -EOPNOTSUPP; }

  int read(std::uint64_t offset, void* buf, std::uint32_t len);
  int write(std::uint64_t offset, const void* buf, std::uint32_t len);
};

struct DeviceOpenOptions {
  bool read_only = false;
  // Take the device exclusively: O_EXCL on block devices (fails if mounted
  // or opened exclusively elsewhere) and a non-blocking flock(LOCK_EX) on
  // everything, so a second dhfs or fsck.dhfs is refused.
  bool exclusive = true;
};

// Opens a block device or regular file. On failure returns nullptr and sets
// `error` to one line naming the path and the reason (e.g. "/dev/loop3: in
// use by another dhfs or fsck.dhfs").
std::unique_ptr<Device> open_device(const std::string& path, const DeviceOpenOptions& opts,
                                    std::string& error);

// A device in memory, for unit tests.
class MemDevice : public Device {
 public:
  explicit MemDevice(std::uint64_t size_bytes);
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override;
  std::uint64_t size_bytes() const override { return size_.load(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "memory device"; }
  // Grows like an image file (new bytes zero); references from bytes()
  // taken before are invalid afterwards.
  int extend(std::uint64_t bytes) override;
  // Fills the range with a pattern, so that tests see it if something
  // still in use was discarded.
  int discard(std::uint64_t offset, std::uint64_t len) override;

  // Direct access for tests that corrupt or inspect the medium.
  std::vector<std::byte>& bytes() { return bytes_; }

 private:
  std::mutex mu_;
  std::vector<std::byte> bytes_;
  std::atomic<std::uint64_t> size_;  // bytes_.size(), readable without mu_
};

}  // namespace dhfs
