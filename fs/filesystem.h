// FileSystem: the dhfs core. A C++ API with POSIX semantics over one device;
// the FUSE adapter (fuse_adapter.cc) only translates requests to these calls,
// and the unit tests drive it directly.
//
// Metadata lives in memory (InodeTable) and is persisted through the
// journal and checkpoints; no request reads metadata from the device.
//
// Locking, outermost first:
//   io lock of an inode (striped shared_mutex): held across device I/O of
//     that file's data; shared for reads, exclusive for anything that
//     changes its block map or size.
//   meta_mu_ (shared_mutex): all in-memory metadata. Never held across
//     device I/O. Journal appends happen under it, so the log order of
//     records equals the order in which memory changed.
//   Journal, Allocator: internal leaf locks.
// Every mutating call first passes the journal's admission (backpressure)
// before taking any lock.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "alloc/allocator.h"
#include "alloc/refcount_table.h"
#include "fs/device.h"
#include "fs/chunk_index.h"
#include "fs/dedup_index.h"
#include "fs/range_locks.h"
#include "fs/unshared_blocks.h"
#include "fs/format.h"
#include "fs/inode_table.h"
#include "fs/journal.h"
#include "fs/loader.h"
#include "fs/region_policy.h"
#include "fs/options.h"
#include "fs/pack_blocks.h"
#include "fs/periodic_task.h"
#include "fs/prefetched_blocks.h"
#include "fs/txn.h"

namespace dhfs {

struct Cred {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};

// What stat() reports for an inode.
struct Attr {
  Ino ino = 0;
  std::uint64_t generation = 0;
  std::uint32_t mode = 0;
  std::uint32_t nlink = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint32_t rdev = 0;
  std::uint64_t size = 0;
  std::uint64_t blocks = 0;  // 512-byte units, as st_blocks
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
};

struct SetAttr {
  enum : std::uint32_t {
    kMode = 1 << 0,
    kUid = 1 << 1,
    kGid = 1 << 2,
    kSize = 1 << 3,
    kAtime = 1 << 4,
    kMtime = 1 << 5,
    kAtimeNow = 1 << 6,
    kMtimeNow = 1 << 7,
    kCtime = 1 << 8,
    // Clear S_ISUID, and S_ISGID if the group may execute (what Linux does
    // on chown, and on writes and truncates by callers without CAP_FSETID).
    kKillSuidgid = 1 << 9,
    // With kKillSuidgid: clear S_ISGID even without group execute (Linux
    // does for callers outside the file's group without CAP_FSETID).
    kKillSgid = 1 << 10,
  };
  std::uint32_t valid = 0;
  std::uint32_t mode = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
};

struct DirListEntry {
  std::string_view name;
  Ino ino = 0;
  std::uint8_t dtype = 0;
  std::uint64_t next_cookie = 0;  // pass this to continue after the entry
};

// A container region, for dhfsctl.
struct RegionReport {
  std::uint32_t id = 0;
  Ino root = 0;
  std::string root_path;               // relative to the filesystem root
  std::uint64_t reserved_blocks = 0;   // slices it holds now
  std::uint64_t used_blocks = 0;       // of those, allocated
  std::uint64_t shared_blocks = 0;     // of those, referenced by more than one block map
  std::uint64_t reclaimed_blocks = 0;  // taken back under pressure since mount
  std::uint32_t slices = 0;
};

// How a file lies on the device, for dhfsctl frag.
struct FragReport {
  std::uint64_t size = 0;
  std::uint64_t extents = 0;
  std::uint64_t mapped_blocks = 0;
  std::uint64_t shared_blocks = 0;     // mapped blocks others reference too
  std::uint64_t in_region_blocks = 0;  // mapped blocks inside the file's own region
  std::uint32_t region = 0;
};

// What FileSystem::grow did.
struct GrowOutcome {
  std::uint64_t old_bytes = 0;     // the filesystem before
  std::uint64_t new_bytes = 0;     // and after (old_bytes if nothing changed)
  std::uint64_t device_bytes = 0;  // the medium's size as last seen
};

struct FsStats {
  std::uint64_t block_size = kBlockSize;
  std::uint64_t total_blocks = 0;      // data area
  std::uint64_t free_blocks = 0;       // free now or once the journal commits
  std::uint64_t available_blocks = 0;  // what file data may still use
  std::uint64_t inodes = 0;
  std::uint64_t logical_bytes = 0;     // sum of file sizes
  std::uint64_t allocated_blocks = 0;  // blocks referenced by files
  std::uint64_t metadata_blocks = 0;   // journal + checkpoint
  std::uint64_t shared_blocks = 0;     // blocks referenced by more than one block map
  std::uint64_t saved_blocks = 0;      // blocks sharing saves: sum of (references - 1)
  std::uint64_t regions = 0;
  std::uint64_t packed_files = 0;  // small files whose bytes lie in pack blocks
  std::uint64_t packed_bytes = 0;  // their sizes
  std::uint64_t pack_blocks = 0;   // blocks holding them
  // Bytes of those blocks that no file holds: removed files' (bytes in a
  // pack block are never reused while it lives) and open blocks' free ends.
  std::uint64_t pack_unused_bytes = 0;
};

// How large writes (over 64 KiB) were done since the filesystem was opened:
// side by side in stripes, or one at a time under the inode's exclusive
// I/O lock (stored chunks to share, partial windows, a tail to zero).
struct WritePathCounts {
  std::uint64_t in_stripes = 0;
  std::uint64_t exclusive = 0;
};

// What dedup did with one file (dhfsctl dedup).
struct DedupOutcome {
  std::uint64_t size = 0;
  bool hashed = false;     // its content hash is known
  bool duplicate = false;  // another file holds the same bytes
  bool shared = false;     // ... and this file now shares its extents
  std::uint64_t freed_blocks = 0;
};

// Renameat2 flags (values of the Linux ABI).
inline constexpr unsigned kRenameNoReplace = 1;
inline constexpr unsigned kRenameExchange = 2;
inline constexpr unsigned kRenameWhiteout = 4;

class FileSystem {
 public:
  // Loads the filesystem on `dev`: superblock, newest checkpoint, journal
  // replay, orphan cleanup. Nothing is written yet. On failure returns
  // nullptr and sets `error` to one line.
  static std::unique_ptr<FileSystem> open(std::unique_ptr<Device> dev, const FsOptions& opts, std::string& error);
  const FsOptions& options() const { return opts_; }
  ~FileSystem();
  FileSystem(const FileSystem&) = delete;
  FileSystem& operator=(const FileSystem&) = delete;

  // Starts the journal committer and the checkpointer (after any fork).
  void start();
  // Writes a final checkpoint, commits what is pending and stops the
  // background threads. Returns 0 once every change is durable (in the
  // checkpoint, or only in the journal if the checkpoint failed: that is
  // logged, and the next mount replays it), else the journal's negative
  // errno. Idempotent; the destructor calls it.
  int shutdown();

  // ---- names. Calls that return an Attr for a new or found inode take one
  // kernel reference on it (released by forget).
  int lookup(Ino parent, std::string_view name, Attr* out);
  void forget(Ino ino, std::uint64_t n);
  int getattr(Ino ino, Attr* out);
  int setattr(Ino ino, const SetAttr& sa, Attr* out);
  int mknod(Ino parent, std::string_view name, std::uint32_t mode, std::uint32_t rdev, const Cred& cred, Attr* out);
  int mkdir(Ino parent, std::string_view name, std::uint32_t mode, const Cred& cred, Attr* out);
  int symlink(Ino parent, std::string_view name, std::string_view target, const Cred& cred, Attr* out);
  int readlink(Ino ino, std::string* out);
  int unlink(Ino parent, std::string_view name);
  int rmdir(Ino parent, std::string_view name);
  int rename(Ino parent, std::string_view name, Ino newparent, std::string_view newname, unsigned flags,
             const Cred& cred);
  int link(Ino ino, Ino newparent, std::string_view newname, Attr* out);
  int access(Ino ino, int mask, const Cred& cred);

  // ---- files. open/create count an open handle, release drops it.
  // What the kernel should do with the pages of a file opened by open().
  struct OpenAdvice {
    // Write around the page cache (FOPEN_DIRECT_IO): the handle an overlay
    // copy-up writes through, when the copied bytes may be shared with the
    // stored ones (see copy_up_target.h).
    bool direct_io = false;
  };
  int open(Ino ino, int flags, OpenAdvice* advice = nullptr);
  int create(Ino parent, std::string_view name, std::uint32_t mode, int flags, const Cred& cred, Attr* out);
  void release(Ino ino);
  // Reads into `scratch`; `*out` is set to the bytes read (may be short at
  // end of file). Returns 0 or a negative errno. `in_place`, if given, is a
  // 4 KiB-aligned buffer (a FUSE ring entry's reply buffer) that a read
  // starting on a block fills instead, when all it loads fits: `*out` then
  // starts at in_place.data() and the reply needs no copy.
  int read(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch, std::span<const std::byte>* out,
           std::span<std::byte> in_place = {});
  // Returns bytes written or a negative errno. `blocks_changed` tells
  // whether new blocks were allocated (st_blocks changed).
  ssize_t write(Ino ino, std::uint64_t off, std::span<const std::byte> data, bool* blocks_changed = nullptr);
  // The kernel's writeback cache owns mtime/ctime of written files: writes
  // reaching the core then leave them alone (the kernel sends them with
  // setattr).
  void set_kernel_write_times(bool on) { kernel_write_times_.store(on); }
  int fsync(Ino ino, bool datasync);
  int syncfs();
  int fallocate(Ino ino, int mode, std::uint64_t off, std::uint64_t len);
  // SEEK_DATA / SEEK_HOLE (others are answered by the kernel).
  std::int64_t lseek(Ino ino, std::int64_t off, int whence);
  ssize_t copy_file_range(Ino in, std::uint64_t off_in, Ino out, std::uint64_t off_out, std::size_t len);

  // ---- directories
  int opendir(Ino ino);
  void releasedir(Ino ino);
  // Lists entries from `cookie` (0: start; "." and ".." come first). `fn`
  // returns false when its buffer is full; that entry is not consumed. With
  // `plus`, `attr` is filled and every accepted entry other than "." and
  // ".." takes a kernel reference.
  int readdir(Ino ino, std::uint64_t cookie, bool plus,
              const std::function<bool(const DirListEntry&, const Attr* attr)>& fn);

  // ---- extended attributes
  int setxattr(Ino ino, std::string_view name, std::string_view value, int flags);
  int getxattr(Ino ino, std::string_view name, std::string* value);
  // NUL-terminated names. trusted.* names are listed only to callers with
  // CAP_SYS_ADMIN (`with_trusted`), as local filesystems do.
  int listxattr(Ino ino, std::string* names, bool with_trusted = true);
  int removexattr(Ino ino, std::string_view name);

  FsStats stats();
  WritePathCounts write_path_counts() const {
    return {large_in_stripes_.load(std::memory_order_relaxed), large_exclusive_.load(std::memory_order_relaxed)};
  }

  // ---- dedup (fs/dedup.cc); closing a changed file does this by itself.
  // Hashes `ino` (reading it if its hash is not known) and, if another file
  // holds the same bytes, makes it share that file's extents.
  int dedup_file(Ino ino, DedupOutcome* out);
  // The persisted hash of the file's whole contents, if it has one.
  std::optional<ContentHash> content_hash_of(Ino ino);

  // ---- container regions (see region_policy.h)
  // Makes directory `dir` the root of a new region reserving `bytes` (0: the
  // default size); everything below it allocates from it from now on.
  int create_region(Ino dir, std::uint64_t bytes);
  std::vector<RegionReport> region_reports();
  // The region `ino` allocates from.
  int region_report(Ino ino, RegionReport* out);
  int frag_report(Ino ino, FragReport* out);
  // Path of `ino` relative to the filesystem root ("/" for the root); for
  // files with several names, one of them.
  std::string path_of(Ino ino);
  // Writes a checkpoint now (also done in the background when needed).
  int checkpoint();
  // FITRIM (fstrim): commits the journal, so that what deletes freed is
  // free, then discards the free runs of at least `min_bytes` in the data
  // area that overlap device bytes [start, start + len) (Device::discard:
  // holes in an image file, BLKDISCARD on a block device). Adds the bytes
  // discarded to *trimmed. 0 or a negative errno (-EOPNOTSUPP if the medium
  // cannot discard, -EROFS on a read-only mount).
  int trim(std::uint64_t start, std::uint64_t len, std::uint64_t min_bytes, std::uint64_t* trimmed);
  // Online discard (FsOptions::discard; the background task calls it every
  // second): discards what durable frees released since the last call and
  // is still free, adding the bytes to *discarded. 0 or a negative errno.
  int discard_released(std::uint64_t* discarded);
  // Online grow onto more of the medium: to `bytes` (rounded down to whole
  // blocks), or with 0 to all the medium has now. An image file is extended
  // to `bytes` first; a block device must have grown already (lvextend,
  // `losetup -c`). The journal keeps its place and size; the data area gains
  // the new blocks. The new backup superblock is written and flushed before
  // the primary, so a crash leaves the old size or the new one, never
  // neither. 0 or a negative errno: -EINVAL below the current size (dhfs
  // only grows), -EFBIG past what the medium has or can grow to, -EROFS on
  // a read-only mount. Growing to the current size changes nothing.
  int grow(std::uint64_t bytes, GrowOutcome* out);
  // A copy: grow() replaces the geometry while the filesystem runs.
  Superblock superblock() const;
  bool read_only() const { return opts_.read_only; }

  // Test and tool access.
  Device& device() { return *dev_; }
  Allocator& allocator() { return *alloc_; }
  std::uint64_t journal_replayed_batches() const { return replayed_batches_; }

 private:
  using Txn = TxnBuilder;

  FileSystem(std::unique_ptr<Device> dev, const Superblock& sb, const FsOptions& opts);

  // ---- helpers (callers hold meta_mu_ as documented in the .cc files)
  std::shared_mutex& io_lock(Ino ino) { return io_locks_[ino % io_locks_.size()]; }
  Attr attr_of(const Inode& in) const;
  int check_dir_entry(Ino parent, std::string_view name, Inode** dir);
  Inode* new_inode(std::uint32_t mode, const Cred& cred, const Inode& parent);
  int make_node(Ino parent, std::string_view name, std::uint32_t mode, std::uint32_t rdev, std::string_view target,
                const Cred& cred, Attr* out, bool open_it);
  void release_if_unused(Inode& in, Txn& txn);
  // Hands `txn` to the journal; the blocks in `to_free` become reusable once
  // it is durable. Returns its sequence number.
  std::uint64_t commit(Txn& txn, const std::vector<Extent>& to_free = {});
  // One reference less to each mapped segment (blocks leaving a block map):
  // the new counts go into `txn`, blocks that lost their last reference into
  // `to_free`.
  void drop_refs(const std::vector<Segment>& gone, Txn& txn, std::vector<Extent>& to_free);
  // One reference more to every block of `e` (a block map shares it).
  void add_refs(Extent e, Txn& txn);
  // Calls fn(run, still_shared) over `e` (blocks mapped by one file):
  // still_shared for blocks that lost their other references in a change
  // not yet durable. A crash would bring that sharing back, so such blocks
  // are still written around (copy on write), never in place.
  void for_unshared_runs(Extent e, const std::function<void(Extent, bool)>& fn);
  // The durable journal reached `seq`: sharing dropped up to it is gone.
  void unshare_durable(std::uint64_t seq);
  // Admission of a change (journal backpressure); a change that grows
  // metadata is refused with ENOSPC once the next checkpoint might not fit
  // (after committing, while blocks freed by changes not yet durable could
  // make it fit: see commit_for_space).
  int begin_change(Journal::Change change);
  // Blocks for file data (Allocator::allocate_all), trying again after
  // commit_for_space while it makes room.
  bool allocate_data(const AllocRequest& req, std::vector<Extent>& out);
  // Space is short. If fstrim holds free blocks for a moment (trim), waits
  // until it gives them back; if blocks freed by changes not yet durable
  // wait in the allocator, commits the journal so that they are free.
  // Returns true if either happened, or if fstrim gave blocks back since
  // `trims_before` (trims_given_back() taken before the failed attempt):
  // trying again may succeed. The space a file held is then free for the
  // next writer at once, as ext4 does (a full device forces a commit before
  // its ENOSPC), not only after the next periodic commit: a host that
  // deletes images to make room and pulls the next one at once got ENOSPC.
  // Call without meta_mu_ (the commit's durability callbacks take allocator
  // and sharing locks only, but a commit may wait for a device flush).
  bool commit_for_space(std::uint64_t trims_before);
  // Retries of commit_for_space for one allocation: each makes room that
  // others may take first; bounded so that no writer spins for ever.
  static constexpr int kSpaceRetries = 16;
  std::uint64_t trims_given_back();
  // Waits while trim holds free blocks; true if it gave any back since
  // `trims_before`.
  bool wait_for_trimmed_blocks(std::uint64_t trims_before);
  // Takes the free runs of at least min_len blocks inside `window` out of
  // the allocator, discards them and puts them back (fs_trim.cc).
  int discard_free_in(Extent window, std::uint64_t min_len, std::uint64_t* discarded);
  void start_discarder();
  // Blocks the next checkpoint may need: the current stream plus everything
  // journaled since (each record adds at most its own size to the state).
  std::uint64_t metadata_need_blocks() const;
  void touch_dir(Inode& dir, std::int64_t now, Txn& txn);
  // Records a change of `in` at `now`: ctime, and mtime if its contents
  // were modified. Left alone where the kernel owns them (regular files
  // under the writeback cache): the kernel sends its own times by setattr.
  void mark_changed(Inode& in, std::int64_t now, bool modified);
  int remove_entry(Ino parent, std::string_view name, bool dir);

  // ---- data helpers (fs/file_data.cc)
  void truncate_locked(Inode& in, std::uint64_t new_size, Txn& txn, std::vector<Extent>& freed);
  int zero_tail_block(Ino ino, std::uint64_t size);
  int zero_range_in_block(Ino ino, std::uint64_t off, std::uint64_t len);
  int punch_hole(Ino ino, std::uint64_t off, std::uint64_t len);
  int preallocate(Ino ino, std::uint64_t off, std::uint64_t len, bool keep_size);
  // Writes under the inode's I/O lock: in place where the file owns the
  // blocks alone, to new blocks for holes and for shared blocks. `extend`:
  // the file grows to cover the write (false: zeroing beyond the end).
  // `in_stripes`: the caller holds only the stripes of the write (see
  // RangeLocks), so a write past an end of file that is not block aligned,
  // which must zero the rest of the old last block, returns -EAGAIN.
  ssize_t write_locked(Ino ino, std::uint64_t off, std::span<const std::byte> data, bool* blocks_changed,
                       bool extend, bool in_stripes = false);
  // The stripes a write of blocks [first, last] holds: with a cow_unit
  // larger than a stripe, those of the whole aligned units around them, as
  // a copy on write may rewrite the unit.
  RangeLocks::Range write_range(Ino ino, std::uint64_t first, std::uint64_t last) const {
    const std::uint64_t unit = std::max<std::uint64_t>(cow_unit_blocks_, 1);
    return {ino, first / unit * unit, (last / unit + 1) * unit - 1, false};
  }
  ssize_t write_small_inside(Ino ino, std::uint64_t at, std::span<const std::byte> piece, bool* blocks_changed);
  ssize_t write_large_in_stripes(Ino ino, std::uint64_t at, std::span<const std::byte> piece, bool* blocks_changed);
  // A chunk window of a piece being written: its key, and where the same
  // bytes are stored if they are (see ChunkIndex).
  struct PieceWindow {
    std::uint64_t w, len;  // bytes of the file
    ChunkKey key;
    std::optional<ChunkHome> home;
  };
  // Stops after the first window stored behind `stop_behind`, if given.
  std::vector<PieceWindow> hash_windows(std::uint64_t at, std::span<const std::byte> piece, std::uint64_t file_size,
                                        const std::shared_mutex* stop_behind = nullptr);
  // `locked_windows`: the caller holds the I/O lock shared, the piece's
  // stripes, and the I/O locks and stripes of these windows' homes
  // (write_large_in_stripes), not the I/O lock exclusively; -EAGAIN then if
  // the piece needs more (the caller writes it all again under the
  // exclusive lock).
  ssize_t write_piece_locked(Ino ino, std::uint64_t at, std::span<const std::byte> piece, bool* blocks_changed,
                             const std::vector<PieceWindow>* locked_windows = nullptr);
  // What a read loaded from the device, for the chunk index.
  struct LoadedWindows {
    std::uint64_t off = 0;  // file offset of bytes[0]
    std::span<const std::byte> bytes;
    std::uint64_t size = 0;  // the file's size and generation then
    std::uint64_t generation = 0;
  };
  void remember_read(Ino ino, const LoadedWindows& loaded);
  // Reads the blocks of `segs` (file blocks counted from `first`) into
  // `dst`, merging segments close together on the device into one I/O.
  int read_segments(std::span<const Segment> segs, std::uint64_t first, std::byte* dst);
  // Started on first use (by a cow_unit copy or small files read in order).
  BlockReader& block_reader();
  void read_ahead_small_files(std::span<const Segment> stored);
  // Asks the BlockReader for up to kReadAheadBlocks from `at` (below
  // `limit`) unless half as many after `at` are kept already.
  void read_ahead_from(BlockNo at, BlockNo limit);
  // Fills `dst` (file blocks counted from `first`) with the segments kept
  // in prefetched_ and drops them from `segs`.
  void take_prefetched(std::vector<Segment>& segs, std::uint64_t first, std::byte* dst);
  Extent shared_run_after(const Inode& in, std::uint64_t last, std::uint64_t size) const;
  void complete_window(Ino ino, std::uint64_t w, std::uint64_t generation, bool* blocks_changed);
  BlockNo placement_hint(const Inode& in, std::uint64_t lblk, bool dense = false) const;
  // A write of a whole chunk whose bytes the filesystem already stores
  // (see ChunkIndex) shares the stored blocks instead. Caller holds the
  // inode's I/O lock exclusively, or (`in_stripes`) shared with the
  // stripes of the write and the source's lock and stripes. True if the
  // write was done that way.
  bool share_stored_chunk(Ino ino, std::uint64_t off, std::span<const std::byte> data, const ChunkHome& home,
                          bool in_stripes = false);
  // The file a chunk index entry names, if it still exists (same
  // generation, still a regular file); caller holds meta_mu_.
  Inode* chunk_home_inode(const ChunkHome& home) const;
  // Where the chunk index says bytes with `key` are stored, if that file
  // still exists (takes meta_mu_ shared). An entry naming a file that is
  // gone is forgotten, so that the caller's window is remembered in its
  // place.
  std::optional<ChunkHome> stored_chunk(const ChunkKey& key);
  // Shares whole blocks of `in` with `out` (clone); see copy_file_range.
  ssize_t clone_blocks(Ino in_ino, std::uint64_t lblk_in, Ino out_ino, std::uint64_t lblk_out, std::uint64_t nblk,
                       std::uint64_t out_size_after);
  ssize_t copy_bytes(Ino in_ino, std::uint64_t off_in, Ino out_ino, std::uint64_t off_out, std::size_t len);
  int read_locked(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch,
                  std::span<const std::byte>* out, LoadedWindows* loaded = nullptr,
                  std::span<std::byte> in_place = {});
  void maybe_touch_atime(Ino ino);

  // ---- dedup (fs/dedup.cc)
  struct DedupAfterClose {
    Ino ino = 0;
    std::uint64_t version = 0;
    std::shared_ptr<HashStream> stream;
  };
  DedupKey dedup_key(const Inode& in, const ContentHash& h) const;
  void index_content_hashes();
  // Called before the contents of `ino` change (with the bytes of a write);
  // withdraws its content hash. Returns 0 or a negative errno.
  int content_changing(Ino ino, const std::uint64_t* write_off = nullptr, std::span<const std::byte> data = {});
  int withdraw_content_hash(Ino ino);
  void opened_for_dedup(Inode& in, int flags);            // meta_mu_ exclusive
  void closed_for_dedup(Inode& in, DedupAfterClose* todo);  // meta_mu_ exclusive
  void dedup_after_close(const DedupAfterClose& todo);
  std::optional<ContentHash> hash_file(Ino ino, std::uint64_t version);
  bool files_equal(Ino a, Ino b, std::uint64_t size);
  int settle_content(Ino ino, const ContentHash& h, std::uint64_t version, DedupOutcome* out);
  int adopt_extents(Ino ino, std::uint64_t version, const DedupKey& key, const DedupHolder& holder,
                    std::uint64_t holder_version, DedupOutcome* out);
  int record_content_hash(Ino ino, std::uint64_t version, const DedupKey& key);
  bool write_duplicate_small(Ino ino, std::span<const std::byte> data);
  // A whole small file written from empty in one piece goes into the open
  // pack block of its region (see PackBlocks); the caller holds the inode's
  // exclusive I/O lock. -EAGAIN: the file does not qualify (or no block was
  // free); the caller writes it the usual way.
  ssize_t write_packed(Ino ino, std::span<const std::byte> data, bool* blocks_changed);
  bool is_empty_file(Ino ino);
  int read_piece(Ino ino, std::uint64_t off, AlignedBuffer& buf, std::span<const std::byte>* out);
  // Whether content-based sharing may give `writer` blocks of `holder`.
  bool may_share_with(const Inode& writer, const Inode& holder) const;

  // ---- regions (fs/fs_regions.cc; meta_mu_ held exclusively unless noted)
  void apply_settings(const std::map<std::string, std::string, std::less<>>& stored, Txn& txn);
  bool load_regions(std::map<std::uint32_t, RegionState> regions, std::string& error);
  void check_region_roots(Txn& txn);
  bool wants_region(const Inode& parent, std::string_view name) const;  // (shared is enough)
  void start_region(Inode& root, std::uint64_t blocks, Txn& txn);
  void end_region(Inode& root, Txn& txn);
  void record_region_changes(Txn& txn);
  std::string name_in(const Inode& dir, Ino child) const;
  std::string path_locked(Ino ino) const;
  RegionReport report_locked(const RegionState& r) const;

  // ---- persistence (fs/fs_persist.cc)
  bool link_tree(std::string& error);
  bool claim_blocks(std::map<std::uint32_t, RegionState> regions, std::string& error);
  void remove_orphans();
  void free_inode(Inode& in, Txn& txn);
  void update_metadata_reserve();
  int write_checkpoint();
  void checkpointer_loop();
  void request_checkpoint();

  // Blocks read ahead for cow_unit copies and for small files read in
  // device order, and the blocks a file being copied served until the
  // copy's writes compared them; dev_ reports every write to it. Room for
  // the kernel's read-ahead of a copy source, up to two windows (4 MiB
  // each by default) ahead of the copy's writes, four times over; with a
  // larger readahead= a copy's comparisons may read the device again.
  PrefetchedBlocks prefetched_{32 << 20};
  // Where the device blocks of the last small file read whole ended.
  std::atomic<BlockNo> last_small_read_end_{0};
  std::unique_ptr<Device> dev_;
  std::once_flag block_reader_once_;
  std::unique_ptr<BlockReader> block_reader_;  // after dev_: stopped before it goes
  // Fields other than the geometry never change after mount; grow()
  // replaces total_blocks, data_blocks and the features under sb_mu_.
  mutable std::mutex sb_mu_;
  Superblock sb_;
  std::atomic<std::uint64_t> total_blocks_;  // sb_.total_blocks, for readers that take no lock
  std::mutex grow_mu_;                       // one grow at a time
  FsOptions opts_;
  std::unique_ptr<Allocator> alloc_;
  std::unique_ptr<Journal> journal_;

  std::shared_mutex meta_mu_;
  InodeTable inodes_;
  RefcountTable refs_;  // blocks referenced by more than one block map
  // Blocks whose count fell to one in a change not yet durable. See
  // for_unshared_runs.
  UnsharedBlocks unshared_;
  // Small files' shared blocks (meta_mu_ exclusive); pack_mu_ makes pack
  // writes take turns, as each rewrites its whole block.
  PackBlocks packs_;
  std::mutex pack_mu_;
  ChunkIndex chunks_;
  std::atomic<std::uint64_t> large_in_stripes_{0}, large_exclusive_{0};  // see WritePathCounts
  DedupIndex dedup_index_;
  // Source of Inode::data_version values: unique across all inodes, so a
  // version also tells a reused inode number apart.
  std::atomic<std::uint64_t> next_data_version_{1};
  std::map<std::uint32_t, RegionState> regions_;
  std::uint32_t next_region_ = 1;
  RegionPolicy region_policy_;
  std::uint64_t region_blocks_ = kDefaultRegionBytes / kBlockSize;
  std::uint64_t cow_unit_blocks_ = kDefaultCowUnitBytes / kBlockSize;
  std::map<std::string, std::string, std::less<>> settings_;  // persisted (ConfigSet records)
  std::uint64_t next_generation_ = 1;
  // Per file: shared by reads and small writes inside the file, exclusive
  // for everything that changes the size or the block map wholesale.
  std::array<std::shared_mutex, 256> io_locks_;
  RangeLocks range_locks_;  // stripes held by small writes under a shared io lock

  // Free blocks fstrim has taken out of the allocator while it discards
  // them (fs_trim.cc); a writer short of space waits for them.
  std::mutex trim_mu_;
  std::condition_variable trim_cv_;
  std::uint64_t trim_held_ = 0;
  // Times trim gave blocks back: raised under trim_mu_ after the blocks are
  // back in the allocator; read without it on every allocation that grows
  // something (trims_given_back), so an atomic.
  std::atomic<std::uint64_t> trim_given_back_{0};
  std::unique_ptr<PeriodicTask> discarder_;  // online discard, with FsOptions::discard

  // Current checkpoint.
  std::mutex checkpoint_mu_;  // one checkpoint at a time
  CheckpointRoot root_;
  std::atomic<std::uint64_t> stream_bytes_{0};  // root_.stream_bytes, readable without checkpoint_mu_
  int root_slot_ = 0;  // the slot holding root_; the next one goes to the other
  std::uint64_t replayed_batches_ = 0;
  std::uint64_t journal_head_at_load_ = 0;
  std::uint64_t seq_at_checkpoint_ = 0;

  // Background checkpointer.
  std::mutex bg_mu_;
  std::condition_variable bg_cv_;
  bool bg_stop_ = false;
  bool bg_wanted_ = false;
  std::thread bg_thread_;
  bool started_ = false;
  bool shut_down_ = false;
  std::atomic<bool> kernel_write_times_{false};
};

}  // namespace dhfs
