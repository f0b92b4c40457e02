#include "fs/directory.h"

#include <xxhash.h>

namespace dhfs {

namespace {
std::size_t hash_name(std::string_view name) { return XXH3_64bits(name.data(), name.size()); }
}  // namespace

std::size_t Directory::find_slot(std::string_view name) const {
  const std::size_t mask = index_.size() - 1;
  for (std::size_t s = hash_name(name) & mask;; s = (s + 1) & mask) {
    std::uint32_t e = index_[s];
    if (e == kEmpty || entries_[e].name == name) return s;
  }
}

void Directory::rebuild_index() {
  std::size_t want = 16;
  while (want < live_ * 2 + 2) want *= 2;
  index_.assign(want, kEmpty);
  for (std::size_t i = 0; i < entries_.size(); ++i)
    if (!entries_[i].name.empty()) index_[find_slot(entries_[i].name)] = static_cast<std::uint32_t>(i);
}

void Directory::grow_index() {
  if (index_.empty() || (live_ + 1) * 4 > index_.size() * 3) rebuild_index();
}

std::optional<DirEntry> Directory::lookup(std::string_view name) const {
  if (index_.empty()) return std::nullopt;
  std::uint32_t e = index_[find_slot(name)];
  if (e == kEmpty) return std::nullopt;
  return entries_[e];
}

bool Directory::add(std::string_view name, Ino ino, std::uint8_t dtype) {
  grow_index();
  std::size_t s = find_slot(name);
  if (index_[s] != kEmpty) return false;
  index_[s] = static_cast<std::uint32_t>(entries_.size());
  entries_.push_back({std::string(name), ino, dtype});
  ++live_;
  return true;
}

bool Directory::replace(std::string_view name, Ino ino, std::uint8_t dtype) {
  if (index_.empty()) return false;
  std::uint32_t e = index_[find_slot(name)];
  if (e == kEmpty) return false;
  entries_[e].ino = ino;
  entries_[e].dtype = dtype;
  return true;
}

bool Directory::remove(std::string_view name) {
  if (index_.empty()) return false;
  std::size_t s = find_slot(name);
  std::uint32_t e = index_[s];
  if (e == kEmpty) return false;
  entries_[e] = DirEntry{};
  --live_;
  // Backward-shift deletion keeps linear probing chains unbroken.
  const std::size_t mask = index_.size() - 1;
  std::size_t hole = s;
  for (std::size_t j = (s + 1) & mask; index_[j] != kEmpty; j = (j + 1) & mask) {
    std::size_t home = hash_name(entries_[index_[j]].name) & mask;
    bool movable = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
    if (movable) {
      index_[hole] = index_[j];
      hole = j;
    }
  }
  index_[hole] = kEmpty;
  maybe_compact();
  return true;
}

void Directory::maybe_compact() {
  if (listings_ > 0) return;
  if (live_ == 0) {
    entries_.clear();
    index_.clear();
    return;
  }
  if (entries_.size() < 64 || entries_.size() < live_ * 2) return;
  std::erase_if(entries_, [](const DirEntry& d) { return d.name.empty(); });
  rebuild_index();
}

void Directory::close_listing() {
  if (listings_ > 0) --listings_;
  maybe_compact();
}

void Directory::list(std::uint64_t from,
                     const std::function<bool(const DirEntry&, std::uint64_t next)>& fn) const {
  for (std::size_t i = from; i < entries_.size(); ++i) {
    if (entries_[i].name.empty()) continue;
    if (!fn(entries_[i], i + 1)) return;
  }
}

void Directory::for_each(const std::function<void(const DirEntry&)>& fn) const {
  for (const DirEntry& d : entries_)
    if (!d.name.empty()) fn(d);
}

}  // namespace dhfs
