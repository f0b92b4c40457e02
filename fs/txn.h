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

  void add(const Record& r) { writer_.add(r); }
  void inode(const Inode& in) { add(in.to_record()); }
  void dirent(Ino parent, std::string_view name, Ino child, std::uint8_t dtype) {
    add(DirentSetRec{parent, child, dtype, name});
  }
  void undirent(Ino parent, std::string_view name) { add(DirentDelRec{parent, name}); }
  void extent(Ino ino, std::uint64_t lblk, std::uint64_t len, BlockNo pblk, std::uint32_t flags) {
    add(ExtentSetRec{ino, lblk, len, pblk, flags});
  }
  void free_inode(Ino ino) { add(InodeFreeRec{ino}); }

  bool empty() const { return writer_.count() == 0; }
  std::span<const std::uint8_t> bytes() const { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
  RecordWriter writer_;
};

}  // namespace dhfs
