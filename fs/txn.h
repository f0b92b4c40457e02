// Txn: the records of one metadata transaction, built in memory and handed
// to the journal in one piece (all-or-nothing after a crash).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fs/inode.h"
#include "fs/records.h"

namespace dhfs {

class TxnBuilder {
 public:
  TxnBuilder() : writer_(bytes_) {}
  TxnBuilder(const TxnBuilder&) = delete;
  TxnBuilder& operator=(const TxnBuilder&) = delete;

  void add(const Record& r) {
    writer_.add(r);
    only_inodes_ = false;
  }
  void inode(const Inode& in) { writer_.add(in.to_record()); }  // (keeps only_inode_records())
  void dirent(Ino parent, std::string_view name, Ino child, std::uint8_t dtype) {
    add(DirentSetRec{parent, child, dtype, name});
  }
  void undirent(Ino parent, std::string_view name) { add(DirentDelRec{parent, name}); }
  void extent(Ino ino, std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags) {
    add(ExtentSetRec{ino, lblk, len, pblk, flags});
  }
  void free_inode(Ino ino) { add(InodeFreeRec{ino}); }

  bool empty() const { return writer_.count() == 0; }
  // True if every record is an inode's attributes (no block map, entry,
  // reference count or region change).
  bool only_inode_records() const { return only_inodes_; }

  // Whether data written before this transaction must be durable before
  // it is (data=ordered): true unless the caller knows the transaction
  // cannot expose data that is not on the device yet (see write_locked).
  bool data_first = true;
  std::span<const std::uint8_t> bytes() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
  RecordWriter writer_;
  bool only_inodes_ = true;
};

}  // namespace dhfs
