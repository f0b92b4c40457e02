// On-disk structures of dhfs (version 1). docs/FORMAT.md is the byte-level
// specification; this header is its code. Every structure carries an XXH3-64
// checksum and is validated before a single field of it is trusted.
//
// Device layout, in 4 KiB blocks:
//   0                 superblock (static geometry)
//   1, 2              checkpoint root slots A and B (newest valid one wins)
//   3 .. 3+J-1        journal ring (J blocks)
//   3+J .. N-2        data area: file data and checkpoint streams
//   N-1               backup superblock
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::uint64_t kSuperMagic = 0x0042532d53464844ULL;       // "DHFS-SB\0"
inline constexpr std::uint64_t kRootSlotMagic = 0x0052432d53464844ULL;    // "DHFS-CR\0"
inline constexpr std::uint64_t kBatchMagic = 0x00424a2d53464844ULL;       // "DHFS-JB\0"
inline constexpr std::uint64_t kFrameMagic = 0x0046432d53464844ULL;       // "DHFS-CF\0"

inline constexpr BlockNo kSuperBlock = 0;
inline constexpr BlockNo kRootSlotBlocks[2] = {1, 2};
inline constexpr BlockNo kJournalStart = 3;

// Smallest device dhfs formats: room for the fixed blocks, the smallest
// journal and a useful data area.
inline constexpr std::uint64_t kMinDeviceBytes = 64ULL << 20;
inline constexpr std::uint64_t kMinJournalBlocks = (16ULL << 20) / kBlockSize;
inline constexpr std::uint64_t kMaxJournalBlocks = (1ULL << 30) / kBlockSize;

// Feature flags. A mount refuses unknown incompat bits, mounts read-only
// with unknown ro_compat bits, and ignores unknown compat bits.
// JOURNAL_FIXED: the filesystem was grown (FileSystem::grow) past the size
// whose layout rule gives its journal size, so journal_blocks is what mkfs
// chose, no longer the rule's value for total_blocks. A reader that
// derives the journal from total_blocks would look for it in the wrong
// place; it must refuse the filesystem, hence incompat.
inline constexpr std::uint64_t kIncompatJournalFixed = 1ULL << 0;
inline constexpr std::uint64_t kKnownIncompat = kIncompatJournalFixed;
inline constexpr std::uint64_t kKnownRoCompat = 0;

using Uuid = std::array<std::uint8_t, 16>;
std::string uuid_to_string(const Uuid& u);
Uuid make_random_uuid();

std::uint64_t checksum(std::span<const std::uint8_t> bytes, std::uint64_t seed = 0);

struct Superblock {
  std::uint32_t version = kFormatVersion;
  std::uint32_t block_size = kBlockSize;
  std::uint64_t total_blocks = 0;
  Uuid uuid{};
  std::uint64_t feature_compat = 0;
  std::uint64_t feature_incompat = 0;
  std::uint64_t feature_ro_compat = 0;
  BlockNo journal_start = kJournalStart;
  std::uint64_t journal_blocks = 0;
  BlockNo data_start = 0;
  std::uint64_t data_blocks = 0;
  std::int64_t created_ns = 0;
  std::string label;      // at most 63 bytes
  std::uint64_t salt = 0;  // random, never shown: keys uuid_tag()

  // Geometry for a device of `device_bytes` (journal sized to 1/64 of the
  // device, clamped to [16 MiB, 1 GiB]).
  static Superblock for_device(std::uint64_t device_bytes);
  // This geometry with a journal of `blocks` right after the root slots and
  // the data area from there up to the backup superblock.
  Superblock with_journal(std::uint64_t blocks) const;

  // The same filesystem grown to `blocks` (more than total_blocks): the
  // journal stays where and as large as it is, the data area runs up to the
  // new backup superblock, and JOURNAL_FIXED is set if the layout rule would
  // size the journal differently for `blocks`.
  Superblock grown_to(std::uint64_t blocks) const;

  Extent data_area() const { return {data_start, data_blocks}; }
  BlockNo backup_block() const { return total_blocks - 1; }
  // A 64-bit tag derived from the UUID and the secret salt, stamped into
  // every journal batch and checkpoint frame: records of an earlier
  // filesystem on the same device are never mistaken for ours, and file
  // contents (which may land in the journal as xattr values) cannot forge a
  // valid batch header without reading the raw device.
  std::uint64_t uuid_tag() const;

  std::vector<std::uint8_t> encode() const;  // one block
  // Returns nullopt and sets `why` if the block is not a valid superblock.
  static std::optional<Superblock> decode(std::span<const std::uint8_t> block, std::string& why);
  // Geometry sanity against the device the superblock was read from.
  bool check_geometry(std::uint64_t device_bytes, std::string& why) const;
};

// Points at the current checkpoint stream and says where journal replay
// starts. Written alternately to slots A and B; the valid slot with the
// highest sequence number is current.
struct CheckpointRoot {
  static constexpr std::size_t kMaxExtents = 250;

  std::uint64_t seq = 0;
  std::uint64_t uuid_tag = 0;
  std::uint64_t replay_lsn = 0;    // journal stream position replay starts at
  std::uint64_t stream_bytes = 0;  // length of the checkpoint stream
  std::uint64_t frame_count = 0;
  std::uint64_t next_generation = 1;
  std::int64_t written_ns = 0;
  std::vector<Extent> extents;     // where the stream lives, in order

  std::vector<std::uint8_t> encode() const;  // one block
  static std::optional<CheckpointRoot> decode(std::span<const std::uint8_t> block,
                                              std::uint64_t uuid_tag, std::string& why);
};

// Header of a journal batch: a group of transactions written and made
// durable together. A batch starts at a block boundary of the journal
// stream; `lsn` is that stream position (it keeps growing across wraps of the
// ring, so stale batches from an earlier lap are recognised).
struct BatchHeader {
  static constexpr std::size_t kSize = 64;
  std::uint64_t uuid_tag = 0;
  std::uint64_t lsn = 0;
  std::uint64_t first_seq = 0;
  std::uint32_t txn_count = 0;
  std::uint32_t payload_len = 0;
  std::uint64_t payload_checksum = 0;

  void encode_into(std::uint8_t* out) const;  // kSize bytes, checksummed
  static std::optional<BatchHeader> decode(std::span<const std::uint8_t> bytes, std::string& why);
  std::uint64_t padded_bytes() const;  // header + payload rounded to blocks
};

// Header of one frame of a checkpoint stream (frames are back to back).
struct FrameHeader {
  static constexpr std::size_t kSize = 40;
  std::uint64_t uuid_tag = 0;
  std::uint64_t index = 0;  // 0, 1, 2, ...
  std::uint32_t payload_len = 0;
  std::uint32_t record_count = 0;
  std::uint64_t payload_checksum = 0;

  // The payload checksum is seeded with the header fields, so damage to
  // either is caught by one comparison.
  std::uint64_t seed() const;
  void encode_into(std::uint8_t* out) const;
  static std::optional<FrameHeader> decode(std::span<const std::uint8_t> bytes, std::string& why);
};

}  // namespace dhfs
