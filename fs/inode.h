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

// What an open file needs while it is open (fs/dedup.cc): kept apart so
// that the million closed inodes of an image do not pay for it.
struct OpenFileState {
  std::uint64_t version_at_open = 0;   // data_version when the first handle opened
  std::shared_ptr<HashStream> stream;  // hashes sequential writes from offset 0
};

// Fields are ordered by size so that the struct has no holes: a host with
// a million files holds a million of these (issue 7 asks for at most 300
// bytes per inode in all).
struct Inode {
  Inode() = default;
  ~Inode() { drop_payload(); }
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  Ino ino = 0;
  std::uint64_t generation = 0;
  std::uint64_t size = 0;
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::int64_t btime_ns = 0;

  // Not persisted: references held by the kernel (FUSE lookup count) and
  // open handles. An inode without links lives on until both reach zero.
  std::uint64_t lookups = 0;

  // Dedup (fs/dedup.cc). `content_hash` is the hash of the whole file as it
  // is now, persisted as a ContentHashRec; any change of the contents
  // withdraws it first. `data_version` changes (to a value no inode had
  // before, through std::atomic_ref under the shared meta_mu_) before each
  // change of the contents starts, so that dedup can tell the file stayed
  // as it compared it. `open_state` exists while a regular file is open.
  ContentHash content_hash;
  std::uint64_t data_version = 0;
  std::unique_ptr<OpenFileState> open_state;

  std::unique_ptr<XattrMap> xattrs;

 private:
  // One owned object whose type kind_ names (see map()): one pointer
  // instead of three, as no inode has more than one of them. Declared here
  // and below rather than together so that they fill the struct's gaps.
  enum class Payload : std::uint8_t { kNone, kMap, kDir, kTarget };
  void* payload_ = nullptr;

 public:
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t nlink = 0;
  std::uint32_t rdev = 0;
  std::uint32_t flags = 0;
  std::uint32_t region = 0;
  std::uint32_t opens = 0;

  bool hash_valid = false;
  bool hash_withdrawing = false;  // withdrawn, not yet durable
  // Someone asked where its data lies (SEEK_DATA / SEEK_HOLE), as overlayfs
  // and cp do before they copy a file: until its last handle closes, the
  // blocks its reads serve stay in memory for the copy's comparison (see
  // FileSystem::read_locked). In memory only; set and read through
  // std::atomic_ref (set under the shared lock, cleared under the
  // exclusive one).
  bool copy_source = false;
  // Made by MKNOD under overlayfs's temporary name and neither opened nor
  // renamed since: what an overlay copy-up writes into (see
  // copy_up_target.h). In memory only; under meta_mu_.
  bool copy_up_target = false;

 private:
  Payload kind_ = Payload::kNone;

 public:
  bool is_dir() const { return S_ISDIR(mode); }
  bool is_reg() const { return S_ISREG(mode); }
  bool is_symlink() const { return S_ISLNK(mode); }
  bool in_use() const { return nlink > 0 || lookups > 0 || opens > 0; }

  // The payload matching the file type: a block map for regular files,
  // entries for directories, a target for symlinks; null for the others
  // (and for a type the payload was not made for).
  ExtentMap* map() const { return kind_ == Payload::kMap ? static_cast<ExtentMap*>(payload_) : nullptr; }
  Directory* dir() const { return kind_ == Payload::kDir ? static_cast<Directory*>(payload_) : nullptr; }
  std::string* target() const { return kind_ == Payload::kTarget ? static_cast<std::string*>(payload_) : nullptr; }

  // Directories: the directory holding it (for ".."); 0 for other types.
  Ino parent() const { return dir() ? dir()->parent() : 0; }
  void set_parent(Ino p) {
    if (Directory* d = dir()) d->set_parent(p);
  }

  std::uint64_t allocated_blocks() const { return map() ? map()->mapped_blocks() : 0; }
  // A small file whose bytes lie in a pack block (see PackBlocks).
  bool packed() const { return map() && !map()->empty() && is_packed(map()->begin()->flags); }

  // Creates the payload matching the file type (after `mode` is set); an
  // old payload goes.
  void init_payload() {
    drop_payload();
    if (is_reg()) set_payload(new ExtentMap, Payload::kMap);
    if (is_dir()) set_payload(new Directory, Payload::kDir);
    if (is_symlink()) set_payload(new std::string, Payload::kTarget);
  }
  // True if the payload is the one init_payload() makes for `mode`.
  bool payload_matches_mode() const {
    const Payload want = is_reg() ? Payload::kMap : is_dir() ? Payload::kDir : is_symlink() ? Payload::kTarget
                                                                                             : Payload::kNone;
    return kind_ == want;
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
    if (target()) r.symlink = *target();
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

 private:
  void set_payload(void* p, Payload kind) {
    payload_ = p;
    kind_ = kind;
  }
  void drop_payload() {
    if (kind_ == Payload::kMap) delete map();
    if (kind_ == Payload::kDir) delete dir();
    if (kind_ == Payload::kTarget) delete target();
    set_payload(nullptr, Payload::kNone);
  }
};

// The budget above: 152 bytes, a 160-byte malloc chunk.
static_assert(sizeof(Inode) <= 152);

inline std::uint8_t dtype_of(std::uint32_t mode) { return static_cast<std::uint8_t>((mode & S_IFMT) >> 12); }

}  // namespace dhfs
