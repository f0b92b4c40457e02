// Directory: the entries of one directory, held in memory.
//
// Entries live in a vector in creation order; an entry's index is its
// readdir cookie, so a listing in progress stays valid while entries are
// added or removed (removed entries leave tombstones). A hash index gives
// O(1) lookup by name. Tombstones are squeezed out only while no listing is
// open, because compaction renumbers the cookies.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/records.h"

namespace dhfs {

struct DirEntry {
  std::string name;        // empty: tombstone
  Ino ino = 0;
  std::uint8_t dtype = 0;  // DT_*
};

class Directory {
 public:
  std::optional<DirEntry> lookup(std::string_view name) const;
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
  std::size_t find_slot(std::string_view name) const;  // slot holding name, or its empty slot
  void grow_index();
  void rebuild_index();
  void maybe_compact();

  std::vector<DirEntry> entries_;
  std::vector<std::uint32_t> index_;  // open addressing: entry index or kEmpty
  std::size_t live_ = 0;
  std::uint32_t listings_ = 0;
  Ino parent_ = 0;
};

}  // namespace dhfs
