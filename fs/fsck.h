// Checker: the consistency check and repair behind fsck.dhfs, as a library
// (no FUSE, no command line), so that unit tests drive it directly.
//
// What is checked, in order:
//   1. Superblock: the primary (block 0) and the backup (last block) decode,
//      and agree on UUID, geometry, features, creation time and label.
//   2. Checkpoint root slots A and B: which one is current. A slot that does
//      not decode is fine when it was never written (all zeros) and only
//      worth a note otherwise, as long as the newest slot is valid.
//   3. The current checkpoint stream (every frame checksum) and the journal
//      (every batch checksum), loaded the way mount loads them. A damaged
//      checkpoint is unrecoverable. Journal damage with valid batches after
//      it is repairable: the state replayed up to the damage is kept, the
//      transactions from the damage on are lost, and the repaired
//      checkpoint's replay position lies past all of them.
//   4. The tree: root is a directory; every entry has a valid name, points at
//      an existing inode and carries its type; every directory has exactly
//      one name (the root none) and is reachable from the root. A directory
//      keeps the name by which a breadth-first walk from the root reaches it
//      first (the one closest to the root, which also cuts cycles); other
//      names are removed. Link counts (files: the entries naming them;
//      directories: 2 + subdirectories). Orphans (no names, nlink 0) are a
//      note, not a problem: the next mount frees them, and so does a repair
//      run (which then still exits 0 if nothing else was wrong). Lost inodes
//      (nlink > 0 but unreachable) are relinked into /lost+found (created if
//      missing) as "#<ino>"; of a detached subtree only its top is relinked.
//      Symlink targets of 1..4095 bytes; block maps on regular files only.
//   5. Allocation: every file extent lies inside the data area, carries only
//      known flags and overlaps no block of the checkpoint stream (such file
//      blocks are unmapped). Files may share blocks with each other (clones,
//      copy-ups, dedup), but every reference count must equal the number of
//      block maps referencing the block, and blocks no map references have
//      no count; the block maps are the truth, repair rebuilds the counts.
//   6. Regions: every region has a root that exists, is a directory that is
//      no orphan, carries kInodeRegionRoot and names the region in its
//      `region` field; otherwise the region is dropped. (Id 0, root 0, empty
//      slices, slices at block 0 and more than kMaxRegionSlices slices in
//      one record are refused by the record decoder: an unrecoverable
//      checkpoint, or journal damage.) Unknown region flags (none are
//      defined) and unknown inode flags are cleared. The mark
//      kInodeRegionRoot is cleared from every inode that is not the root of
//      an existing region (or not a directory). Reserved slices are
//      clipped to the data area (dropped if entirely outside), overlapping
//      slices of one region are coalesced, and of two regions reserving the
//      same blocks the one with the higher id gives them up; at most
//      kMaxRegionSlices slices per region (the largest are kept; giving up
//      blocks can split a slice in two). Touching or unordered slices are a
//      note (the same blocks). Slices
//      holding blocks of the current checkpoint stream are a note only
//      (reservations are soft: blocks in use are never handed out, and a
//      checkpoint written while space is short may legitimately land in a
//      reservation). Inodes whose `region` names no existing region are a
//      note as well: they simply allocate from global space.
//   7. Settings: known keys (region_patterns, region_size, cow_unit) whose
//      values a mount option would refuse are removed (the mount then uses
//      the default); unknown keys are kept, with a note.
//   8. Accounting: free space, per-region reservations (reserved, in use by
//      block maps, holding the checkpoint, free), cross-checked against the
//      allocator loaded as mount loads it. The format records no usage
//      counter per region, only its slices: usage is derived from the block
//      maps, so this cross-check is a consistency check of fsck's own
//      repairs (a disagreement is reported as a problem left, never seen in
//      tests). A file outside its region is no error (reservations are
//      soft).
//
// Repairs happen in memory first. When anything in the metadata changed, a
// complete new checkpoint of the repaired table is written into free blocks
// (neither the current stream nor any file extent is touched), then a root
// slot with the next sequence number into the slot that is not current, then
// a flush: the repair becomes visible atomically. Only after that is the old
// root slot retired (zeroed, as mount does) and are the superblock copies
// rewritten.
//
// Exit codes follow e2fsck: 0 clean, 1 problems found and all repaired,
// 4 problems left (every problem found without repair), 8 operational error
// (cannot read or write the device, not a dhfs filesystem).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fs/device.h"

namespace dhfs {

struct FsckOptions {
  bool repair = false;  // false: never write to the device
  // Where the backup superblock is if block 0 is unusable and the backup is
  // in neither place fsck looks by itself (backup_superblock_candidates):
  // fsck.dhfs -b, for a filesystem whose size the operator knows.
  std::optional<BlockNo> backup_block{};
};

inline constexpr int kFsckClean = 0;
inline constexpr int kFsckRepaired = 1;
inline constexpr int kFsckProblemsLeft = 4;
inline constexpr int kFsckOperationalError = 8;

// One container region as fsck found it (after repairs in memory).
struct FsckRegion {
  std::uint32_t id = 0;
  std::uint64_t root = 0;                // inode of its root directory
  std::string root_path;                 // "" if it has no path from the root
  std::uint64_t slices = 0;
  std::uint64_t reserved_blocks = 0;
  std::uint64_t used_blocks = 0;         // reserved blocks referenced by block maps (of any file)
  std::uint64_t checkpoint_blocks = 0;   // reserved blocks holding the checkpoint stream
  std::uint64_t free_blocks = 0;         // reserved - used - checkpoint: its unused reservation
  std::uint64_t inodes = 0;              // inodes whose `region` is this one
  std::uint64_t file_blocks = 0;         // blocks mapped by those inodes
  std::uint64_t file_blocks_inside = 0;  // of file_blocks, those inside its reservation
};

struct FsckReport {
  std::vector<std::string> problems;  // one line each, naming the object
  std::vector<std::string> repaired;  // what the repair did (repair mode only)
  std::vector<std::string> info;      // notes that are no problem (slots, orphans, replay)

  // The filesystem cannot be brought back into a consistent state
  // (damaged checkpoint, no valid root, truncated device, ...).
  bool unrecoverable = false;
  // Not a dhfs filesystem, or the device failed (exit 8).
  bool operational_error = false;
  std::string reason;  // one line for either of the above

  int exit_code = kFsckClean;
  std::uint64_t problems_left = 0;  // of `problems`, those not repaired

  // What was checked.
  std::uint64_t inodes = 0;
  std::uint64_t directories = 0;
  std::uint64_t regular_files = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t special_files = 0;
  std::uint64_t entries = 0;            // directory entries
  std::uint64_t extents = 0;            // file extents
  std::uint64_t file_blocks = 0;        // blocks referenced by files
  std::uint64_t checkpoint_blocks = 0;  // blocks of the current checkpoint stream
  std::uint64_t blocks_used = 0;        // file_blocks + checkpoint_blocks
  std::uint64_t data_blocks = 0;        // size of the data area
  std::uint64_t free_blocks = 0;        // data_blocks - blocks_used
  std::uint64_t shared_blocks = 0;      // blocks referenced by two or more block maps
  std::uint64_t saved_blocks = 0;       // sum over shared blocks of (references - 1)
  std::uint64_t orphans = 0;
  std::vector<FsckRegion> regions;      // ascending id
  std::uint64_t reserved_blocks = 0;    // sum over regions
  std::uint64_t stray_region_inodes = 0;  // inodes naming a region that does not exist
  std::uint64_t settings = 0;           // persisted settings kept
  std::uint64_t journal_batches = 0;    // replayed
  std::uint64_t journal_transactions_lost = 0;
  std::uint64_t checkpoint_seq = 0;     // of the current root
  bool wrote = false;                   // the device was modified

  bool clean() const { return exit_code == kFsckClean; }
};

class Checker {
 public:
  Checker(Device& dev, FsckOptions opts);
  ~Checker();
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  // Runs every check (and the repairs, if asked for) once.
  FsckReport run();

 private:
  struct Impl;
  Device& dev_;
  FsckOptions opts_;
};

}  // namespace dhfs
