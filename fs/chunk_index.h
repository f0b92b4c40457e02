// ChunkIndex: remembers where recently written chunks of data live, by
// content, so that a later write of identical bytes can share the stored
// blocks instead of writing them again. This is what makes an overlayfs
// copy-up (the kernel reads the lower file and writes the same bytes into a
// new upper file) cost no space: the upper file's writes find the lower
// file's chunks here.
//
// A chunk is the data of one write that starts on a 1 MiB boundary and
// covers the whole 1 MiB window (or ends the file before the window ends);
// the key is its XXH3-128 hash and its length. An entry is only a hint: the
// caller verifies byte by byte, against the file the entry names, before
// sharing anything. Thread-safe; bounded in size (oldest entries go first).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>

#include "fs/records.h"

namespace dhfs {

inline constexpr std::uint64_t kChunkBytes = 1 << 20;

struct ChunkKey {
  std::uint64_t lo = 0;
  std::uint64_t hi = 0;
  std::uint32_t len = 0;
  friend bool operator==(const ChunkKey&, const ChunkKey&) = default;
};

struct ChunkHome {
  Ino ino = 0;
  std::uint64_t generation = 0;  // the inode number may be reused
  std::uint64_t lblk = 0;        // first file block of the chunk
};

class ChunkIndex {
 public:
  explicit ChunkIndex(std::size_t max_entries = 1 << 20) : max_(max_entries) {}

  // True if a write of `len` bytes at `off` to a file whose size is then
  // `size_after` is a chunk.
  static bool is_chunk(std::uint64_t off, std::uint64_t len, std::uint64_t size_after) {
    return off % kChunkBytes == 0 && len > 0 && (len == kChunkBytes || (len < kChunkBytes && off + len >= size_after));
  }
  static ChunkKey key_of(std::span<const std::byte> data);

  void remember(const ChunkKey& key, const ChunkHome& home);
  std::optional<ChunkHome> find(const ChunkKey& key) const;
  void forget(const ChunkKey& key);
  std::size_t size() const;

 private:
  struct Hash {
    std::size_t operator()(const ChunkKey& k) const { return k.lo ^ (k.hi * 31) ^ k.len; }
  };
  mutable std::mutex mu_;
  std::unordered_map<ChunkKey, ChunkHome, Hash> map_;
  std::deque<ChunkKey> order_;  // insertion order, for eviction
  std::size_t max_;
};

}  // namespace dhfs
