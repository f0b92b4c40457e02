// Test devices for power-cut simulation and fault injection.
//
//   RecordingDevice  forwards to a MemDevice and logs, in order, every write
//                    (offset + bytes) and every flush it passes on.
//   OverlayDevice    a crash image: a base image that is never modified plus
//                    a sparse overlay of 4 KiB blocks holding everything
//                    written since (by replaying a log prefix, by recovery,
//                    by fsck), so that thousands of crash images cost little.
//   FaultyDevice     forwards to a MemDevice and fails chosen I/O with EIO
//                    (the Nth write, writes into an offset range, reads,
//                    flushes), counting what it injected.
//
// All three are thread-safe: the filesystem's committer and checkpointer
// threads submit I/O beside the test thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/device.h"

namespace dhfs::test {

// One entry of a RecordingDevice log: a write of whole blocks, or a flush.
struct LoggedIo {
  bool flush = false;
  std::uint64_t offset = 0;    // writes: bytes, a multiple of 4096
  std::vector<std::byte> data;  // writes: a multiple of 4096 bytes
};

class RecordingDevice final : public Device {
 public:
  explicit RecordingDevice(std::shared_ptr<MemDevice> medium) : mem_(std::move(medium)) {}
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override;
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "recording device"; }

  // Called before every flush, outside the device's lock: a test can hold
  // a flushing thread (the journal's committer) there.
  void set_flush_gate(std::function<void()> gate);

  // Entries logged so far (a position in the log).
  std::size_t position() const;
  // A copy of the log.
  std::vector<LoggedIo> log() const;

 private:
  std::shared_ptr<MemDevice> mem_;
  mutable std::mutex mu_;  // held across the forwarded I/O: log order = medium order
  std::vector<LoggedIo> log_;
  std::function<void()> gate_;
};

// A crash image: reads see `base` except where the overlay holds a block.
class OverlayDevice final : public Device {
 public:
  explicit OverlayDevice(std::shared_ptr<const std::vector<std::byte>> base) : base_(std::move(base)) {}
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override { return 0; }
  std::uint64_t size_bytes() const override { return base_->size(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "crash image"; }

  // Puts one 4 KiB block (block number, 4096 bytes) into the overlay.
  void put_block(std::uint64_t block, const std::byte* bytes);
  std::size_t overlay_blocks() const;

 private:
  std::shared_ptr<const std::vector<std::byte>> base_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::vector<std::byte>> blocks_;
};

// Lets several owners (a FileSystem that owns its Device, then fsck, then
// the next mount) use one device in turn.
class DeviceRef final : public Device {
 public:
  explicit DeviceRef(std::shared_ptr<Device> dev) : dev_(std::move(dev)) {}
  int submit(std::span<const DeviceIo> ios) override { return dev_->submit(ios); }
  int flush() override { return dev_->flush(); }
  std::uint64_t size_bytes() const override { return dev_->size_bytes(); }
  bool read_only() const override { return dev_->read_only(); }
  std::string describe() const override { return dev_->describe(); }

 private:
  std::shared_ptr<Device> dev_;
};

// Which I/O a FaultyDevice fails. Every rule that is set must match; an
// I/O fails if any armed rule matches it.
struct FaultRule {
  enum class Kind { kRead, kWrite, kFlush };
  Kind kind = Kind::kWrite;
  // Fail the Nth matching I/O (1-based, counted from arming) and, with
  // `sticky`, every one after it too; 0: every matching I/O.
  std::uint64_t nth = 0;
  bool sticky = false;
  // Reads and writes: only I/O overlapping [offset_begin, offset_end).
  std::uint64_t offset_begin = 0;
  std::uint64_t offset_end = UINT64_MAX;
  int error = -5;  // -EIO
};

class FaultyDevice final : public Device {
 public:
  explicit FaultyDevice(std::shared_ptr<MemDevice> medium) : mem_(std::move(medium)) {}
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override;
  std::uint64_t size_bytes() const override { return mem_->size_bytes(); }
  bool read_only() const override { return false; }
  std::string describe() const override { return "faulty device"; }

  // Replaces the armed rules (their counters start from zero).
  void arm(std::vector<FaultRule> rules);
  void disarm() { arm({}); }

  std::uint64_t injected() const { return injected_.load(); }
  std::uint64_t writes_seen() const { return writes_seen_.load(); }

 private:
  bool should_fail(FaultRule::Kind kind, std::uint64_t off, std::uint64_t len, int* error);

  std::shared_ptr<MemDevice> mem_;
  std::mutex mu_;
  struct Armed {
    FaultRule rule;
    std::uint64_t matched = 0;
  };
  std::vector<Armed> rules_;
  std::atomic<std::uint64_t> injected_{0};
  std::atomic<std::uint64_t> writes_seen_{0};
};

}  // namespace dhfs::test
