#include "fs/unshared_blocks.h"

#include <algorithm>

namespace dhfs {

void UnsharedBlocks::add(Extent e) {
  if (e.len == 0) return;
  std::lock_guard lk(mu_);
  by_start_.emplace(e.start, e.len);
  longest_ = std::max(longest_, e.len);
  pending_.push_back(e);
}

void UnsharedBlocks::committed(std::uint64_t seq) {
  std::lock_guard lk(mu_);
  if (pending_.empty()) return;
  if (!committed_.empty() && committed_.back().first >= seq) {
    // Not newer than the last commit (not expected): joining that group
    // keeps the entries until a sequence number that covers both.
    auto& last = committed_.back().second;
    last.insert(last.end(), pending_.begin(), pending_.end());
    committed_.back().first = std::max(committed_.back().first, seq);
  } else {
    committed_.emplace_back(seq, std::move(pending_));
  }
  pending_.clear();
}

void UnsharedBlocks::durable(std::uint64_t seq) {
  std::lock_guard lk(mu_);
  while (!committed_.empty() && committed_.front().first <= seq) {
    for (const Extent& e : committed_.front().second) {
      auto [from, to] = by_start_.equal_range(e.start);
      auto it = std::find_if(from, to, [&](const auto& kv) { return kv.second == e.len; });
      if (it != to) by_start_.erase(it);
    }
    committed_.pop_front();
  }
  if (by_start_.empty()) longest_ = 0;
}

std::vector<Extent> UnsharedBlocks::overlapping(Extent e) const {
  std::vector<Extent> out;
  std::lock_guard lk(mu_);
  if (by_start_.empty() || e.len == 0) return out;
  // No entry starting this far before `e` can reach into it.
  const BlockNo from = e.start >= longest_ ? e.start - longest_ + 1 : 0;
  for (auto it = by_start_.lower_bound(from); it != by_start_.end() && it->first < e.end(); ++it) {
    const BlockNo a = std::max(it->first, e.start), b = std::min(it->first + it->second, e.end());
    if (a < b) out.push_back({a, b - a});
  }
  return out;
}

std::size_t UnsharedBlocks::size() const {
  std::lock_guard lk(mu_);
  return by_start_.size();
}

}  // namespace dhfs
