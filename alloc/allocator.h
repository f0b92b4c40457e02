// Allocator: the thread-safe extent allocator of one dhfs device.
//
// It owns the free space of the data area. Space freed by a metadata change
// is only handed out again once that change is durable (free_after +
// mark_durable), so a crash can never leave two files pointing at the same
// block. A reserve of blocks is kept back for metadata (checkpoints), so that
// a device full of data can still persist its metadata.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "alloc/extent.h"
#include "alloc/free_space.h"

namespace dhfs {

struct AllocRequest {
  std::uint64_t want = 1;      // blocks wanted
  std::uint64_t min_len = 1;   // smallest acceptable single extent
  BlockNo hint = 0;            // block to allocate at or after (0: no preference)
  bool metadata = false;       // may dip into the metadata reserve
};

class Allocator {
 public:
  // All of `area` starts out free.
  explicit Allocator(Extent area);

  // Mount time: marks `e` as in use (it is referenced by metadata). Returns
  // false if some block of `e` is outside the area or already in use.
  bool mark_used(Extent e);

  // One extent of between req.min_len and req.want blocks, or nullopt
  // (ENOSPC). Large requests get large contiguous extents: when nothing
  // starts at the hint, a request of 256 blocks or more is served best-fit
  // from the free space rather than from the first gap after the hint.
  std::optional<Extent> allocate(const AllocRequest& req);

  // Exactly req.want blocks in as few extents as possible (each extent is
  // requested near the end of the previous one), appended to `out`. On
  // failure nothing is allocated and false is returned.
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

  void set_metadata_reserve(std::uint64_t blocks);

  Extent area() const { return area_; }
  std::uint64_t free_blocks() const;     // allocatable now, reserve included
  std::uint64_t pending_blocks() const;  // freed, waiting for durability
  std::uint64_t available_blocks() const;  // what data writers may still get
  std::size_t free_extent_count() const;

  // Snapshot of the free extents (tests, fsck, dhfsctl).
  std::vector<Extent> free_extents() const;

 private:
  const Extent area_;
  mutable std::mutex mu_;
  FreeSpace free_;
  std::multimap<std::uint64_t, Extent> pending_;  // seq -> extent freed by it
  FreeSpace pending_space_;  // the blocks of pending_, to catch double frees in O(log n)
  std::optional<std::uint64_t> durable_seq_;  // highest seq passed to mark_durable
  std::uint64_t reserve_ = 0;

  // All private helpers expect mu_ to be held.
  std::uint64_t grantable(bool metadata) const;
  std::optional<Extent> take_at(BlockNo hint, std::uint64_t want, std::uint64_t min_len);
  std::optional<Extent> take_placed(std::uint64_t want, std::uint64_t min_len, BlockNo hint, bool big);
  std::optional<Extent> take_piece(std::uint64_t want, std::uint64_t min_len, BlockNo hint);
  const char* check_free(Extent e) const;
};

}  // namespace dhfs
