// ExtentMap: the block map of one file, file block -> device block, as a
// sorted list of non-overlapping extents. Unmapped ranges are holes.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

struct FileExtent {
  std::uint64_t lblk = 0;   // first file block
  BlockNo pblk = 0;         // first device block
  std::uint32_t len = 0;    // blocks
  std::uint32_t flags = 0;  // kExtentUnwritten, ...

  std::uint64_t lend() const { return lblk + len; }
  friend bool operator==(const FileExtent&, const FileExtent&) = default;
};

// A piece of a file range: either mapped (pblk != 0) or a hole (pblk == 0).
struct Segment {
  std::uint64_t lblk = 0;
  std::uint64_t len = 0;
  BlockNo pblk = 0;
  std::uint32_t flags = 0;
  bool hole() const { return pblk == 0; }
};

class ExtentMap {
 public:
  // Maps [lblk, lblk+len) to device blocks starting at pblk, or unmaps it
  // when pblk == 0. What the range mapped before is appended to `displaced`
  // (if given) as mapped segments.
  void set(std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags,
           std::vector<Segment>* displaced = nullptr);

  // Splits [lblk, lblk+len) into consecutive mapped segments and holes.
  std::vector<Segment> segments(std::uint64_t lblk, std::uint64_t len) const;

  // The mapped extent holding `lblk`, if any.
  std::optional<FileExtent> find(std::uint64_t lblk) const;
  // The mapped extent holding the block just before `lblk` (allocation hint).
  std::optional<FileExtent> find_before(std::uint64_t lblk) const;

  // First mapped block >= lblk (SEEK_DATA), or nullopt.
  std::optional<std::uint64_t> next_data(std::uint64_t lblk) const;
  // First unmapped block >= lblk (SEEK_HOLE).
  std::uint64_t next_hole(std::uint64_t lblk) const;

  std::uint64_t mapped_blocks() const { return mapped_blocks_; }
  std::size_t extent_count() const { return extents_.size(); }
  const std::vector<FileExtent>& extents() const { return extents_; }
  bool empty() const { return extents_.empty(); }
  void clear() {
    extents_.clear();
    mapped_blocks_ = 0;
  }

 private:
  // Index of the first extent whose end is beyond lblk.
  std::size_t first_ending_after(std::uint64_t lblk) const;
  void insert_merged(std::size_t pos, FileExtent e);

  std::vector<FileExtent> extents_;
  std::uint64_t mapped_blocks_ = 0;
};

}  // namespace dhfs
