// Metadata records: the one vocabulary of both the journal and checkpoint
// streams. Every record sets the state of one object (an inode's attributes,
// one directory entry, a range of a file's block map, one xattr) to a value,
// instead of describing a change. Replaying a record twice, or replaying it
// on top of a state that already contains it, therefore gives the same
// result, which is what allows checkpoints to be written while the
// filesystem keeps changing.
//
// Encoding: u8 type, u32 body length, body (little-endian fields).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "alloc/extent.h"

namespace dhfs {

using Ino = std::uint64_t;

inline constexpr std::size_t kNameMax = 255;
// Bounds that no valid record exceeds (the inode table is indexed by number,
// and a device has fewer than 2^50 blocks): a record beyond them is damage.
inline constexpr Ino kMaxIno = 1ULL << 32;
inline constexpr std::uint64_t kMaxBlock = 1ULL << 50;
inline constexpr std::size_t kSymlinkMax = 4095;
inline constexpr std::size_t kXattrNameMax = 255;
inline constexpr std::size_t kXattrValueMax = 65536;

enum class RecordType : std::uint8_t {
  kInode = 1,       // full attributes of an inode (creates it if absent)
  kInodeFree = 2,   // the inode and everything it owns is gone
  kDirentSet = 3,   // parent/name -> child
  kDirentDel = 4,   // parent/name removed
  kExtentSet = 5,   // file blocks [lblk, lblk+len) -> device blocks (0: hole)
  kXattrSet = 6,
  kXattrDel = 7,
  kRefcountSet = 8,  // device blocks [pblk, pblk+len) have `count` references
  kRegionSet = 9,    // a container region: its root and reserved slices
  kRegionDel = 10,   // the region ended
  kConfigSet = 11,   // a persisted setting (name -> value)
  kContentHash = 12, // the whole-file content hash of a regular file (dedup)
};

// Extent flags.
inline constexpr std::uint32_t kExtentUnwritten = 1;  // allocated by fallocate, reads as zeros
// A packed extent: a small file's bytes lie inside one block shared with
// other small files (fs/pack_blocks.h), starting packed_offset(flags) bytes
// into it. It maps file block 0 only, with len 1, and offset + size of the
// file stays within the block.
inline constexpr std::uint32_t kExtentPacked = 2;
inline constexpr std::uint32_t kPackedOffsetShift = 16;
inline constexpr std::uint32_t kPackedOffsetMask = 0xFFFu << kPackedOffsetShift;
inline constexpr std::uint32_t kKnownExtentFlags = kExtentUnwritten | kExtentPacked | kPackedOffsetMask;

inline std::uint32_t packed_flags(std::uint32_t offset) { return kExtentPacked | (offset << kPackedOffsetShift); }
inline std::uint32_t packed_offset(std::uint32_t flags) { return (flags & kPackedOffsetMask) >> kPackedOffsetShift; }
inline bool is_packed(std::uint32_t flags) { return flags & kExtentPacked; }
// Flags a decoded extent may carry: known bits only, an offset only on a
// packed extent, a packed extent mapped (pblk != 0), one block long, at file
// block 0 and not unwritten.
inline bool valid_extent_flags(std::uint64_t lblk, std::uint64_t len, std::uint64_t pblk, std::uint32_t flags) {
  if (flags & ~kKnownExtentFlags) return false;
  if (!is_packed(flags)) return (flags & kPackedOffsetMask) == 0;
  return pblk != 0 && lblk == 0 && len == 1 && !(flags & kExtentUnwritten);
}

struct InodeRec {
  Ino ino = 0;
  std::uint64_t generation = 0;
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t nlink = 0;
  std::uint32_t rdev = 0;
  std::uint64_t size = 0;
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::int64_t btime_ns = 0;
  std::uint32_t flags = 0;
  std::uint32_t region = 0;
  std::string_view symlink;  // symlinks only
  friend bool operator==(const InodeRec&, const InodeRec&) = default;
};
struct InodeFreeRec {
  Ino ino = 0;
  friend bool operator==(const InodeFreeRec&, const InodeFreeRec&) = default;
};
struct DirentSetRec {
  Ino parent = 0;
  Ino child = 0;
  std::uint8_t dtype = 0;  // DT_* of the child
  std::string_view name;
  friend bool operator==(const DirentSetRec&, const DirentSetRec&) = default;
};
struct DirentDelRec {
  Ino parent = 0;
  std::string_view name;
  friend bool operator==(const DirentDelRec&, const DirentDelRec&) = default;
};
struct ExtentSetRec {
  Ino ino = 0;
  std::uint64_t lblk = 0;
  std::uint64_t len = 0;   // blocks; may reach to the end of the address space
  BlockNo pblk = 0;        // 0: unmapped (hole)
  std::uint32_t flags = 0;
  friend bool operator==(const ExtentSetRec&, const ExtentSetRec&) = default;
};
struct XattrSetRec {
  Ino ino = 0;
  std::string_view name;
  std::string_view value;
  friend bool operator==(const XattrSetRec&, const XattrSetRec&) = default;
};
struct XattrDelRec {
  Ino ino = 0;
  std::string_view name;
  friend bool operator==(const XattrDelRec&, const XattrDelRec&) = default;
};

struct RefcountSetRec {
  BlockNo pblk = 0;
  std::uint64_t len = 0;
  std::uint32_t count = 0;  // 0 or 1: not shared (the range leaves the table)
  friend bool operator==(const RefcountSetRec&, const RefcountSetRec&) = default;
};
struct RegionSetRec {
  std::uint32_t id = 0;
  Ino root = 0;                   // the directory that owns the region
  std::uint32_t flags = 0;
  std::vector<Extent> reserved;   // at most kMaxRegionSlices
  friend bool operator==(const RegionSetRec&, const RegionSetRec&) = default;
};
struct RegionDelRec {
  std::uint32_t id = 0;
  friend bool operator==(const RegionDelRec&, const RegionDelRec&) = default;
};
struct ConfigSetRec {
  std::string_view name;   // 1..64 bytes
  std::string_view value;  // up to 4096 bytes
  friend bool operator==(const ConfigSetRec&, const ConfigSetRec&) = default;
};
// ContentHashRec::valid: what the hash is.
inline constexpr std::uint8_t kContentHashWithdrawn = 0;
inline constexpr std::uint8_t kContentHashWholeXxh3 = 1;  // retired: XXH3-128 of the whole contents; dropped on load
inline constexpr std::uint8_t kContentHashChunked = 2;    // file_hash_of (fs/content_hash.h)

// The content hash of a regular file, as the file had `size` bytes, of the
// kind `valid` names; kContentHashWithdrawn withdraws it (the file changed
// since). Dedup finds files with identical contents through these (see
// fs/dedup_index.h).
struct ContentHashRec {
  Ino ino = 0;
  std::uint8_t valid = 0;
  std::uint64_t size = 0;
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  friend bool operator==(const ContentHashRec&, const ContentHashRec&) = default;
};
inline constexpr std::size_t kMaxRegionSlices = 4096;

using Record = std::variant<InodeRec, InodeFreeRec, DirentSetRec, DirentDelRec, ExtentSetRec, XattrSetRec, XattrDelRec,
                            RefcountSetRec, RegionSetRec, RegionDelRec, ConfigSetRec, ContentHashRec>;

// Appends encoded records to a byte buffer.
class RecordWriter {
 public:
  explicit RecordWriter(std::vector<std::uint8_t>& out) : out_(out) {}
  void add(const Record& r);
  std::uint32_t count() const { return count_; }

 private:
  std::vector<std::uint8_t>& out_;
  std::uint32_t count_ = 0;
};

// Decodes `bytes` record by record. The views in each Record point into
// `bytes`. Stops and returns false with `why` set on the first malformed
// record; returns false without `why` if `fn` returned false.
bool decode_records(std::span<const std::uint8_t> bytes, const std::function<bool(const Record&)>& fn,
                    std::string& why);

// One of the seven POSIX file types.
bool valid_file_type(std::uint32_t mode);

// A name a directory can hold: 1..255 bytes, no '/' or NUL, not "." or "..".
bool valid_name(std::string_view name);

}  // namespace dhfs
