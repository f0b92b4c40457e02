#include "fs/format.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

#include "fs/codec.h"
#include "fs/xxh.h"

namespace dhfs {

namespace {

constexpr std::size_t kChecksumOffset = kBlockSize - 8;

// Pads `bytes` to a full block and stores the block's checksum in its last
// eight bytes.
std::vector<std::uint8_t> seal_block(std::vector<std::uint8_t> bytes) {
  bytes.resize(kBlockSize, 0);
  std::uint64_t sum = checksum({bytes.data(), kChecksumOffset});
  std::memcpy(bytes.data() + kChecksumOffset, &sum, 8);
  return bytes;
}

bool block_checksum_ok(std::span<const std::uint8_t> block) {
  if (block.size() < kBlockSize) return false;
  std::uint64_t stored;
  std::memcpy(&stored, block.data() + kChecksumOffset, 8);
  return stored == checksum(block.first(kChecksumOffset));
}

}  // namespace

std::uint64_t checksum(std::span<const std::uint8_t> bytes, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

std::string uuid_to_string(const Uuid& u) {
  std::string s;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", u[i]);
  }
  return s;
}

Uuid make_random_uuid() {
  Uuid u{};
  std::size_t got = 0;
  while (got < u.size()) {
    ssize_t n = getrandom(u.data() + got, u.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  u[6] = static_cast<std::uint8_t>((u[6] & 0x0f) | 0x40);  // version 4
  u[8] = static_cast<std::uint8_t>((u[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return u;
}

// ---------------------------------------------------------------- superblock

Superblock Superblock::for_device(std::uint64_t device_bytes) {
  Superblock sb;
  sb.total_blocks = device_bytes / kBlockSize;
  return sb.with_journal(std::clamp<std::uint64_t>(sb.total_blocks / 64, kMinJournalBlocks, kMaxJournalBlocks));
}

Superblock Superblock::with_journal(std::uint64_t blocks) const {
  Superblock sb = *this;
  sb.journal_blocks = blocks;
  sb.journal_start = kJournalStart;
  sb.data_start = sb.journal_start + sb.journal_blocks;
  sb.data_blocks = sb.total_blocks - 1 - sb.data_start;  // the last block holds the backup
  return sb;
}

Superblock Superblock::grown_to(std::uint64_t blocks) const {
  Superblock sb = *this;
  sb.total_blocks = blocks;
  sb = sb.with_journal(journal_blocks);
  const bool rule_differs = for_device(blocks * kBlockSize).journal_blocks != journal_blocks;
  sb.feature_incompat =
      rule_differs ? feature_incompat | kIncompatJournalFixed : feature_incompat & ~kIncompatJournalFixed;
  return sb;
}

std::uint64_t Superblock::uuid_tag() const { return XXH3_64bits_withSeed(uuid.data(), uuid.size(), salt); }

std::vector<std::uint8_t> Superblock::encode() const {
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  w.put(kSuperMagic);
  w.put(version);
  w.put(block_size);
  w.put(total_blocks);
  w.put_bytes(uuid.data(), uuid.size());
  w.put(feature_compat);
  w.put(feature_incompat);
  w.put(feature_ro_compat);
  w.put(journal_start);
  w.put(journal_blocks);
  w.put(data_start);
  w.put(data_blocks);
  w.put(created_ns);
  char lbl[64] = {};
  std::memcpy(lbl, label.data(), std::min<std::size_t>(label.size(), 63));
  w.put_bytes(lbl, sizeof lbl);
  w.put(salt);
  return seal_block(std::move(out));
}

std::optional<Superblock> Superblock::decode(std::span<const std::uint8_t> block, std::string& why) {
  ByteReader r(block);
  if (r.get<std::uint64_t>() != kSuperMagic) {
    why = "no dhfs superblock (bad magic)";
    return std::nullopt;
  }
  if (!block_checksum_ok(block)) {
    why = "superblock checksum mismatch";
    return std::nullopt;
  }
  Superblock sb;
  sb.version = r.get<std::uint32_t>();
  sb.block_size = r.get<std::uint32_t>();
  sb.total_blocks = r.get<std::uint64_t>();
  auto u = r.get_bytes(16);
  if (r.ok()) std::memcpy(sb.uuid.data(), u.data(), 16);
  sb.feature_compat = r.get<std::uint64_t>();
  sb.feature_incompat = r.get<std::uint64_t>();
  sb.feature_ro_compat = r.get<std::uint64_t>();
  sb.journal_start = r.get<std::uint64_t>();
  sb.journal_blocks = r.get<std::uint64_t>();
  sb.data_start = r.get<std::uint64_t>();
  sb.data_blocks = r.get<std::uint64_t>();
  sb.created_ns = r.get<std::int64_t>();
  auto lbl = r.get_string(64);
  sb.label = std::string(lbl.substr(0, lbl.find('\0')));
  sb.salt = r.get<std::uint64_t>();
  if (!r.ok()) {
    why = "superblock truncated";
    return std::nullopt;
  }
  if (sb.version != kFormatVersion) {
    why = fmt::format("unsupported format version {} (this dhfs reads version {})", sb.version, kFormatVersion);
    return std::nullopt;
  }
  if (sb.block_size != kBlockSize) {
    why = fmt::format("unsupported block size {}", sb.block_size);
    return std::nullopt;
  }
  if (sb.feature_incompat & ~kKnownIncompat) {
    why = fmt::format("unknown incompatible features {:#x}", sb.feature_incompat & ~kKnownIncompat);
    return std::nullopt;
  }
  // The layout is fully determined by the total size, and by the journal
  // size mkfs chose where the filesystem was grown since (JOURNAL_FIXED);
  // anything else means the superblock lies.
  if (sb.total_blocks > (1ULL << 50) || sb.total_blocks * kBlockSize < kMinDeviceBytes) {
    why = "superblock geometry is inconsistent";
    return std::nullopt;
  }
  const Superblock rule = for_device(sb.total_blocks * kBlockSize);
  Superblock expect = rule;
  if (sb.feature_incompat & kIncompatJournalFixed) {
    // Growing never shrinks the share of the journal below what mkfs gave
    // a smaller device, and the rule grows with the device.
    if (sb.journal_blocks < kMinJournalBlocks || sb.journal_blocks > rule.journal_blocks) {
      why = "superblock geometry is inconsistent";
      return std::nullopt;
    }
    expect = rule.with_journal(sb.journal_blocks);
  }
  if (sb.journal_start != expect.journal_start || sb.journal_blocks != expect.journal_blocks ||
      sb.data_start != expect.data_start || sb.data_blocks != expect.data_blocks) {
    why = "superblock geometry is inconsistent";
    return std::nullopt;
  }
  return sb;
}

bool Superblock::check_geometry(std::uint64_t device_bytes, std::string& why) const {
  if (device_bytes < total_blocks * kBlockSize) {
    why = fmt::format("device is truncated: filesystem needs {} bytes, device has {}", total_blocks * kBlockSize,
                      device_bytes);
    return false;
  }
  return true;
}

// ------------------------------------------------------------ checkpoint root

std::vector<std::uint8_t> CheckpointRoot::encode() const {
  std::vector<std::uint8_t> out;
  ByteWriter w(out);
  w.put(kRootSlotMagic);
  w.put(seq);
  w.put(uuid_tag);
  w.put(replay_lsn);
  w.put(stream_bytes);
  w.put(frame_count);
  w.put(next_generation);
  w.put(written_ns);
  w.put(static_cast<std::uint32_t>(extents.size()));
  w.put(std::uint32_t{0});
  for (const Extent& e : extents) {
    w.put(e.start);
    w.put(e.len);
  }
  return seal_block(std::move(out));
}

std::optional<CheckpointRoot> CheckpointRoot::decode(std::span<const std::uint8_t> block, std::uint64_t uuid_tag,
                                                     std::string& why) {
  ByteReader r(block);
  if (r.get<std::uint64_t>() != kRootSlotMagic) {
    bool zero = std::all_of(block.begin(), block.end(), [](std::uint8_t b) { return b == 0; });
    why = zero ? "empty" : "bad magic";
    return std::nullopt;
  }
  if (!block_checksum_ok(block)) {
    why = "checksum mismatch";
    return std::nullopt;
  }
  CheckpointRoot root;
  root.seq = r.get<std::uint64_t>();
  root.uuid_tag = r.get<std::uint64_t>();
  root.replay_lsn = r.get<std::uint64_t>();
  root.stream_bytes = r.get<std::uint64_t>();
  root.frame_count = r.get<std::uint64_t>();
  root.next_generation = r.get<std::uint64_t>();
  root.written_ns = r.get<std::int64_t>();
  auto n = r.get<std::uint32_t>();
  r.get<std::uint32_t>();
  if (n > kMaxExtents) {
    why = "too many extents";
    return std::nullopt;
  }
  std::uint64_t capacity = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    Extent e{r.get<std::uint64_t>(), r.get<std::uint64_t>()};
    capacity += e.len * kBlockSize;
    root.extents.push_back(e);
  }
  if (!r.ok()) {
    why = "truncated";
    return std::nullopt;
  }
  if (root.uuid_tag != uuid_tag) {
    why = "belongs to another filesystem";
    return std::nullopt;
  }
  if (root.stream_bytes > capacity) {
    why = "stream longer than its extents";
    return std::nullopt;
  }
  if (root.replay_lsn % kBlockSize != 0) {
    why = "replay position not block aligned";
    return std::nullopt;
  }
  return root;
}

// --------------------------------------------------------------- batch header

void BatchHeader::encode_into(std::uint8_t* out) const {
  std::vector<std::uint8_t> b;
  ByteWriter w(b);
  w.put(kBatchMagic);
  w.put(uuid_tag);
  w.put(lsn);
  w.put(first_seq);
  w.put(txn_count);
  w.put(payload_len);
  w.put(payload_checksum);
  b.resize(kSize - 8, 0);
  std::uint64_t sum = checksum(b);
  w.put(sum);
  std::memcpy(out, b.data(), kSize);
}

std::optional<BatchHeader> BatchHeader::decode(std::span<const std::uint8_t> bytes, std::string& why) {
  if (bytes.size() < kSize) {
    why = "short batch header";
    return std::nullopt;
  }
  ByteReader r(bytes.first(kSize));
  if (r.get<std::uint64_t>() != kBatchMagic) {
    why = "no batch";
    return std::nullopt;
  }
  BatchHeader h;
  h.uuid_tag = r.get<std::uint64_t>();
  h.lsn = r.get<std::uint64_t>();
  h.first_seq = r.get<std::uint64_t>();
  h.txn_count = r.get<std::uint32_t>();
  h.payload_len = r.get<std::uint32_t>();
  h.payload_checksum = r.get<std::uint64_t>();
  std::uint64_t stored;
  std::memcpy(&stored, bytes.data() + kSize - 8, 8);
  if (stored != checksum(bytes.first(kSize - 8))) {
    why = "batch header checksum mismatch";
    return std::nullopt;
  }
  return h;
}

std::uint64_t BatchHeader::padded_bytes() const {
  std::uint64_t n = kSize + payload_len;
  return (n + kBlockSize - 1) / kBlockSize * kBlockSize;
}

// --------------------------------------------------------------- frame header

std::uint64_t FrameHeader::seed() const {
  return uuid_tag ^ (index * 0x9e3779b97f4a7c15ULL) ^ (std::uint64_t{payload_len} << 32 | record_count);
}

void FrameHeader::encode_into(std::uint8_t* out) const {
  std::vector<std::uint8_t> b;
  ByteWriter w(b);
  w.put(kFrameMagic);
  w.put(uuid_tag);
  w.put(index);
  w.put(payload_len);
  w.put(record_count);
  w.put(payload_checksum);
  std::memcpy(out, b.data(), kSize);
}

std::optional<FrameHeader> FrameHeader::decode(std::span<const std::uint8_t> bytes, std::string& why) {
  ByteReader r(bytes);
  if (r.get<std::uint64_t>() != kFrameMagic) {
    why = "bad frame magic";
    return std::nullopt;
  }
  FrameHeader h;
  h.uuid_tag = r.get<std::uint64_t>();
  h.index = r.get<std::uint64_t>();
  h.payload_len = r.get<std::uint32_t>();
  h.record_count = r.get<std::uint32_t>();
  h.payload_checksum = r.get<std::uint64_t>();
  if (!r.ok()) {
    why = "short frame header";
    return std::nullopt;
  }
  return h;
}

}  // namespace dhfs
