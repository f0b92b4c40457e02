// Checkpoint streams: the whole metadata state written as a sequence of
// checksummed frames of records (records.h) into blocks taken from the data
// area. A checkpoint becomes current when a root slot pointing at it is
// durable; the previous stream's blocks are released only then.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "alloc/allocator.h"
#include "fs/device.h"
#include "fs/format.h"
#include "fs/records.h"

namespace dhfs {

class CheckpointWriter {
 public:
  CheckpointWriter(Device& dev, Allocator& alloc, std::uint64_t uuid_tag);
  ~CheckpointWriter();  // releases the blocks of an unfinished stream
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Adds one record. Returns 0 or a negative errno (-ENOSPC, -EIO); after
  // an error the writer is dead.
  int add(const Record& r);
  // Adds `count` records already encoded by a RecordWriter.
  int add_encoded(std::span<const std::uint8_t> records, std::uint32_t count);

  // Writes the rest, makes the stream durable and fills `root` (all fields
  // but seq, replay_lsn, next_generation and written_ns). The caller owns the blocks
  // afterwards (root.extents).
  int finish(CheckpointRoot& root);

 private:
  int seal_frame();
  int write_out(bool final);
  int grow(std::uint64_t blocks);

  Device& dev_;
  Allocator& alloc_;
  const std::uint64_t uuid_tag_;
  std::vector<std::uint8_t> frame_;      // records of the frame being built
  std::uint32_t frame_records_ = 0;
  std::vector<std::uint8_t> out_;        // sealed frames not yet written
  std::vector<Extent> extents_;          // blocks owned so far
  std::uint64_t capacity_bytes_ = 0;     // of extents_
  std::uint64_t written_bytes_ = 0;      // stream bytes on the device
  std::uint64_t frames_ = 0;
  bool finished_ = false;
  int error_ = 0;
};

// Reads a checkpoint stream and hands every record to `fn`. Returns false
// with `why` if any frame fails its checks.
bool read_checkpoint(Device& dev, const CheckpointRoot& root, std::uint64_t uuid_tag,
                     const std::function<bool(const Record&)>& fn, std::string& why);

}  // namespace dhfs
