// Directory: the entries of one directory, held in memory.
//
// Entries live in a vector in creation order; an entry's index is its
// readdir cookie, so a listing in progress stays valid while entries are
// added or removed (removed entries leave tombstones). A hash index gives
// O(1) lookup by name. Tombstones are squeezed out only while no listing is
// open, because compaction renumbers the cookies.
//
// Names are kept back to back in one string per directory, not one
// std::string per entry: an entry costs 16 bytes plus its name instead of
// 48 (and a heap block for names over 15 bytes). A host with a million
// files holds a million entries.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/records.h"

namespace dhfs {

// One entry as the directory hands it out: `name` points into the
// directory and is valid until the directory next changes.
struct DirEntry {
  std::string_view name;
  Ino ino = 0;
  std::uint8_t dtype = 0;  // DT_*
};

class Directory {
 public:
  std::optional<DirEntry> lookup(std::string_view name) const;  // see DirEntry for how long name lives
  // Returns false if the name exists already.
  bool add(std::string_view name, Ino ino, std::uint8_t dtype);
  // Points an existing name at another inode; returns false if absent.
  bool replace(std::string_view name, Ino ino, std::uint8_t dtype);
  // Removes a name; returns false if absent.
  bool remove(std::string_view name);

  std::size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }

  // Visits live entries from cookie position `from` on (0 = start). `fn`
  // receives the entry and the cookie of the entry after it, and returns
  // false to stop.
  void list(std::uint64_t from, const std::function<bool(const DirEntry&, std::uint64_t next)>& fn) const;
  // Visits every live entry.
  void for_each(const std::function<void(const DirEntry&)>& fn) const;

  // The directory holding this one (for ".."); not persisted, the loader
  // finds it from the entries.
  Ino parent() const { return parent_; }
  void set_parent(Ino p) { parent_ = p; }

  // Open listings pin the cookies (see above).
  void open_listing() { ++listings_; }
  void close_listing();

 private:
  static constexpr std::uint32_t kEmpty = 0xffffffff;
  // An entry as stored. (Names longer than 65535 bytes are cut to that:
  // only a corrupt image has names over 255, and fsck removes them.)
  struct Slot {
    Ino ino = 0;
    std::uint32_t name_off = 0;  // into names_
    std::uint16_t name_len = 0;
    std::uint8_t dtype = 0;
    bool live = false;  // false: tombstone
  };
  static_assert(sizeof(Slot) == 16);
  std::string_view name_of(const Slot& e) const { return {names_.data() + e.name_off, e.name_len}; }
  DirEntry entry_of(const Slot& e) const { return {name_of(e), e.ino, e.dtype}; }
  std::size_t find_slot(std::string_view name) const;  // slot holding name, or its empty slot
  void grow_index();
  void rebuild_index();
  void maybe_compact();
  void compact_names();

  std::vector<Slot> entries_;
  std::string names_;             // every entry's name, back to back
  std::size_t dead_name_bytes_ = 0;  // bytes of names_ no live entry uses
  std::vector<std::uint32_t> index_;  // open addressing: entry index or kEmpty
  std::size_t live_ = 0;
  std::uint32_t listings_ = 0;
  Ino parent_ = 0;
};

}  // namespace dhfs
