// FreeSpace: a set of free block extents, always coalesced, indexed both by
// start block (for "near this block" searches) and by length (for best fit).
// Not thread-safe; Allocator wraps it with a lock and keeps one FreeSpace per
// container region next to the global one.
//
// Every operation is O(log n) in the number of free extents. An empty extent
// has no blocks, so the checks below hold for it vacuously and it changes
// nothing; an extent whose end would pass 2^64 is rejected (false).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "alloc/extent.h"
#include "alloc/run_tree.h"

namespace dhfs {

class FreeSpace {
 public:
  // Runs at least this long are "long": what a checkpoint stream is made of
  // (see Allocator's metadata reserve). 256 blocks, 1 MiB.
  static constexpr std::uint64_t kLongRun = 256;

  FreeSpace() = default;
  // A copy has the same runs but adds to no shared tally.
  FreeSpace(const FreeSpace& other);
  FreeSpace& operator=(const FreeSpace& other);
  ~FreeSpace();

  // Keeps *tally up to date with long_run_blocks() from now on, as one term
  // of a sum over several sets (Allocator's, over global space and every
  // region). *tally must outlive this set, or the next call.
  void add_long_runs_to(std::uint64_t* tally);

  // Adds `e` as free. Returns false (and changes nothing) if any block of `e`
  // is already free. Adjacent free extents are merged.
  bool insert(Extent e);

  // Marks `e` used. Returns false (and changes nothing) unless every block of
  // `e` is currently free. Splits the free extent that holds it.
  bool remove(Extent e);

  // True if every block of `e` is free.
  bool contains(Extent e) const;

  // True if some block of `e` is free.
  bool intersects(Extent e) const;

  // Takes up to `want` blocks in one extent of at least `min_len` blocks,
  // preferring, in order: the free extent that starts exactly at `hint`
  // (contiguous growth of a file); the first free extent at or after `hint`
  // with at least `min_len` blocks; the first such extent before `hint`.
  // The taken blocks come from the start of the chosen extent. min_len is
  // taken as at least 1 and at most `want`.
  std::optional<Extent> take_near(std::uint64_t want, std::uint64_t min_len, BlockNo hint);

  // Takes up to `want` blocks from the smallest free extent that holds all
  // `want`; if none does, from the largest one, provided it has `min_len`.
  // Ties go to the extent with the lowest start.
  std::optional<Extent> take_best_fit(std::uint64_t want, std::uint64_t min_len);

  // The free extent take_best_fit would take from, without taking anything.
  std::optional<Extent> find_best_fit(std::uint64_t want, std::uint64_t min_len) const;

  // find_best_fit among the runs shorter than kLongRun only.
  std::optional<Extent> find_short_fit(std::uint64_t want, std::uint64_t min_len) const;

  // The free blocks inside `range`, as runs clipped to it, ascending.
  // O(log n + runs found).
  std::vector<Extent> runs_within(Extent range) const;

  // The maximal free run that contains block `b`, if `b` is free.
  std::optional<Extent> run_containing(BlockNo b) const;

  std::uint64_t free_blocks() const { return free_blocks_; }
  // Free blocks in runs of at least kLongRun blocks.
  std::uint64_t long_run_blocks() const { return long_run_blocks_; }
  std::size_t extent_count() const { return by_start_.size(); }
  std::uint64_t largest() const;

  // Visits free extents in ascending start order.
  void for_each(const std::function<void(const Extent&)>& fn) const;

  // Checks that the extents are coalesced and that both indexes and the
  // block count agree (O(n); for tests and fsck).
  bool consistent() const;

 private:
  void add_run(BlockNo start, std::uint64_t len);
  void drop_run(const Extent& run);
  Extent take_from(const Extent& run, std::uint64_t want);
  std::optional<Extent> best_fit_below(std::uint64_t want, std::uint64_t min_len, std::uint64_t limit) const;

  RunTree by_start_;                                    // knows each subtree's longest run
  std::set<std::pair<std::uint64_t, BlockNo>> by_len_;  // (len, start)
  std::uint64_t free_blocks_ = 0;
  std::uint64_t long_run_blocks_ = 0;
  std::uint64_t* tally_ = nullptr;  // see add_long_runs_to
};

}  // namespace dhfs
