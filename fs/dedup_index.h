// DedupIndex: which files hold which contents, by whole-file content hash.
// Built at mount from the hashes the inodes carry (persisted as
// ContentHashRec) and kept current as files are closed, changed and
// removed. A holder is only a candidate: dedup verifies byte by byte before
// sharing anything.
//
// Not thread-safe: FileSystem guards it with meta_mu_.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "fs/content_hash.h"
#include "fs/records.h"

namespace dhfs {

struct DedupKey {
  ContentHash hash;
  std::uint64_t size = 0;
  std::uint32_t scope = 0;  // the region with dedup_scope=region, else 0
  friend bool operator==(const DedupKey&, const DedupKey&) = default;
};

struct DedupHolder {
  Ino ino = 0;
  std::uint64_t generation = 0;
  friend bool operator==(const DedupHolder&, const DedupHolder&) = default;
};

class DedupIndex {
 public:
  // A few holders per key are kept, so that the contents stay findable
  // when one of them is changed or removed.
  static constexpr std::size_t kHoldersPerKey = 4;

  void add(const DedupKey& key, DedupHolder holder);
  void remove(const DedupKey& key, Ino ino);
  const std::vector<DedupHolder>* find(const DedupKey& key) const;
  std::size_t keys() const { return map_.size(); }

 private:
  struct Hash {
    std::size_t operator()(const DedupKey& k) const { return k.hash.lo ^ (k.hash.hi * 31) ^ (k.size * 131) ^ k.scope; }
  };
  std::unordered_map<DedupKey, std::vector<DedupHolder>, Hash> map_;
};

}  // namespace dhfs
