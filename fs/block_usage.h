// Which device blocks the block maps reference, and how often: the truth
// that allocation state and reference counts are checked against (at mount
// and by fsck.dhfs).
#pragma once

#include <cstdint>
#include <vector>

#include "alloc/extent.h"
#include "fs/inode_table.h"

namespace dhfs {

struct BlockRun {
  Extent extent;
  std::uint32_t refs = 0;  // block maps referencing every block of it
};

// Maximal runs of referenced blocks with equal reference counts, ascending
// and disjoint.
std::vector<BlockRun> referenced_runs(const InodeTable& inodes);

}  // namespace dhfs
