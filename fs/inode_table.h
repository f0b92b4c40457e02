// InodeTable: owns every in-memory inode, indexed by inode number. Numbers
// of freed inodes are reused (lowest first is not needed; last freed first
// keeps the table dense). Not thread-safe: FileSystem guards it.
#pragma once

#include <memory>
#include <vector>

#include "fs/inode.h"

namespace dhfs {

class InodeTable {
 public:
  Inode* get(Ino ino) const { return ino < slots_.size() ? slots_[ino].get() : nullptr; }

  // A fresh inode with an unused number.
  Inode* create();
  // Creates or returns the inode with this exact number (loading).
  Inode* create_at(Ino ino);
  void erase(Ino ino);

  // After loading: every unused number below the highest becomes reusable.
  void rebuild_free_list();

  std::size_t count() const { return count_; }
  Ino end() const { return slots_.size(); }  // numbers are below end()

  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& s : slots_)
      if (s) fn(*s);
  }

 private:
  std::vector<std::unique_ptr<Inode>> slots_{2};  // 0 is never a valid number
  std::vector<Ino> free_;
  std::size_t count_ = 0;
};

}  // namespace dhfs
