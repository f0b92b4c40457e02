// Physical extents: the unit in which dhfs hands out and tracks device space.
#pragma once

#include <cstdint>

namespace dhfs {

using BlockNo = std::uint64_t;

// Every on-disk structure and every allocation is in units of this block size.
inline constexpr std::uint32_t kBlockSize = 4096;
inline constexpr std::uint32_t kBlockShift = 12;

// A run of `len` consecutive device blocks starting at block `start`.
struct Extent {
  BlockNo start = 0;
  std::uint64_t len = 0;

  BlockNo end() const { return start + len; }
  bool empty() const { return len == 0; }
  bool contains(BlockNo b) const { return b >= start && b < end(); }
  bool overlaps(const Extent& o) const { return start < o.end() && o.start < end(); }
  friend bool operator==(const Extent&, const Extent&) = default;
};

}  // namespace dhfs
