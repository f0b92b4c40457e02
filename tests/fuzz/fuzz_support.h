// Helpers shared by the libFuzzer targets of tests/fuzz/ (see README there):
// a sparse in-memory device (cheap to copy, so that every execution starts
// from a fresh image), re-sealing of the checksums of every on-disk
// structure (so that the fuzzer reaches the checks behind the checksums
// instead of stopping at them), and a small valid image built through the
// core API. Everything here only writes what docs/FORMAT.md specifies.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "fs/device.h"
#include "fs/format.h"

namespace dhfs::fuzz {

// Blocks that were never written read as zeros. Copies share nothing.
class SparseMedium {
 public:
  explicit SparseMedium(std::uint64_t bytes) : bytes_(bytes) {}
  SparseMedium(const SparseMedium& o);

  int submit(std::span<const DeviceIo> ios);
  std::uint64_t size_bytes() const { return bytes_; }

  // Whole blocks (bounds-checked: out-of-device blocks read as zeros and
  // writes to them are dropped).
  std::vector<std::uint8_t> block(std::uint64_t b) const;
  void set_block(std::uint64_t b, std::span<const std::uint8_t> bytes);
  // Byte ranges (may span blocks).
  void read(std::uint64_t off, std::uint8_t* out, std::size_t len) const;
  void write(std::uint64_t off, const std::uint8_t* in, std::size_t len);
  bool present(std::uint64_t b) const;

 private:
  std::uint64_t bytes_;
  mutable std::mutex mu_;
  std::map<std::uint64_t, std::vector<std::uint8_t>> blocks_;
};

// A Device over a SparseMedium that the caller keeps.
class SparseDevice final : public Device {
 public:
  explicit SparseDevice(std::shared_ptr<SparseMedium> m, bool read_only = false)
      : m_(std::move(m)), ro_(read_only) {}
  int submit(std::span<const DeviceIo> ios) override;
  int flush() override { return 0; }
  std::uint64_t size_bytes() const override { return m_->size_bytes(); }
  bool read_only() const override { return ro_; }
  std::string describe() const override { return "fuzz image"; }

 private:
  std::shared_ptr<SparseMedium> m_;
  bool ro_;
};

// ---- re-sealing. Each fixes the checksum of a structure whose magic is in
// place and leaves every other field as the fuzzer made it.

// Superblock and root slot: XXH3 of the first 4088 bytes in the last 8.
void seal_block(std::span<std::uint8_t> block);
// Checkpoint stream bytes: every frame header found walking from offset 0
// gets the checksum of its payload. Returns the number of frames walked.
std::uint64_t seal_frames(std::span<std::uint8_t> stream);
// Journal ring of `geo`: walks the batches from `from_lsn` and fixes the
// payload and header checksums of each. Returns the number of batches.
std::uint64_t seal_journal(SparseMedium& m, BlockNo start, std::uint64_t blocks, std::uint64_t from_lsn);

// ---- the small valid image

struct Template {
  std::shared_ptr<SparseMedium> medium;
  Superblock sb;
  // Blocks that hold metadata (superblocks, root slots, the used part of
  // the journal, the checkpoint stream), in device order.
  std::vector<std::uint64_t> meta_blocks;
  std::uint64_t replay_lsn = 0;
  std::vector<std::uint64_t> stream_blocks;  // in stream order
};

// Formats a 64 MiB image and fills it through the core API (directories,
// files with holes, unwritten ranges and clones, a symlink, hard links,
// xattrs, a region, settings), checkpoints, then changes more and leaves
// those changes only in the journal (the state after a crash). Built once.
const Template& image_template();

// The uuid_tag the structure-level targets (journal, checkpoint) expect.
std::uint64_t fuzz_uuid_tag();

}  // namespace dhfs::fuzz
