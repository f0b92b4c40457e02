// PackBlocks: the blocks small files are packed into.
//
// Why: most files of a container image are small, and a file in a block of
// its own wastes the rest of that block. Across the image set of the dedup
// benchmark that is 8% of the stored data (issue 4 asks for at most 5% over
// the sum of the distinct contents). A whole small file written from empty
// in one piece (what an untar or a layer extraction does) is instead
// appended to the open pack block of its region; its block map then holds
// one packed extent naming the block and the offset of its bytes (see
// kExtentPacked). Each packed file is one reference to the block, so the
// reference counts free it with its last file, and a write to a packed file
// copies its bytes out first (redirect-on-write), like any shared block.
//
// The open block's bytes are kept here so that each new file rewrites the
// whole block (with its neighbours' bytes unchanged) without reading it.
// A block whose files all went while it is still open is kept, not freed:
// the next file may still be packed into it.
//
// Not thread-safe: FileSystem guards it with meta_mu_ (exclusive).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "alloc/extent.h"
#include "alloc/region_map.h"

namespace dhfs {

class PackBlocks {
 public:
  // Open blocks at most (one per region that packed files lately): 4 KiB of
  // memory each.
  static constexpr std::size_t kMaxOpen = 64;

  struct Block {
    BlockNo pblk = 0;
    std::uint32_t used = 0;   // bytes handed out, from the start of the block
    bool referenced = false;  // some block map references the block
    std::array<std::byte, kBlockSize> bytes{};  // what the device block holds (zeros past `used`)
  };

  // The open block of `region`, or null.
  Block* current(RegionId region);
  // The open block `pblk`, or null.
  Block* find(BlockNo pblk);
  // Makes the new, unreferenced block `pblk` the open block of `region`.
  // Returns the blocks that stopped being open (the region's previous one,
  // one closed to stay within kMaxOpen) and that no map references: the
  // caller frees them.
  std::vector<BlockNo> open(RegionId region, BlockNo pblk);
  // Hands out `n` bytes of `b` (which must have room) for `data`; returns
  // their offset in the block.
  static std::uint32_t append(Block& b, const std::byte* data, std::size_t n);
  static bool fits(const Block& b, std::size_t n) { return b.used + n <= kBlockSize; }

  // Blocks `to_free[from..]` lost their last reference. Open blocks among
  // them are taken out of the list (split where needed) and marked
  // unreferenced: they stay allocated for the files still to come.
  void keep_open(std::vector<Extent>& to_free, std::size_t from);

  std::size_t open_count() const { return open_.size(); }

 private:
  std::map<RegionId, std::unique_ptr<Block>> open_;
};

}  // namespace dhfs
