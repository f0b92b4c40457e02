// RegionMap: which container region reserves which blocks.
//
// A region's reservation is a set of slices: disjoint runs of device blocks.
// The map keeps one index of every slice by start block (start -> length,
// region), so that the owner of any block is found in O(log n), and a second
// index of each region's own slices, so that a region's slices can be listed
// and its last slice found without a scan. A region's slices are always
// coalesced: two slices of one region never touch. Slices of different regions
// may touch.
//
// The map only knows geometry; which blocks of a slice are free is the
// business of the region's FreeSpace in Allocator. Not thread-safe; Allocator
// wraps it with its lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

// A container region. 0 means "no region": the global free space.
using RegionId = std::uint32_t;

class RegionMap {
 public:
  struct Slice {
    Extent extent;
    RegionId region = 0;
  };

  // Adds `x` to region r's reservation (r != 0). No block of `x` may be
  // reserved yet (the caller checks that with for_each_piece). Slices of r
  // that touch `x` are merged with it; returns the merged slice.
  Extent add(RegionId r, Extent x);

  // Removes `x` from the reservation of whichever region holds it. `x` must
  // lie inside a single slice (one region's free run always does); returns
  // that slice's region, or 0 (and changes nothing) if no slice holds all of x.
  RegionId remove(Extent x);

  // Removes every slice of r; returns them in ascending order.
  std::vector<Extent> remove_region(RegionId r);

  // The slice that holds block `b`, if any.
  std::optional<Slice> slice_at(BlockNo b) const;
  RegionId owner(BlockNo b) const;

  // Splits `e` into maximal pieces that have a single owner (0 for the
  // unreserved gaps) and visits them in ascending order. O(log n + pieces).
  void for_each_piece(Extent e, const std::function<void(const Extent&, RegionId)>& fn) const;

  std::vector<Extent> slices_of(RegionId r) const;     // ascending, coalesced
  std::optional<Extent> last_slice_of(RegionId r) const;  // the highest one
  std::uint64_t reserved_blocks(RegionId r) const;
  std::size_t slice_count() const { return index_.size(); }

  // Visits every slice in ascending order.
  void for_each(const std::function<void(const Slice&)>& fn) const;

  // Checks that slices are non-empty and disjoint, that each region's slices
  // are coalesced and that both indexes and the block counts agree (O(n);
  // for tests).
  bool consistent() const;

 private:
  struct Entry {
    std::uint64_t len;
    RegionId region;
  };
  struct Owned {
    std::map<BlockNo, std::uint64_t> slices;  // start -> len
    std::uint64_t blocks = 0;
  };
  using Index = std::map<BlockNo, Entry>;

  void insert_slice(RegionId r, Extent x);
  void erase_slice(Index::iterator it);

  Index index_;                        // every slice of every region
  std::map<RegionId, Owned> regions_;  // per region; only regions with slices
};

}  // namespace dhfs
