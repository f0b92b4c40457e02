#include "fs/directory.h"

#include <limits>

#include "fs/xxh.h"

namespace dhfs {

namespace {
std::size_t hash_name(std::string_view name) { return XXH3_64bits(name.data(), name.size()); }
}  // namespace

std::size_t Directory::find_slot(std::string_view name) const {
  const std::size_t mask = index_.size() - 1;
  for (std::size_t s = hash_name(name) & mask;; s = (s + 1) & mask) {
    std::uint32_t e = index_[s];
    if (e == kEmpty || name_of(entries_[e]) == name) return s;
  }
}

void Directory::rebuild_index() {
  std::size_t want = 16;
  while (want < live_ * 2 + 2) want *= 2;
  index_.assign(want, kEmpty);
  for (std::size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].live) index_[find_slot(name_of(entries_[i]))] = static_cast<std::uint32_t>(i);
}

void Directory::grow_index() {
  if (index_.empty() || (live_ + 1) * 4 > index_.size() * 3) rebuild_index();
}

std::optional<DirEntry> Directory::lookup(std::string_view name) const {
  if (index_.empty()) return std::nullopt;
  std::uint32_t e = index_[find_slot(name)];
  if (e == kEmpty) return std::nullopt;
  return entry_of(entries_[e]);
}

bool Directory::add(std::string_view name, Ino ino, std::uint8_t dtype) {
  name = name.substr(0, std::numeric_limits<std::uint16_t>::max());
  grow_index();
  std::size_t s = find_slot(name);
  if (index_[s] != kEmpty) return false;
  // Offsets are 32 bits: squeeze out dead names first if the string would
  // outgrow them (4 GiB of names in one directory).
  if (names_.size() + name.size() > std::numeric_limits<std::uint32_t>::max()) compact_names();
  index_[s] = static_cast<std::uint32_t>(entries_.size());
  entries_.push_back({ino, static_cast<std::uint32_t>(names_.size()), static_cast<std::uint16_t>(name.size()), dtype,
                      true});
  names_.append(name);
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
  // Backward-shift deletion keeps linear probing chains unbroken (while
  // the removed entry's name is still readable).
  const std::size_t mask = index_.size() - 1;
  std::size_t hole = s;
  for (std::size_t j = (s + 1) & mask; index_[j] != kEmpty; j = (j + 1) & mask) {
    std::size_t home = hash_name(name_of(entries_[index_[j]])) & mask;
    bool movable = (hole <= j) ? (home <= hole || home > j) : (home <= hole && home > j);
    if (movable) {
      index_[hole] = index_[j];
      hole = j;
    }
  }
  index_[hole] = kEmpty;
  dead_name_bytes_ += entries_[e].name_len;
  entries_[e] = Slot{};
  --live_;
  maybe_compact();
  return true;
}

void Directory::maybe_compact() {
  // Names can move at any time (entries keep their index, so cookies stay).
  if (dead_name_bytes_ > 4096 && dead_name_bytes_ * 2 > names_.size()) compact_names();
  if (listings_ > 0) return;
  if (live_ == 0) {
    entries_.clear();
    index_.clear();
    names_.clear();
    dead_name_bytes_ = 0;
    return;
  }
  if (entries_.size() < 64 || entries_.size() < live_ * 2) return;
  std::erase_if(entries_, [](const Slot& d) { return !d.live; });
  rebuild_index();
}

void Directory::compact_names() {
  std::string kept;
  kept.reserve(names_.size() - dead_name_bytes_);
  for (Slot& e : entries_) {
    if (!e.live) continue;
    const auto off = static_cast<std::uint32_t>(kept.size());
    kept.append(name_of(e));
    e.name_off = off;
  }
  names_ = std::move(kept);
  dead_name_bytes_ = 0;
}

void Directory::close_listing() {
  if (listings_ > 0) --listings_;
  maybe_compact();
}

void Directory::list(std::uint64_t from,
                     const std::function<bool(const DirEntry&, std::uint64_t next)>& fn) const {
  for (std::size_t i = from; i < entries_.size(); ++i) {
    if (!entries_[i].live) continue;
    if (!fn(entry_of(entries_[i]), i + 1)) return;
  }
}

void Directory::for_each(const std::function<void(const DirEntry&)>& fn) const {
  for (const Slot& d : entries_)
    if (d.live) fn(entry_of(d));
}

}  // namespace dhfs
