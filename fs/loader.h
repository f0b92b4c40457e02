// Loading: everything between a device and an in-memory inode table. Reads
// and verifies the superblock (falling back to the backup copy), picks the
// newest valid checkpoint root, reads its stream and replays the journal.
// Shared by mounting and by fsck.dhfs; cross-object invariants are checked
// by the callers.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "alloc/refcount_table.h"
#include "fs/device.h"
#include "fs/format.h"
#include "fs/inode_table.h"
#include "fs/journal.h"

namespace dhfs {

// A container region as the records describe it.
struct RegionState {
  std::uint32_t id = 0;
  Ino root = 0;
  std::uint32_t flags = 0;
  std::vector<Extent> reserved;
};

// Everything the metadata records describe.
struct MetaState {
  InodeTable inodes;
  RefcountTable refs;
  std::map<std::uint32_t, RegionState> regions;
  std::map<std::string, std::string, std::less<>> config;
  std::uint64_t max_generation = 0;
  // Highest inode number a record may create (the table is indexed by
  // number): see max_inode_number(). A record beyond it is refused.
  Ino max_ino = kMaxIno;
  // Longest run of device blocks one extent record may map: no more than
  // the device has (its total_blocks). A longer one is refused: a 2^50-block
  // mapping would be split into 2^18 extents in memory.
  std::uint64_t max_extent_blocks = kMaxBlock;
};

// Inode numbers are handed out densely (freed numbers first), so no valid
// filesystem uses a number above the count of inodes that can be live at
// once, and every live inode has an inode record on the device (checkpoint
// or journal). A damaged record with a huge number would otherwise resize
// the inode table to gigabytes.
Ino max_inode_number(const Superblock& sb);

// Sets the bounds of `st` (max_ino, max_extent_blocks) for the device `sb`
// describes; the loader and fsck call it before applying any record.
void bound_to_device(MetaState& st, const Superblock& sb);

// Block 0 was unusable and the superblock came from its backup.
struct SuperblockFallback {
  std::string why;  // what is wrong with block 0
  BlockNo backup_block = 0;
};

struct LoadedState {
  Superblock sb;
  std::optional<SuperblockFallback> superblock_fallback;
  CheckpointRoot root;
  int root_slot = 0;  // 0 (A) or 1 (B)
  MetaState meta;
  InodeTable& inodes = meta.inodes;
  ReplayStats replay;
  std::uint64_t next_generation = 1;
  // Records that referred to objects missing at the time they were applied
  // (expected in small numbers after a fuzzy checkpoint).
  std::uint64_t skipped_records = 0;
};

// Reads and validates only the superblock; `fallback` is set where the
// backup had to stand in for block 0.
bool read_superblock(Device& dev, Superblock& sb, std::optional<SuperblockFallback>& fallback, std::string& error);

// Where to look for the backup superblock when block 0 (`primary`, as
// read) is unusable, in order: the device's last block, where mkfs and a
// grow to the whole device put it; then the block the damaged primary still
// names (its total_blocks − 1), which is where the backup is when the
// device has grown since mkfs or the last grow.
std::vector<BlockNo> backup_superblock_candidates(std::span<const std::uint8_t> primary, std::uint64_t device_bytes);

// The superblock in block `b` if it is a valid backup there: it decodes, its
// own total_blocks puts its backup at `b`, and the device holds it (and `b`).
// Otherwise nullopt and `why` (a read error included).
std::optional<Superblock> read_backup_superblock(Device& dev, BlockNo b, std::string& why);

// The first of `candidates` that holds a valid backup (read_backup_superblock),
// its block in `where`; otherwise nullopt and `why` for the last candidate.
std::optional<Superblock> first_backup_superblock(Device& dev, const std::vector<BlockNo>& candidates, BlockNo& where,
                                                  std::string& why);

bool load_state(Device& dev, LoadedState& state, std::string& error);

// Applies one record to the state (checkpoint load and journal replay).
// Returns false if the record refers to an object that is missing, creates
// an inode above state.max_ino or maps more than state.max_extent_blocks.
bool apply_record(MetaState& state, const Record& r);

}  // namespace dhfs
