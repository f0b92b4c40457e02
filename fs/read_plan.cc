#include "fs/read_plan.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

namespace dhfs {

ReadPlan::ReadPlan(std::span<const Segment> segs, std::uint64_t first, std::byte* dst) : first_(first), dst_(dst) {
  order_.reserve(segs.size());
  for (const Segment& s : segs) order_.push_back(&s);
  std::sort(order_.begin(), order_.end(), [](const Segment* a, const Segment* b) { return a->pblk < b->pblk; });
  group_by_device();
  choose_direct(segs);
  add_ios();
}

void ReadPlan::group_by_device() {
  for (std::size_t i = 0; i < order_.size(); ++i) {
    const Segment& s = *order_[i];
    if (!groups_.empty()) {
      Group& g = groups_.back();
      const BlockNo end = std::max<BlockNo>(g.end, s.pblk + s.len);
      if (s.pblk <= g.end + kReadGapBlocks && end - g.start <= kMaxSpanBlocks) {
        g.to = i + 1;
        g.end = end;
        // (order_ is by device block, so g.start is the first segment's.)
        if (g.linear_lblk && *g.linear_lblk + (s.pblk - g.start) != s.lblk) g.linear_lblk.reset();
        continue;
      }
    }
    groups_.push_back({i, i + 1, s.pblk, s.pblk + s.len, s.lblk});
  }
}

void ReadPlan::choose_direct(std::span<const Segment> segs) {
  const bool merged = std::any_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.to - g.from > 1; });
  if (!merged) {  // one I/O per segment, each into its own place
    for (Group& g : groups_) g.direct = true;
    return;
  }
  // The file blocks this read fills, in file order: [start, end).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> filled;
  filled.reserve(segs.size());
  for (const Segment& s : segs) filled.emplace_back(s.lblk, s.lblk + s.len);
  std::sort(filled.begin(), filled.end());
  auto all_filled = [&](std::uint64_t from, std::uint64_t to) {
    auto it = std::upper_bound(filled.begin(), filled.end(), std::pair{from, ~std::uint64_t{0}});
    if (it == filled.begin()) return false;
    for (--it; from < to; ++it) {
      if (it == filled.end() || it->first > from || it->second <= from) return false;
      from = it->second;
    }
    return true;
  };
  // A group may land in the caller's buffer if it is one extent's run whose
  // gaps other segments fill. Larger ones first: a run of an old extent
  // wins over a single new block that lies in one of its gaps (which then
  // goes through the bounce buffer). Where two would write the same file
  // blocks, the second does not land there.
  std::vector<Group*> candidates;
  for (Group& g : groups_)
    if (g.linear_lblk && all_filled(*g.linear_lblk, *g.linear_lblk + (g.end - g.start))) candidates.push_back(&g);
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Group* a, const Group* b) { return a->end - a->start > b->end - b->start; });
  std::map<std::uint64_t, std::uint64_t> taken;  // file blocks direct I/O writes: start -> end
  for (Group* g : candidates) {
    const std::uint64_t from = *g->linear_lblk, to = from + (g->end - g->start);
    auto next = taken.lower_bound(from);
    if (next != taken.end() && next->first < to) continue;
    if (next != taken.begin() && std::prev(next)->second > from) continue;
    taken.emplace(from, to);
    g->direct = true;
  }
}

void ReadPlan::add_ios() {
  for (const Group& g : groups_)
    if (!g.direct) bounced_blocks_ += g.end - g.start;
  if (bounced_blocks_) bounce_.emplace(bounced_blocks_ * kBlockSize);
  std::uint64_t at = 0;
  for (const Group& g : groups_) {
    if (g.direct) {
      ios_.push_back(DeviceIo::blocks(DeviceIo::Op::Read, g.start, dst_ + (*g.linear_lblk - first_) * kBlockSize, g.end - g.start));
      continue;
    }
    ios_.push_back(DeviceIo::blocks(DeviceIo::Op::Read, g.start, bounce_->data() + at * kBlockSize, g.end - g.start));
    bounced_.emplace_back(&g, at);
    at += g.end - g.start;
  }
}

void ReadPlan::finish() {
  for (const auto& [g, place] : bounced_)
    for (std::size_t i = g->from; i < g->to; ++i) {
      const Segment& s = *order_[i];
      std::memcpy(dst_ + (s.lblk - first_) * kBlockSize,
                  bounce_->data() + (place + (s.pblk - g->start)) * kBlockSize, s.len * kBlockSize);
    }
}

}  // namespace dhfs
