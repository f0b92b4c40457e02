// ReadPlan: the device reads that bring a set of a file's stored segments
// into the caller's buffer, and the copies that finish them.
//
// Segments whose blocks lie close together on the device are read in one
// I/O, gaps included: a clone after random overwrites maps every few blocks
// alternately to its old extent and to the new blocks (which
// placement_hint lays side by side in file order), and a 1 MiB read of it
// was about a hundred small I/Os; merged it is two to four.
//
// Where such a merged I/O lands: a run of one extent with gaps (the old
// extent of that clone: file and device blocks keep one distance) is read
// straight into the caller's buffer when every gap falls on a file block
// that another segment of the same read fills. Those segments are read into
// a bounce buffer and copied over the gaps once all I/O has completed.
// Every other merged I/O goes to the bounce buffer. Before, every merged
// I/O went there, and copying 1.25x the bytes of a clone's cold read out of
// it was a fifth of the daemon's CPU (perf, bench VM). The clone's cold
// read after 25% random overwrites: 1143-1462 against 765-976 MB/s, with
// the FUSE payload it lands in made of huge pages (FuseRing); into 4 KiB
// pages scattered in memory it was slower than the bounce buffer, every
// 1 MiB I/O needing two device requests (see AlignedBuffer::huge_pages).
//
// Guarantee: the plan writes only the caller's blocks of `segs`; blocks of
// the buffer outside them (holes the caller zeroed, blocks it took from
// memory) keep their contents once finish() has run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "fs/device.h"
#include "fs/extent_map.h"

namespace dhfs {

class ReadPlan {
 public:
  // Segments of a read whose blocks lie at most this far apart on the
  // device are read in one I/O, gaps included, up to kMaxSpanBlocks.
  static constexpr std::uint64_t kReadGapBlocks = 16;
  static constexpr std::uint64_t kMaxSpanBlocks = 1024;  // 4 MiB

  // `segs`: stored (not hole) segments of one file, not overlapping, in
  // any order; `dst` holds the file's blocks from `first` on and must
  // cover every segment.
  ReadPlan(std::span<const Segment> segs, std::uint64_t first, std::byte* dst);
  ReadPlan(const ReadPlan&) = delete;  // the I/Os point into it
  ReadPlan& operator=(const ReadPlan&) = delete;

  // The reads to submit (all of them, as one batch).
  std::span<const DeviceIo> ios() const { return {ios_.data(), ios_.size()}; }

  // After every read completed: moves what landed in the bounce buffer to
  // its place in the caller's buffer.
  void finish();

  // Blocks read into the bounce buffer (the copies finish() makes, plus
  // the gaps of merged I/Os that land there).
  std::uint64_t bounced_blocks() const { return bounced_blocks_; }

 private:
  // Segments that lie close together on the device, read by one I/O.
  struct Group {
    std::size_t from, to;  // indexes into order_
    BlockNo start, end;    // device blocks the I/O reads
    // File block that `start` would be if the group is one extent's run
    // (every segment keeps the same distance); nullopt if not.
    std::optional<std::uint64_t> linear_lblk;
    bool direct = false;  // lands in the caller's buffer
  };

  void group_by_device();
  void choose_direct(std::span<const Segment> segs);
  void add_ios();

  // Every read of the filesystem makes a plan; most have one segment or a
  // few, and those stay off the heap.
  template <typename T>
  using Few = boost::container::small_vector<T, 4>;

  std::uint64_t first_;
  std::byte* dst_;
  Few<const Segment*> order_;  // the segments in device order
  Few<Group> groups_;
  Few<DeviceIo> ios_;
  std::optional<ScratchBuffer> bounce_;
  std::vector<std::pair<const Group*, std::uint64_t>> bounced_;  // group, its block in the bounce buffer
  std::uint64_t bounced_blocks_ = 0;
};

}  // namespace dhfs
