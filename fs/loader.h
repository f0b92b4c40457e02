// Loading: everything between a device and an in-memory inode table. Reads
// and verifies the superblock (falling back to the backup copy), picks the
// newest valid checkpoint root, reads its stream and replays the journal.
// Shared by mounting and by fsck.dhfs; cross-object invariants are checked
// by the callers.
#pragma once

#include <cstdint>
#include <string>

#include "fs/device.h"
#include "fs/format.h"
#include "fs/inode_table.h"
#include "fs/journal.h"

namespace dhfs {

struct LoadedState {
  Superblock sb;
  bool used_backup_superblock = false;
  CheckpointRoot root;
  int root_slot = 0;  // 0 (A) or 1 (B)
  InodeTable inodes;
  ReplayStats replay;
  std::uint64_t next_generation = 1;
  // Records that referred to objects missing at the time they were applied
  // (expected in small numbers after a fuzzy checkpoint).
  std::uint64_t skipped_records = 0;
};

// Reads and validates only the superblock (and backup).
bool read_superblock(Device& dev, Superblock& sb, bool& used_backup, std::string& error);

bool load_state(Device& dev, LoadedState& state, std::string& error);

// Applies one record to an inode table (checkpoint load and journal replay).
// Returns false if the record refers to an object that is missing.
bool apply_record(InodeTable& table, const Record& r, std::uint64_t& max_generation);

}  // namespace dhfs
