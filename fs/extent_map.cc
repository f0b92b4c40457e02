#include "fs/extent_map.h"

#include <algorithm>
#include <limits>

namespace dhfs {

namespace {
constexpr std::uint64_t kMaxRun = std::numeric_limits<std::uint32_t>::max();

bool joinable(const FileExtent& a, const FileExtent& b) {
  return a.lend() == b.lblk && a.pblk + a.len == b.pblk && a.flags == b.flags &&
         std::uint64_t{a.len} + b.len <= kMaxRun;
}
}  // namespace

std::size_t ExtentMap::first_ending_after(std::uint64_t lblk) const {
  auto it = std::upper_bound(extents_.begin(), extents_.end(), lblk,
                             [](std::uint64_t l, const FileExtent& e) { return l < e.lend(); });
  return static_cast<std::size_t>(it - extents_.begin());
}

void ExtentMap::insert_merged(std::size_t pos, FileExtent e) {
  if (pos > 0 && joinable(extents_[pos - 1], e)) {
    extents_[pos - 1].len += e.len;
    if (pos < extents_.size() && joinable(extents_[pos - 1], extents_[pos])) {
      extents_[pos - 1].len += extents_[pos].len;
      extents_.erase(extents_.begin() + static_cast<std::ptrdiff_t>(pos));
    }
    return;
  }
  if (pos < extents_.size() && joinable(e, extents_[pos])) {
    extents_[pos].lblk = e.lblk;
    extents_[pos].pblk = e.pblk;
    extents_[pos].len += e.len;
    return;
  }
  extents_.insert(extents_.begin() + static_cast<std::ptrdiff_t>(pos), e);
}

void ExtentMap::set(std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags,
                    std::vector<Segment>* displaced) {
  if (len == 0) return;
  const std::uint64_t end = (lblk + len < lblk) ? std::numeric_limits<std::uint64_t>::max() : lblk + len;

  // Cut [lblk, end) out of the existing extents.
  std::size_t i = first_ending_after(lblk);
  std::size_t first_removed = i;
  std::vector<FileExtent> keep;  // at most two: the parts outside the range
  while (i < extents_.size() && extents_[i].lblk < end) {
    const FileExtent& e = extents_[i];
    std::uint64_t cut_lo = std::max(e.lblk, lblk);
    std::uint64_t cut_hi = std::min(e.lend(), end);
    if (displaced)
      displaced->push_back({cut_lo, cut_hi - cut_lo, e.pblk + (cut_lo - e.lblk), e.flags});
    mapped_blocks_ -= cut_hi - cut_lo;
    if (e.lblk < lblk) keep.push_back({e.lblk, e.pblk, static_cast<std::uint32_t>(lblk - e.lblk), e.flags});
    if (e.lend() > end)
      keep.push_back({end, e.pblk + (end - e.lblk), static_cast<std::uint32_t>(e.lend() - end), e.flags});
    ++i;
  }
  extents_.erase(extents_.begin() + static_cast<std::ptrdiff_t>(first_removed),
                 extents_.begin() + static_cast<std::ptrdiff_t>(i));
  std::size_t pos = first_removed;
  if (!keep.empty() && keep.front().lblk < lblk) {
    extents_.insert(extents_.begin() + static_cast<std::ptrdiff_t>(pos), keep.front());
    ++pos;
    keep.erase(keep.begin());
  }
  if (!keep.empty()) extents_.insert(extents_.begin() + static_cast<std::ptrdiff_t>(pos), keep.front());
  // (the kept pieces were counted in mapped_blocks_ before and still are)

  if (pblk == 0) return;
  // Map the new range, in runs that fit the 32-bit extent length.
  std::uint64_t l = lblk;
  BlockNo p = pblk;
  std::uint64_t left = end - lblk;
  while (left > 0) {
    auto run = static_cast<std::uint32_t>(std::min(left, kMaxRun));
    std::size_t at = first_ending_after(l);
    insert_merged(at, {l, p, run, flags});
    mapped_blocks_ += run;
    l += run;
    p += run;
    left -= run;
  }
}

std::vector<Segment> ExtentMap::segments(std::uint64_t lblk, std::uint64_t len) const {
  std::vector<Segment> out;
  const std::uint64_t end = lblk + len;
  std::uint64_t cur = lblk;
  for (std::size_t i = first_ending_after(lblk); i < extents_.size() && extents_[i].lblk < end; ++i) {
    const FileExtent& e = extents_[i];
    if (e.lblk > cur) out.push_back({cur, e.lblk - cur, 0, 0});
    std::uint64_t lo = std::max(e.lblk, cur);
    std::uint64_t hi = std::min(e.lend(), end);
    out.push_back({lo, hi - lo, e.pblk + (lo - e.lblk), e.flags});
    cur = hi;
  }
  if (cur < end) out.push_back({cur, end - cur, 0, 0});
  return out;
}

std::optional<FileExtent> ExtentMap::find(std::uint64_t lblk) const {
  std::size_t i = first_ending_after(lblk);
  if (i < extents_.size() && extents_[i].lblk <= lblk) return extents_[i];
  return std::nullopt;
}

std::optional<FileExtent> ExtentMap::find_before(std::uint64_t lblk) const {
  if (lblk == 0) return std::nullopt;
  return find(lblk - 1);
}

std::optional<std::uint64_t> ExtentMap::next_data(std::uint64_t lblk) const {
  std::size_t i = first_ending_after(lblk);
  if (i == extents_.size()) return std::nullopt;
  return std::max(extents_[i].lblk, lblk);
}

std::uint64_t ExtentMap::next_hole(std::uint64_t lblk) const {
  std::size_t i = first_ending_after(lblk);
  std::uint64_t cur = lblk;
  while (i < extents_.size() && extents_[i].lblk <= cur) {
    cur = extents_[i].lend();
    ++i;
  }
  return cur;
}

}  // namespace dhfs
