#include "fs/chunk_index.h"

#include "fs/content_hash.h"

namespace dhfs {

ChunkKey ChunkIndex::key_of(std::span<const std::byte> data) {
  const ContentHash h = hash_of(data);
  return {h.lo, h.hi, static_cast<std::uint32_t>(data.size())};
}

void ChunkIndex::remember(const ChunkKey& key, const ChunkHome& home) {
  std::lock_guard lk(mu_);
  auto [it, inserted] = map_.insert_or_assign(key, home);
  (void)it;
  if (!inserted) return;
  order_.push_back(key);
  // Forgotten keys stay in order_ until they reach the front; the bound on
  // order_ keeps insert/forget churn from growing it without end.
  while ((map_.size() > max_ || order_.size() > 2 * max_) && !order_.empty()) {
    map_.erase(order_.front());
    order_.pop_front();
  }
}

std::optional<ChunkHome> ChunkIndex::find(const ChunkKey& key) const {
  std::lock_guard lk(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

void ChunkIndex::forget(const ChunkKey& key) {
  std::lock_guard lk(mu_);
  map_.erase(key);  // (its place in order_ goes when it reaches the front)
}

std::size_t ChunkIndex::size() const {
  std::lock_guard lk(mu_);
  return map_.size();
}

}  // namespace dhfs
