#include "alloc/region_map.h"

#include <algorithm>
#include <iterator>

namespace dhfs {

void RegionMap::insert_slice(RegionId r, Extent x) {
  index_.emplace(x.start, Entry{x.len, r});
  Owned& owned = regions_[r];
  owned.slices.emplace(x.start, x.len);
  owned.blocks += x.len;
}

void RegionMap::erase_slice(Index::iterator it) {
  const auto owned = regions_.find(it->second.region);
  owned->second.slices.erase(it->first);
  owned->second.blocks -= it->second.len;
  if (owned->second.slices.empty()) regions_.erase(owned);
  index_.erase(it);
}

Extent RegionMap::add(RegionId r, Extent x) {
  if (x.empty()) return x;
  Extent merged = x;
  auto next = index_.lower_bound(x.start);
  if (next != index_.begin()) {
    const auto prev = std::prev(next);
    if (prev->second.region == r && prev->first + prev->second.len == x.start) {
      merged = {prev->first, prev->second.len + x.len};
      erase_slice(prev);  // `next` stays valid
    }
  }
  if (next != index_.end() && next->second.region == r && next->first == x.end()) {
    merged.len += next->second.len;
    erase_slice(next);
  }
  insert_slice(r, merged);
  return merged;
}

RegionId RegionMap::remove(Extent x) {
  if (x.empty()) return 0;
  auto it = index_.upper_bound(x.start);
  if (it == index_.begin()) return 0;
  --it;
  const Extent slice{it->first, it->second.len};
  if (x.start < slice.start || x.end() > slice.end()) return 0;
  const RegionId r = it->second.region;
  erase_slice(it);
  if (slice.start < x.start) insert_slice(r, {slice.start, x.start - slice.start});
  if (x.end() < slice.end()) insert_slice(r, {x.end(), slice.end() - x.end()});
  return r;
}

std::vector<Extent> RegionMap::remove_region(RegionId r) {
  std::vector<Extent> out = slices_of(r);
  for (const Extent& s : out) index_.erase(s.start);
  regions_.erase(r);
  return out;
}

std::optional<RegionMap::Slice> RegionMap::slice_at(BlockNo b) const {
  auto it = index_.upper_bound(b);
  if (it == index_.begin()) return std::nullopt;
  --it;
  const Extent slice{it->first, it->second.len};
  if (!slice.contains(b)) return std::nullopt;
  return Slice{slice, it->second.region};
}

RegionId RegionMap::owner(BlockNo b) const {
  const auto s = slice_at(b);
  return s ? s->region : 0;
}

void RegionMap::for_each_piece(Extent e, const std::function<void(const Extent&, RegionId)>& fn) const {
  if (e.empty()) return;
  auto it = index_.upper_bound(e.start);
  if (it != index_.begin() && std::prev(it)->first + std::prev(it)->second.len > e.start) --it;
  BlockNo at = e.start;
  for (; it != index_.end() && it->first < e.end() && at < e.end(); ++it) {
    const Extent slice{it->first, it->second.len};
    if (slice.start > at) {
      fn({at, slice.start - at}, 0);
      at = slice.start;
    }
    const BlockNo end = std::min(slice.end(), e.end());
    fn({at, end - at}, it->second.region);
    at = end;
  }
  if (at < e.end()) fn({at, e.end() - at}, 0);
}

std::vector<Extent> RegionMap::slices_of(RegionId r) const {
  std::vector<Extent> out;
  const auto owned = regions_.find(r);
  if (owned == regions_.end()) return out;
  out.reserve(owned->second.slices.size());
  for (const auto& [start, len] : owned->second.slices) out.push_back({start, len});
  return out;
}

std::optional<Extent> RegionMap::last_slice_of(RegionId r) const {
  const auto owned = regions_.find(r);
  if (owned == regions_.end()) return std::nullopt;
  const auto& [start, len] = *owned->second.slices.rbegin();
  return Extent{start, len};
}

std::uint64_t RegionMap::reserved_blocks(RegionId r) const {
  const auto owned = regions_.find(r);
  return owned == regions_.end() ? 0 : owned->second.blocks;
}

void RegionMap::for_each(const std::function<void(const Slice&)>& fn) const {
  for (const auto& [start, entry] : index_) fn({{start, entry.len}, entry.region});
}

bool RegionMap::consistent() const {
  bool ok = true;
  std::optional<Slice> prev;
  std::map<RegionId, Owned> rebuilt;
  for (const auto& [start, entry] : index_) {
    const Extent slice{start, entry.len};
    ok = ok && entry.len > 0 && entry.region != 0 && slice.end() > start;
    if (prev) {
      ok = ok && prev->extent.end() <= start;
      // Touching slices must belong to different regions.
      ok = ok && !(prev->extent.end() == start && prev->region == entry.region);
    }
    Owned& owned = rebuilt[entry.region];
    owned.slices.emplace(start, entry.len);
    owned.blocks += entry.len;
    prev = Slice{slice, entry.region};
  }
  if (rebuilt.size() != regions_.size()) return false;
  for (const auto& [r, owned] : rebuilt) {
    const auto it = regions_.find(r);
    ok = ok && it != regions_.end() && it->second.slices == owned.slices && it->second.blocks == owned.blocks;
  }
  return ok;
}

}  // namespace dhfs
