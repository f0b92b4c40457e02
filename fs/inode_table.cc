#include "fs/inode_table.h"

namespace dhfs {

Inode* InodeTable::create() {
  Ino ino;
  if (!free_.empty()) {
    ino = free_.back();
    free_.pop_back();
  } else {
    ino = slots_.size();
    slots_.emplace_back();
  }
  return create_at(ino);
}

Inode* InodeTable::create_at(Ino ino) {
  if (ino >= slots_.size()) slots_.resize(ino + 1);
  if (!slots_[ino]) {
    slots_[ino] = std::make_unique<Inode>();
    slots_[ino]->ino = ino;
    ++count_;
  }
  return slots_[ino].get();
}

void InodeTable::erase(Ino ino) {
  if (ino >= slots_.size() || !slots_[ino]) return;
  slots_[ino].reset();
  --count_;
  if (ino > kRootIno) free_.push_back(ino);
}

void InodeTable::rebuild_free_list() {
  free_.clear();
  for (Ino i = slots_.size(); i-- > kRootIno + 1;)
    if (!slots_[i]) free_.push_back(i);
}

}  // namespace dhfs
