#include "fs/pack_blocks.h"

#include <cstring>

namespace dhfs {

PackBlocks::Block* PackBlocks::current(RegionId region) {
  auto it = open_.find(region);
  return it == open_.end() ? nullptr : it->second.get();
}

PackBlocks::Block* PackBlocks::find(BlockNo pblk) {
  for (auto& [region, b] : open_)
    if (b->pblk == pblk) return b.get();
  return nullptr;
}

std::vector<BlockNo> PackBlocks::open(RegionId region, BlockNo pblk) {
  std::vector<BlockNo> unreferenced;
  auto close = [&](std::map<RegionId, std::unique_ptr<Block>>::iterator it) {
    if (!it->second->referenced) unreferenced.push_back(it->second->pblk);
    open_.erase(it);
  };
  if (auto it = open_.find(region); it != open_.end()) close(it);
  if (open_.size() >= kMaxOpen) close(open_.begin());
  auto b = std::make_unique<Block>();
  b->pblk = pblk;
  open_.emplace(region, std::move(b));
  return unreferenced;
}

std::uint32_t PackBlocks::append(Block& b, const std::byte* data, std::size_t n) {
  const std::uint32_t at = b.used;
  std::memcpy(b.bytes.data() + at, data, n);
  b.used += static_cast<std::uint32_t>(n);
  return at;
}

void PackBlocks::keep_open(std::vector<Extent>& to_free, std::size_t from) {
  for (auto& [region, b] : open_) {
    for (std::size_t i = from; i < to_free.size(); ++i) {
      const Extent e = to_free[i];
      if (!e.contains(b->pblk)) continue;
      b->referenced = false;
      // [start, pblk) stays in place, (pblk, end) goes to the end.
      to_free[i] = {e.start, b->pblk - e.start};
      if (b->pblk + 1 < e.end()) to_free.push_back({b->pblk + 1, e.end() - b->pblk - 1});
      if (to_free[i].empty()) to_free.erase(to_free.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
}

}  // namespace dhfs
