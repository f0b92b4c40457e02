#include "fs/extent_map.h"

#include <algorithm>
#include <limits>

#include "fs/records.h"

namespace dhfs {

namespace {
constexpr std::uint64_t kMaxRun = std::numeric_limits<std::uint32_t>::max();

bool joinable(const FileExtent& a, const FileExtent& b) {
  // (A packed extent is one block by definition: never joined.)
  return a.lend() == b.lblk && a.pblk + a.len == b.pblk && a.flags == b.flags && !is_packed(a.flags) &&
         std::uint64_t{a.len} + b.len <= kMaxRun;
}
}  // namespace

const ExtentMap::Tree& ExtentMap::tree() const {
  static const Tree kNoExtents;
  return tree_ ? *tree_ : kNoExtents;
}

ExtentMap::Tree& ExtentMap::writable_tree() {
  if (!tree_) tree_ = std::make_unique<Tree>();
  return *tree_;
}

ExtentMap::Tree::const_iterator ExtentMap::ending_after(std::uint64_t lblk) const {
  const Tree& t = tree();
  auto it = t.upper_bound(lblk);  // first extent starting after lblk
  if (it != t.begin()) {
    auto prev = std::prev(it);
    if (prev->second.lend() > lblk) return prev;
  }
  return it;
}

ExtentMap::Tree::iterator ExtentMap::ending_after(std::uint64_t lblk) {
  Tree& t = writable_tree();
  auto it = t.upper_bound(lblk);
  if (it != t.begin()) {
    auto prev = std::prev(it);
    if (prev->second.lend() > lblk) return prev;
  }
  return it;
}

// Inserts `e` (its range is unmapped) and merges it with its neighbours.
void ExtentMap::insert_merged(FileExtent e) {
  Tree& t = writable_tree();
  auto next = t.lower_bound(e.lblk);
  if (next != t.begin()) {
    auto prev = std::prev(next);
    if (joinable(prev->second, e)) {
      prev->second.len += e.len;
      if (next != t.end() && joinable(prev->second, next->second)) {
        prev->second.len += next->second.len;
        t.erase(next);
      }
      return;
    }
  }
  if (next != t.end() && joinable(e, next->second)) {
    e.len += next->second.len;
    t.erase(next);
  }
  t.emplace_hint(t.lower_bound(e.lblk), e.lblk, e);
}

void ExtentMap::set(std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags,
                    std::vector<Segment>* displaced) {
  if (len == 0) return;
  const std::uint64_t end = (lblk + len < lblk) ? std::numeric_limits<std::uint64_t>::max() : lblk + len;

  // Cut [lblk, end) out of the existing extents; the parts outside the
  // range (at most one on each side) stay.
  std::optional<FileExtent> keep_lo, keep_hi;
  if (!tree_ && pblk == 0) return;  // unmapping from an empty map
  Tree& t = writable_tree();
  auto it = ending_after(lblk);
  while (it != t.end() && it->second.lblk < end) {
    const FileExtent e = it->second;
    std::uint64_t cut_lo = std::max(e.lblk, lblk);
    std::uint64_t cut_hi = std::min(e.lend(), end);
    if (displaced) displaced->push_back({cut_lo, cut_hi - cut_lo, e.pblk + (cut_lo - e.lblk), e.flags});
    mapped_blocks_ -= cut_hi - cut_lo;
    if (e.lblk < lblk) keep_lo = FileExtent{e.lblk, e.pblk, static_cast<std::uint32_t>(lblk - e.lblk), e.flags};
    if (e.lend() > end)
      keep_hi = FileExtent{end, e.pblk + (end - e.lblk), static_cast<std::uint32_t>(e.lend() - end), e.flags};
    it = t.erase(it);
  }
  // (the kept pieces were counted in mapped_blocks_ before and still are)
  if (keep_lo) t.emplace(keep_lo->lblk, *keep_lo);
  if (keep_hi) t.emplace(keep_hi->lblk, *keep_hi);

  if (pblk == 0) {
    if (t.empty()) tree_.reset();
    return;
  }
  // Map the new range, in runs that fit the 32-bit extent length.
  std::uint64_t l = lblk;
  BlockNo p = pblk;
  std::uint64_t left = end - lblk;
  while (left > 0) {
    auto run = static_cast<std::uint32_t>(std::min(left, kMaxRun));
    insert_merged({l, p, run, flags});
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
  for (auto it = ending_after(lblk); it != tree().end() && it->second.lblk < end; ++it) {
    const FileExtent& e = it->second;
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
  auto it = ending_after(lblk);
  if (it != tree().end() && it->second.lblk <= lblk) return it->second;
  return std::nullopt;
}

std::optional<FileExtent> ExtentMap::find_before(std::uint64_t lblk) const {
  if (lblk == 0) return std::nullopt;
  return find(lblk - 1);
}

std::optional<std::uint64_t> ExtentMap::next_data(std::uint64_t lblk) const {
  auto it = ending_after(lblk);
  if (it == tree().end()) return std::nullopt;
  return std::max(it->second.lblk, lblk);
}

std::uint64_t ExtentMap::next_hole(std::uint64_t lblk) const {
  std::uint64_t cur = lblk;
  for (auto it = ending_after(lblk); it != tree().end() && it->second.lblk <= cur; ++it) cur = it->second.lend();
  return cur;
}

}  // namespace dhfs
