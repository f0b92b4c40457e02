// Inode: everything dhfs knows about one file, held in memory. The payload
// depends on the file type: a block map for regular files, entries for
// directories, a target for symlinks.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "fs/content_hash.h"
#include "fs/directory.h"
#include "fs/extent_map.h"
#include "fs/records.h"

namespace dhfs {

inline constexpr Ino kRootIno = 1;

// Inode flags.
inline constexpr std::uint32_t kInodeRegionRoot = 1;  // a directory that owns a container region

using XattrMap = std::map<std::string, std::string, std::less<>>;

struct Inode {
  Ino ino = 0;
  std::uint64_t generation = 0;
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t nlink = 0;
  std::uint32_t rdev = 0;
  std::uint32_t flags = 0;
  std::uint32_t region = 0;
  std::uint64_t size = 0;
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::int64_t btime_ns = 0;

  // Not persisted: references held by the kernel (FUSE lookup count) and
  // open handles. An inode without links lives on until both reach zero.
  std::uint64_t lookups = 0;
  std::uint32_t opens = 0;
  Ino parent = 0;  // directories: the directory holding it (for "..")

  // Dedup (fs/dedup.cc). `content_hash` is the hash of the whole file as it
  // is now, persisted as a ContentHashRec; any change of the contents
  // withdraws it first. `data_version` changes (to a value no inode had
  // before, through std::atomic_ref under the shared meta_mu_) before each
  // change of the contents starts, so that dedup can tell the file stayed
  // as it compared it. `stream` hashes sequential writes while the file is open.
  bool hash_valid = false;
  bool hash_withdrawing = false;  // withdrawn, not yet durable
  ContentHash content_hash;
  std::uint64_t data_version = 0;
  std::uint64_t version_at_open = 0;
  std::shared_ptr<HashStream> stream;

  std::unique_ptr<ExtentMap> map;       // regular files
  std::unique_ptr<Directory> dir;       // directories
  std::unique_ptr<std::string> target;  // symlinks
  std::unique_ptr<XattrMap> xattrs;

  bool is_dir() const { return S_ISDIR(mode); }
  bool is_reg() const { return S_ISREG(mode); }
  bool is_symlink() const { return S_ISLNK(mode); }
  bool in_use() const { return nlink > 0 || lookups > 0 || opens > 0; }

  std::uint64_t allocated_blocks() const { return map ? map->mapped_blocks() : 0; }

  // Creates the payload matching the file type (after `mode` is set).
  void init_payload() {
    map.reset();
    dir.reset();
    target.reset();
    if (is_reg()) map = std::make_unique<ExtentMap>();
    if (is_dir()) dir = std::make_unique<Directory>();
    if (is_symlink()) target = std::make_unique<std::string>();
  }

  InodeRec to_record() const {
    InodeRec r;
    r.ino = ino;
    r.generation = generation;
    r.mode = mode;
    r.uid = uid;
    r.gid = gid;
    r.nlink = nlink;
    r.rdev = rdev;
    r.size = size;
    r.atime_ns = atime_ns;
    r.mtime_ns = mtime_ns;
    r.ctime_ns = ctime_ns;
    r.btime_ns = btime_ns;
    r.flags = flags;
    r.region = region;
    if (target) r.symlink = *target;
    return r;
  }

  void apply_attrs(const InodeRec& r) {
    generation = r.generation;
    mode = r.mode;
    uid = r.uid;
    gid = r.gid;
    nlink = r.nlink;
    rdev = r.rdev;
    size = r.size;
    atime_ns = r.atime_ns;
    mtime_ns = r.mtime_ns;
    ctime_ns = r.ctime_ns;
    btime_ns = r.btime_ns;
    flags = r.flags;
    region = r.region;
  }
};

inline std::uint8_t dtype_of(std::uint32_t mode) { return static_cast<std::uint8_t>((mode & S_IFMT) >> 12); }

}  // namespace dhfs
