// PrefetchedBlocks: device blocks read ahead of need, kept in memory until
// they are used, overwritten or pushed out.
//
// Why: with a cow_unit larger than a block, the first write to a shared
// unit of a clone loads the rest of the unit from the device before it can
// write the copy. The kernel writes a file's dirty pages back in file order,
// so after random overwrites of a clone the next units to be copied are the
// ones that follow: one read of the old extent ahead of the write then
// serves the loads of several units. (25% random 4 KiB overwrites of a
// 1 GiB clone with a 32 KiB unit: 27.8k loads of one unit each, which were
// what the overwrites waited on.) Small files read whole in device order
// use it too (FileSystem::read_ahead_small_files): the files that follow
// one just read lie right after it. A file being copied (an overlay
// copy-up reads the lower file, then writes the same bytes) keeps the
// blocks it served here, and share_stored_chunk compares the copy's writes
// with them instead of reading the device again.
//
// Blocks are kept by device block number. Every device write to a block
// drops it (WatchedDevice below reports them), so a kept block always holds
// what the device holds. A read that raced with a write is not kept: the
// writes that started or ended since the read began are logged, and keep()
// refuses blocks that any of them touched (or all of them, once more writes
// came than the log holds). Thread-safe; bounded in bytes, oldest first out.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "alloc/extent.h"
#include "fs/device.h"

namespace dhfs {

class PrefetchedBlocks {
 public:
  explicit PrefetchedBlocks(std::size_t max_bytes = 8 << 20) : max_bytes_(max_bytes) {}

  // A read of blocks to keep: begin before the device read, then keep() or
  // abandon() (the destructor abandons).
  class Read {
   public:
    Read(PrefetchedBlocks& owner, Extent blocks);
    ~Read();
    Read(const Read&) = delete;
    Read& operator=(const Read&) = delete;
    // False if the blocks are kept already or another read of some of
    // them is under way: nothing to read then. Blocks kept already at either
    // end are left out of the read (blocks()).
    bool wanted() const { return wanted_; }
    Extent blocks() const { return blocks_; }
    std::byte* buffer() { return buf_.data(); }
    // The device read into buffer() succeeded: keep the blocks, unless a
    // write touched them since this read began.
    void keep();

   private:
    PrefetchedBlocks& owner_;
    Extent blocks_;
    bool wanted_ = false;
    bool done_ = false;
    std::uint64_t since_ = 0;
    AlignedBuffer buf_;
  };

  // Copies the blocks [start, start + n) into `dst` if one kept run holds
  // them all.
  bool take(BlockNo start, std::uint64_t n, std::byte* dst);

  // The end of the kept run that holds block `b`, or `b` if none does.
  BlockNo kept_end(BlockNo b) const;

  // A device write to `e` starts or has ended (see WatchedDevice).
  void writing(Extent e);
  // The kept blocks in `e` are not needed any more.
  void forget(Extent e);

  std::size_t kept_bytes() const;

  // True if one kept run holds the blocks from `start` on that `data`
  // covers and they begin with its bytes. A run compared up to its end goes
  // (its memory serves the next reads): a copy compares each block once, in
  // file order.
  bool compare_kept(BlockNo start, std::span<const std::byte> data);

 private:
  struct Run {
    std::uint64_t len;
    AlignedBuffer data;
    std::list<BlockNo>::iterator age;  // in lru_
  };
  static constexpr std::size_t kLogEntries = 4096;

  // The rest hold mu_.
  void drop_overlapping(Extent e);
  void drop(std::map<BlockNo, Run>::iterator run);
  // Nothing kept and no read under way: writes need not take mu_, and the
  // spare buffers go.
  void settle_if_idle();
  // The buffers of runs that went serve the next reads, up to max_bytes_ in
  // all while anything is kept or read: fresh memory costs a page fault and
  // a zeroed page per 4 KiB (a copy-up keeps 1 GiB, 1 MiB at a time).
  AlignedBuffer buffer_for(std::size_t bytes);

  const std::size_t max_bytes_;
  mutable std::mutex mu_;
  std::map<BlockNo, Run> runs_;  // by start block; runs do not overlap
  std::list<BlockNo> lru_;       // run starts, oldest first
  std::vector<AlignedBuffer> spare_;
  std::size_t spare_bytes_ = 0;
  std::size_t bytes_ = 0;
  std::vector<Extent> reading_;  // reads under way
  // Writes that started or ended while a read was under way, with their
  // sequence numbers; only the newest kLogEntries are kept.
  std::uint64_t seq_ = 0;
  std::deque<std::pair<std::uint64_t, Extent>> log_;
  // Nothing kept and no read under way: writes need not take mu_.
  std::atomic<bool> idle_{true};
};

// Reads runs for a PrefetchedBlocks on a thread of its own, so that the
// write that asks for them does not wait for them. Requests beyond a few
// queued are dropped (they are hints).
class BlockReader {
 public:
  BlockReader(Device& dev, PrefetchedBlocks& blocks);
  ~BlockReader();
  BlockReader(const BlockReader&) = delete;
  BlockReader& operator=(const BlockReader&) = delete;
  void request(Extent e);

 private:
  static constexpr std::size_t kMaxQueued = 8;
  void run(std::stop_token stop);

  Device& dev_;
  PrefetchedBlocks& blocks_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Extent> queue_;
  std::jthread thread_;  // last: it uses the members above
};

// A Device that tells a PrefetchedBlocks about every write before it starts
// and after it ends, and forwards everything else.
class WatchedDevice final : public Device {
 public:
  WatchedDevice(std::unique_ptr<Device> inner, PrefetchedBlocks& blocks)
      : inner_(std::move(inner)), blocks_(blocks) {}
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override { return inner_->flush(); }
  std::uint64_t size_bytes() const override { return inner_->size_bytes(); }
  bool read_only() const override { return inner_->read_only(); }
  std::string describe() const override { return inner_->describe(); }
  int preallocate(std::uint64_t offset, std::uint64_t len) override { return inner_->preallocate(offset, len); }
  int extend(std::uint64_t bytes) override { return inner_->extend(bytes); }
  int discard(std::uint64_t offset, std::uint64_t len) override;

 private:
  std::unique_ptr<Device> inner_;
  PrefetchedBlocks& blocks_;
};

}  // namespace dhfs
