#include "alloc/refcount_table.h"

#include <algorithm>

namespace dhfs {

void RefcountTable::account(std::uint64_t len, std::uint32_t count, int sign) {
  if (count < 2) return;
  if (sign > 0) {
    shared_blocks_ += len;
    saved_blocks_ += len * (count - 1);
  } else {
    shared_blocks_ -= len;
    saved_blocks_ -= len * (count - 1);
  }
}

void RefcountTable::split_at(BlockNo b) {
  auto it = ranges_.upper_bound(b);
  if (it == ranges_.begin()) return;
  --it;
  BlockNo start = it->first;
  Range r = it->second;
  if (b <= start || b >= start + r.len) return;
  it->second.len = b - start;
  ranges_.emplace(b, Range{start + r.len - b, r.count});
}

void RefcountTable::merge_around(Map::iterator it) {
  if (it == ranges_.end()) return;
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.len == it->first && prev->second.count == it->second.count) {
      prev->second.len += it->second.len;
      ranges_.erase(it);
      it = prev;
    }
  }
  auto next = std::next(it);
  if (next != ranges_.end() && it->first + it->second.len == next->first && next->second.count == it->second.count) {
    it->second.len += next->second.len;
    ranges_.erase(next);
  }
}

void RefcountTable::adjust(Extent e, int delta, std::vector<Extent>* freed, std::vector<RefcountChange>* changes) {
  if (e.empty()) return;
  split_at(e.start);
  split_at(e.end());
  // Walk e: stored ranges change count; gaps (count 1) become 2 or 0.
  BlockNo cur = e.start;
  auto it = ranges_.lower_bound(e.start);
  std::vector<BlockNo> touched;
  while (cur < e.end()) {
    if (it != ranges_.end() && it->first == cur) {
      Range& r = it->second;
      account(r.len, r.count, -1);
      std::uint32_t now = delta > 0 ? (r.count == kMaxCount ? r.count : r.count + 1) : r.count - 1;
      if (changes) changes->push_back({{cur, r.len}, now});
      cur += r.len;
      if (now < 2) {
        it = ranges_.erase(it);
      } else {
        r.count = now;
        account(r.len, now, +1);
        touched.push_back(it->first);
        ++it;
      }
      continue;
    }
    // A gap: blocks with one reference.
    BlockNo gap_end = (it != ranges_.end()) ? std::min<BlockNo>(it->first, e.end()) : e.end();
    Extent gap{cur, gap_end - cur};
    if (delta > 0) {
      it = ranges_.emplace_hint(it, gap.start, Range{gap.len, 2});
      account(gap.len, 2, +1);
      touched.push_back(gap.start);
      ++it;
      if (changes) changes->push_back({gap, 2});
    } else {
      if (freed) freed->push_back(gap);
      if (changes) changes->push_back({gap, 0});
    }
    cur = gap_end;
  }
  for (BlockNo b : touched) {
    auto at = ranges_.find(b);
    if (at != ranges_.end()) merge_around(at);
  }
  // Neighbours outside e may now be mergeable with its edges.
  auto left = ranges_.lower_bound(e.start);
  if (left != ranges_.end()) merge_around(left);
  if (left != ranges_.begin()) merge_around(std::prev(ranges_.lower_bound(e.start)));
}

void RefcountTable::add_ref(Extent e, std::vector<RefcountChange>* changes) { adjust(e, +1, nullptr, changes); }

void RefcountTable::drop_ref(Extent e, std::vector<Extent>& freed, std::vector<RefcountChange>* changes) {
  adjust(e, -1, &freed, changes);
}

void RefcountTable::set(Extent e, std::uint32_t count) {
  if (e.empty()) return;
  split_at(e.start);
  split_at(e.end());
  for (auto it = ranges_.lower_bound(e.start); it != ranges_.end() && it->first < e.end();) {
    account(it->second.len, it->second.count, -1);
    it = ranges_.erase(it);
  }
  if (count >= 2) {
    auto it = ranges_.emplace(e.start, Range{e.len, count}).first;
    account(e.len, count, +1);
    merge_around(it);
  }
}

std::uint32_t RefcountTable::refs(BlockNo b) const {
  auto it = ranges_.upper_bound(b);
  if (it == ranges_.begin()) return 1;
  --it;
  return b < it->first + it->second.len ? it->second.count : 1;
}

bool RefcountTable::any_shared(Extent e) const {
  if (e.empty()) return false;
  auto it = ranges_.upper_bound(e.start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.len > e.start) return true;
  }
  return it != ranges_.end() && it->first < e.end();
}

void RefcountTable::for_runs(Extent e, const std::function<void(Extent, std::uint32_t)>& fn) const {
  BlockNo cur = e.start;
  auto it = ranges_.upper_bound(e.start);
  if (it != ranges_.begin() && std::prev(it)->first + std::prev(it)->second.len > e.start) --it;
  while (cur < e.end()) {
    if (it != ranges_.end() && it->first <= cur) {
      BlockNo end = std::min<BlockNo>(it->first + it->second.len, e.end());
      fn({cur, end - cur}, it->second.count);
      cur = end;
      ++it;
    } else {
      BlockNo end = it != ranges_.end() ? std::min<BlockNo>(it->first, e.end()) : e.end();
      fn({cur, end - cur}, 1);
      cur = end;
    }
  }
}

void RefcountTable::for_each(const std::function<void(Extent, std::uint32_t)>& fn) const {
  for (const auto& [start, r] : ranges_) fn({start, r.len}, r.count);
}

BlockNo RefcountTable::for_each_from(BlockNo from, std::size_t max,
                                     const std::function<void(Extent, std::uint32_t)>& fn) const {
  auto it = ranges_.lower_bound(from);
  for (std::size_t n = 0; it != ranges_.end() && n < max; ++it, ++n) fn({it->first, it->second.len}, it->second.count);
  return it == ranges_.end() ? 0 : it->first;
}

void RefcountTable::clear() {
  ranges_.clear();
  shared_blocks_ = saved_blocks_ = 0;
}

}  // namespace dhfs
