// ChunkIndex: remembers where recently written chunks of data live, by
// content, so that a later write of identical bytes can share the stored
// blocks instead of writing them again. This is what makes an overlayfs
// copy-up (the kernel reads the lower file and writes the same bytes into a
// new upper file) cost no space: the upper file's writes find the lower
// file's chunks here.
//
// A chunk is an aligned 64 KiB window of a file's data (or the shorter last
// window of a file); the key is its XXH3-128 hash and its length. Windows
// are remembered when they are written and when they are read, so a copy-up
// finds a lower file that was only read since the daemon started. An entry
// is only a hint: the caller verifies byte by byte, against the file the
// entry names, before sharing anything. Thread-safe; bounded in size (oldest
// entries go first): 256k entries, about 25 MiB, cover the last 16 GiB.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>

#include "fs/records.h"

namespace dhfs {

inline constexpr std::uint64_t kChunkBytes = 64 << 10;

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
  explicit ChunkIndex(std::size_t max_entries = 1 << 18) : max_(max_entries) {}

  // Calls fn(window_off, window_len) for every chunk inside the bytes
  // [off, off + len) of a file of `file_size` bytes: the whole aligned
  // windows, and the last window of the file if it ends inside the range.
  template <typename Fn>
  static void for_windows(std::uint64_t off, std::uint64_t len, std::uint64_t file_size, Fn&& fn) {
    const std::uint64_t end = off + len;
    for (std::uint64_t w = (off + kChunkBytes - 1) / kChunkBytes * kChunkBytes; w < end; w += kChunkBytes) {
      const std::uint64_t wend = std::min(w + kChunkBytes, file_size);
      if (wend > w && wend <= end) fn(w, wend - w);
    }
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
