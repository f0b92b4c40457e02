#include "fs/dedup_index.h"

#include <algorithm>

namespace dhfs {

void DedupIndex::add(const DedupKey& key, DedupHolder holder) {
  auto& holders = map_[key];
  for (DedupHolder& h : holders)
    if (h.ino == holder.ino) {
      h = holder;
      return;
    }
  if (holders.size() < kHoldersPerKey) holders.push_back(holder);
}

void DedupIndex::remove(const DedupKey& key, Ino ino) {
  auto it = map_.find(key);
  if (it == map_.end()) return;
  std::erase_if(it->second, [&](const DedupHolder& h) { return h.ino == ino; });
  if (it->second.empty()) map_.erase(it);
}

const std::vector<DedupHolder>* DedupIndex::find(const DedupKey& key) const {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : &it->second;
}

}  // namespace dhfs
