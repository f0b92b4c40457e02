// Allocator: the thread-safe extent allocator of one dhfs device.
//
// It owns the free space of the data area. Space freed by a metadata change
// is only handed out again once that change is durable (free_after +
// mark_durable), so a crash can never leave two files pointing at the same
// block. A reserve of blocks is kept back for metadata (checkpoints), so that
// a device full of data can still persist its metadata. A checkpoint stream
// is made of runs of at least FreeSpace::kLongRun blocks, so the reserve is
// kept in such runs: when a data extent would leave fewer free blocks in
// long runs than the reserve, data gets short runs instead (from its region,
// global space, then other regions), or else the head of a long run, no more
// than leaves the reserve in long runs. Data may therefore be refused up to
// kLongRun - 1 blocks before available_blocks() reaches 0.
//
// Container regions. A region is a soft reservation of device space for one
// container or image layer, so that everything it writes lands close
// together. It holds a set of slices (runs of blocks, coalesced); the free
// blocks of its slices are its unused reservation, which only requests for
// that region get while global space lasts. Every free block therefore sits
// in exactly one free set: the global one, or that of the region whose slice
// holds it. Requests with AllocRequest::region = r are served, in order:
//   1. from r's unused reservation, placed near the hint as global requests
//      are (exactly at the hint, first fit at or after it, wrapping; best fit
//      from 256 blocks on);
//   2. by growing r in place: global free space adjacent to one of r's slices
//      (the slice holding the hint or ending right before it, then r's last
//      slice; at its end, else at its start), max(want, region growth) blocks
//      or as much as that run has;
//   3. by a new slice for r: best fit of max(want, region growth) in global
//      free space, else the largest global free run;
//   4. by reclaiming unused reservation of other regions (the one with the
//      most unused reservation first that has a run of min_len; best fit
//      inside it, taken from the end of that run, away from where the region
//      allocates next), which then join r's reservation;
//   and only then fail. Requests without a region (and metadata requests) use
//   global free space first and then reclaim unused reservations the same way:
//   reservations are soft, so there is no ENOSPC while any block is free. The
//   metadata reserve counts all free space, global and reserved alike.
// Reclaimed blocks leave the reservation of the region they came from, which
// take_changed_regions() then reports, so that the caller can persist it.
// A freed block returns to the free set of the region that reserves it then,
// or to global free space. Regions live in memory only; the caller persists
// what take_changed_regions() reports and hands it back through load_region
// at mount. Everything runs under one mutex, a leaf lock never held across
// I/O; each operation is O(log n) in the number of free runs and slices,
// except that reclaiming scans the regions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "alloc/extent.h"
#include "alloc/free_space.h"
#include "alloc/region_map.h"

namespace dhfs {

struct AllocRequest {
  std::uint64_t want = 1;      // blocks wanted
  std::uint64_t min_len = 1;   // smallest acceptable single extent
  BlockNo hint = 0;            // block to allocate at or after (0: no preference)
  bool metadata = false;       // may dip into the metadata reserve; ignores `region`
  RegionId region = 0;         // allocate for this region (0 or unknown: global space)
};

// A region as Allocator sees it (Allocator::regions(), region()).
struct RegionInfo {
  RegionId id = 0;
  std::vector<Extent> reserved;        // coalesced, ascending: the slices the region holds
  std::uint64_t reserved_blocks = 0;   // sum of reserved
  std::uint64_t free_blocks = 0;       // reserved but not allocated (its unused reservation)
  std::uint64_t reclaimed_blocks = 0;  // taken back from it under pressure so far (since mount)
};

// Where an allocator says that it ignored a free that cannot be right (a bug
// or damaged metadata): one line, to stderr unless the filesystem hands its
// own log here (a daemon in the background has no stderr).
void set_allocator_reporter(void (*report)(std::string_view line));

class Allocator {
 public:
  // How much a full region grows by at least, unless set_region_growth.
  static constexpr std::uint64_t kDefaultRegionGrowth = 16384;  // 64 MiB

  // All of `area` starts out free.
  explicit Allocator(Extent area);

  // Mount time: marks `e` as in use (it is referenced by metadata), whichever
  // free set holds it. Returns false (and changes nothing) if some block of
  // `e` is outside the area or already in use.
  bool mark_used(Extent e);

  // One extent of between req.min_len and req.want blocks, or nullopt
  // (ENOSPC). Large requests get large contiguous extents: when nothing
  // starts at the hint, a request of 256 blocks or more is served best-fit
  // from the free space rather than from the first gap after the hint.
  // With req.region, the region order described at the top applies.
  std::optional<Extent> allocate(const AllocRequest& req);

  // Exactly req.want blocks in as few extents as possible (each extent is
  // requested near the end of the previous one), appended to `out`. On
  // failure nothing is allocated and false is returned; reservation changes
  // made on the way (a region grown, a reservation reclaimed) stay. Only
  // fragmentation can make it fail once req.want blocks are available.
  bool allocate_all(const AllocRequest& req, std::vector<Extent>& out);

  // Returns blocks that were never referenced by durable metadata.
  //
  // Freeing a block that is outside the area, already free or already
  // pending is a caller bug; honouring it could hand the block out twice, so
  // it is reported on stderr and the whole call is ignored.
  void free_now(Extent e);

  // Returns blocks whose release is recorded in journal transaction `seq`;
  // they become allocatable once mark_durable(s) was called with s >= seq
  // (at once if that call already happened). Bad frees as for free_now.
  void free_after(Extent e, std::uint64_t seq);
  void mark_durable(std::uint64_t seq);

  // Blocks of total free space (global and reserved) that only metadata
  // requests may take.
  void set_metadata_reserve(std::uint64_t blocks);

  // --- Regions ---

  // Creates region `id` and reserves `blocks` for it: one contiguous slice
  // from the smallest global free run that holds them all, else as much as
  // possible from the largest runs. Reservations are soft: with little global
  // free space it may reserve less, or nothing. false if id is 0 or exists.
  bool create_region(RegionId id, std::uint64_t blocks);

  // Mount: region `id` (created if new) holds `reserved`. Call after
  // construction and before mark_used; mark_used then removes used blocks
  // from whichever free set holds them. Slices are clipped to the area;
  // slices overlapping another region's are dropped. Any such fix-up marks
  // the region changed (take_changed_regions). id 0 is ignored.
  void load_region(RegionId id, const std::vector<Extent>& reserved);

  // Region `id` ends: its unused reservation returns to global free space at
  // once, and its blocks in use return there when they are freed later.
  // Unknown ids are ignored.
  void release_region(RegionId id);

  // How many blocks a full region grows by at least (default 64 MiB).
  void set_region_growth(std::uint64_t blocks);

  std::vector<RegionInfo> regions() const;  // ascending id
  std::optional<RegionInfo> region(RegionId id) const;
  RegionId region_of(BlockNo b) const;  // which region reserves block b (0: none)

  // The regions whose reserved slices changed since the last call (creation,
  // growth, reclaim in either direction, load fix-ups), ascending id, so that
  // the caller can persist them. Released regions are not reported.
  std::vector<RegionInfo> take_changed_regions();

  // --- Space ---

  Extent area() const;
  // The area grows by the blocks after its end up to `end` (the filesystem
  // grew onto a larger device); they join global free space, so a region
  // whose slice ends at the old end grows into them in place. Nothing
  // happens if `end` is not past the area's end.
  void extend_area(BlockNo end);
  std::uint64_t free_blocks() const;       // allocatable now: global + unused reservations, reserve included
  std::uint64_t pending_blocks() const;    // freed, waiting for durability
  std::uint64_t available_blocks() const;  // what data writers may still get: free_blocks() - reserve
  std::size_t free_extent_count() const;   // free_extents().size(); O(n)

  // Trim: takes every free block inside `window` (global or reserved,
  // whoever holds it) that lies in a free run of at least `min_len` blocks,
  // and marks it used, so that nothing hands it out while the caller
  // discards it; the caller then returns each run with free_now(), which
  // puts it back where it was (reservations are unchanged). Ascending.
  std::vector<Extent> take_for_trim(Extent window, std::uint64_t min_len);

  // Online discard: while on, every extent that a durable free releases
  // (mark_durable) is also noted, so that the caller can discard what
  // became free lately instead of all free space. take_released() hands the
  // notes over, ascending and coalesced, and clears them; some of those
  // blocks may be in use again by then (take_for_trim only takes free ones).
  void note_released(bool on);
  std::vector<Extent> take_released();

  // Snapshot of all free extents, whoever holds them, ascending and coalesced
  // across owners (tests, fsck, dhfsctl). O(n log n).
  std::vector<Extent> free_extents() const;

  // Checks every internal invariant: each free set and the slice index are
  // consistent, global free space lies outside every slice, each region's
  // free space inside its own slices, nothing is both free and pending, and
  // the counters agree. O(n log n); for tests.
  bool consistent() const;

 private:
  struct Region {
    FreeSpace free;               // its unused reservation
    std::uint64_t reclaimed = 0;  // blocks taken back from it since mount
  };

  mutable std::mutex mu_;
  Extent area_;  // grows with extend_area
  // Free blocks in long runs (FreeSpace::kLongRun) of free_ and every
  // region: each of those sets keeps it up to date, so it is declared first.
  std::uint64_t long_run_blocks_ = 0;
  FreeSpace free_;                     // global free space: outside every slice
  std::map<RegionId, Region> regions_;
  RegionMap slices_;                   // reserved slices: start -> {len, region}
  std::set<RegionId> changed_;         // reservation changed since take_changed_regions
  std::uint64_t growth_ = kDefaultRegionGrowth;
  std::uint64_t free_total_ = 0;       // free_ plus every region's free
  std::multimap<std::uint64_t, Extent> pending_;  // seq -> extent freed by it
  FreeSpace pending_space_;  // the blocks of pending_, to catch double frees in O(log n)
  std::optional<std::uint64_t> durable_seq_;  // highest seq passed to mark_durable
  std::uint64_t reserve_ = 0;
  bool note_released_ = false;
  std::vector<Extent> released_;  // noted since take_released(), in release order

  // All private helpers expect mu_ to be held.
  std::uint64_t grantable(bool metadata) const;
  FreeSpace& free_of(RegionId owner);
  const FreeSpace& free_of(RegionId owner) const;
  std::optional<Extent> take(RegionId region, std::uint64_t want, std::uint64_t min_len, BlockNo hint, bool big,
                             bool piece, bool metadata);
  std::optional<Extent> take_any(RegionId region, std::uint64_t want, std::uint64_t min_len, BlockNo hint, bool big,
                                 bool piece);
  std::optional<Extent> take_from_sets(RegionId region,
                                       const std::function<std::optional<Extent>(const FreeSpace&)>& pick);
  Region& region_entry(RegionId id);
  std::optional<Extent> grow_to_hint(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len, BlockNo hint);
  std::optional<Extent> grow_adjacent(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len,
                                      BlockNo hint);
  std::optional<Extent> grow_new_slice(RegionId id, Region& r, std::uint64_t want, std::uint64_t min_len,
                                       BlockNo hint);
  std::optional<Extent> reclaim(RegionId for_region, std::uint64_t want, std::uint64_t min_len);
  Extent reclaim_from(RegionId victim_id, Region& victim, Extent x, RegionId for_region);
  void reserve_global(RegionId id, Region& r, Extent x);
  void give_back(Extent e);
  const char* check_free(Extent e) const;
  RegionInfo info(RegionId id, const Region& r) const;
};

}  // namespace dhfs
