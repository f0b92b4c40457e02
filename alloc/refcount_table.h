// RefcountTable: how many block maps reference each device block, for the
// blocks referenced more than once. A block that is allocated but not in the
// table has exactly one reference (the common case costs nothing); sharing
// (clones, copy-ups, dedup) adds entries and the last reference going away
// frees the block.
//
// Ranges are kept coalesced: adjacent ranges with equal counts are one
// entry. Not thread-safe: the filesystem changes it under its metadata lock,
// in the same transaction as the block maps that justify the counts.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

// A range whose count changed, with the count it has now (1: no longer
// shared, 0: no longer referenced). Journaled as REFCOUNT records.
struct RefcountChange {
  Extent extent;
  std::uint32_t count = 0;
};

class RefcountTable {
 public:
  static constexpr std::uint32_t kMaxCount = 0xffffffffu;

  // One more reference to every block of `e` (each already has one).
  void add_ref(Extent e, std::vector<RefcountChange>* changes = nullptr);

  // One reference less to every block of `e`; the runs whose last
  // reference went are appended to `freed`.
  void drop_ref(Extent e, std::vector<Extent>& freed, std::vector<RefcountChange>* changes = nullptr);

  // Sets the count of every block of `e` (loading, replay): 0 or 1 removes
  // the range from the table.
  void set(Extent e, std::uint32_t count);

  // References to block `b`: 1 if it is not in the table.
  std::uint32_t refs(BlockNo b) const;
  bool any_shared(Extent e) const;

  // Visits `e` as consecutive runs of equal count (1 for unshared runs).
  void for_runs(Extent e, const std::function<void(Extent, std::uint32_t)>& fn) const;
  // Visits every shared range.
  void for_each(const std::function<void(Extent, std::uint32_t)>& fn) const;
  // Visits up to `max` shared ranges starting at or after block `from`;
  // returns the block to continue from, or 0 when there are no more.
  BlockNo for_each_from(BlockNo from, std::size_t max, const std::function<void(Extent, std::uint32_t)>& fn) const;

  // Blocks referenced more than once, and the blocks sharing saves:
  // sum over shared blocks of (count - 1).
  std::uint64_t shared_blocks() const { return shared_blocks_; }
  std::uint64_t saved_blocks() const { return saved_blocks_; }
  std::size_t range_count() const { return ranges_.size(); }
  void clear();

 private:
  struct Range {
    std::uint64_t len;
    std::uint32_t count;
  };
  using Map = std::map<BlockNo, Range>;

  // Makes `b` a range boundary (splits the range containing it).
  void split_at(BlockNo b);
  // Merges the range at `it` with equal-count neighbours.
  void merge_around(Map::iterator it);
  void account(std::uint64_t len, std::uint32_t count, int sign);
  // Applies `delta` (+1/-1) to every block of `e`.
  void adjust(Extent e, int delta, std::vector<Extent>* freed, std::vector<RefcountChange>* changes);

  Map ranges_;  // start -> range, counts >= 2 only
  std::uint64_t shared_blocks_ = 0;
  std::uint64_t saved_blocks_ = 0;
};

}  // namespace dhfs
