// FileSystem: file data. Reads and writes go to the device under the
// inode's I/O lock; the block map and size change afterwards, in memory and
// in the journal, under meta_mu_. Newly allocated blocks are mapped only
// after their data is written, so metadata never points at stale data.
#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "fs/filesystem.h"
#include "fs/read_plan.h"

namespace dhfs {

namespace {

constexpr std::uint64_t kMaxFileBytes = 1ULL << 60;
constexpr std::uint64_t kMaxIoBytes = 8ULL << 20;  // one core write is split into pieces this large
// Writes up to this size run beside each other (write_small_inside) and may
// be cached by the medium (DeviceIo::cached).
constexpr std::uint64_t kSmallWriteBytes = 64 << 10;
// The first write of a new file, at offset 0 and below this size, goes
// through the medium's page cache as well: most often that is the whole
// file (a FUSE WRITE carries at most 1 MiB). An untar or a layer extraction
// waits for every file's write-back (utimensat flushes the file first), and
// written directly, each file larger than a small write also waited for the
// device. The first MiB of a file written in a stream arrives as a full
// 1 MiB and is still written directly.
constexpr std::uint64_t kWholeFileCachedBytes = 1 << 20;
// Whether a write of `bytes` at `off` to a file of `old_size`, spanning
// `span_bytes` of whole blocks, goes through the medium's page cache: a
// small write, or the first write of an empty file below
// kWholeFileCachedBytes (most often all of it).
bool written_cached(std::uint64_t span_bytes, std::uint64_t off, std::uint64_t old_size, std::uint64_t bytes) {
  return span_bytes <= kSmallWriteBytes || (off == 0 && old_size == 0 && bytes < kWholeFileCachedBytes);
}
constexpr std::int64_t kDayNs = 86400LL * 1000000000LL;
// A block copied on write this near after the file's previous block of its
// own goes right after that block (see placement_hint).
constexpr std::uint64_t kDenseGapBlocks = 16;
// A cow_unit copy has up to this many shared blocks after its unit read
// ahead (see PrefetchedBlocks) once fewer than half as many are in memory.
constexpr std::uint64_t kReadAheadBlocks = 256;
// Small files read whole, one after another in the order they lie on the
// device, have the blocks after them read ahead (see read_ahead_small_files).
constexpr std::uint64_t kSmallFileReadBytes = 64 << 10;
// "One after another": the next file starts at most this far from where the
// previous one ended (a few blocks of files not read, or of directories).
constexpr std::uint64_t kNextFileGapBlocks = 64;
// A read loads the whole chunk windows around its range (for the chunk
// index) under the stripes of the range only: stripes must be whole windows.
static_assert(RangeLocks::kStripeBlocks * kBlockSize % kChunkBytes == 0);

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

std::uint64_t blocks_for(std::uint64_t bytes) { return (bytes + kBlockSize - 1) / kBlockSize; }

bool readable(const Segment& s) { return !s.hole() && !(s.flags & kExtentUnwritten); }

// A packed file's block as read from the device -> the file's block 0: its
// bytes moved to the start (what follows them belongs to other files and
// lies past the end of this one).
void unpack_in_place(std::byte* block, std::uint32_t flags) {
  const std::uint32_t at = packed_offset(flags);
  if (at) std::memmove(block, block + at, kBlockSize - at);
}

}  // namespace

// ---------------------------------------------------------------------- read

int FileSystem::read(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch,
                     std::span<const std::byte>* out, std::span<std::byte> in_place) {
  std::shared_lock io(io_lock(ino));
  // Small writes run under the shared I/O lock too (write_small_inside);
  // the stripes keep a read from seeing one half done. (The read may load
  // the whole chunk windows around the range: those lie in the same
  // stripes, as stripes are whole windows.)
  const std::uint64_t last = (off + std::max<std::size_t>(size, 1) - 1) / kBlockSize;
  RangeLocks::Guard stripes(range_locks_, ino, off / kBlockSize, last, /*shared=*/true);
  LoadedWindows loaded;
  int rc = read_locked(ino, off, size, scratch, out, &loaded, in_place);
  if (rc == 0 && !loaded.bytes.empty()) remember_read(ino, loaded);
  io.unlock();
  if (rc == 0 && !out->empty()) maybe_touch_atime(ino);
  return rc;
}

namespace {
// Keeps a copy of the blocks a read serves in a PrefetchedBlocks: begun
// before the device read, so that a write meanwhile is noticed, and kept
// from the read's buffer after it.
class KeepServedBlocks {
 public:
  KeepServedBlocks(PrefetchedBlocks& kept, std::span<const Segment> segs) {
    for (const Segment& s : segs)
      if (!is_packed(s.flags)) reads_.emplace_back(s, std::make_unique<PrefetchedBlocks::Read>(kept, Extent{s.pblk, s.len}));
  }
  // `dst` holds the file's blocks from `first` on, as read.
  void keep(std::uint64_t first, const std::byte* dst) {
    for (auto& [s, read] : reads_) {
      if (!read->wanted()) continue;  // kept already, or being read by another
      const Extent b = read->blocks();
      std::memcpy(read->buffer(), dst + (s.lblk - first + (b.start - s.pblk)) * kBlockSize, b.len * kBlockSize);
      read->keep();
    }
  }

 private:
  std::vector<std::pair<Segment, std::unique_ptr<PrefetchedBlocks::Read>>> reads_;
};
}  // namespace

int FileSystem::read_locked(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch,
                            std::span<const std::byte>* out, LoadedWindows* loaded, std::span<std::byte> in_place) {
  *out = {};
  std::vector<Segment> segs;
  std::uint64_t len, first, nblk;
  bool copy_source;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (in->is_dir()) return -EISDIR;
    if (!in->is_reg()) return -EINVAL;
    if (off >= in->size || size == 0) return 0;
    copy_source = std::atomic_ref(in->copy_source).load(std::memory_order_relaxed);
    len = std::min<std::uint64_t>(size, in->size - off);
    first = off / kBlockSize;
    std::uint64_t last = (off + len - 1) / kBlockSize;
    if (loaded) {
      loaded->size = in->size;
      loaded->generation = in->generation;
    }
    if (loaded && len >= kChunkBytes) {
      // A large (sequential) read loads the whole chunk windows around it,
      // so that the chunk index learns every window of the file even when
      // the kernel's requests do not start on window boundaries.
      constexpr std::uint64_t kWindowBlocks = kChunkBytes / kBlockSize;
      first = first / kWindowBlocks * kWindowBlocks;
      last = std::min((last / kWindowBlocks + 1) * kWindowBlocks, blocks_for(in->size)) - 1;
    }
    nblk = last - first + 1;
    segs = in->map()->segments(first, nblk);
  }
  std::byte* dst;
  if (first * kBlockSize == off && nblk * kBlockSize <= in_place.size() &&
      reinterpret_cast<std::uintptr_t>(in_place.data()) % kBlockSize == 0) {
    dst = in_place.data();
  } else {
    scratch.ensure(nblk * kBlockSize);
    dst = scratch.data();
  }
  std::vector<Segment> stored;
  for (const Segment& s : segs) {
    if (readable(s))
      stored.push_back(s);
    else
      std::memset(dst + (s.lblk - first) * kBlockSize, 0, s.len * kBlockSize);
  }
  if (loaded && off == 0 && len == loaded->size && len <= kSmallFileReadBytes) read_ahead_small_files(stored);
  take_prefetched(stored, first, dst);
  // A file about to be copied keeps a copy of the blocks it serves in
  // prefetched_: the copy's writes come next with the same bytes, and the
  // comparison that lets them share this file's blocks (share_stored_chunk)
  // then reads memory, not the device a second time. (Reading through the
  // medium's page cache did that too, but the daemon's copies out of that
  // cold memory cost more than the device reads: a 1 GiB overlay copy-up
  // took 1.30-1.62 s that way against 1.00-1.21 s, bench VM.)
  std::optional<KeepServedBlocks> keeping;
  if (copy_source) keeping.emplace(prefetched_, stored);
  if (int rc = read_segments(stored, first, dst); rc < 0) return rc;
  if (keeping) keeping->keep(first, dst);
  for (const Segment& s : segs)
    if (is_packed(s.flags)) unpack_in_place(dst + (s.lblk - first) * kBlockSize, s.flags);
  *out = {dst + (off - first * kBlockSize), len};
  if (loaded) {
    loaded->off = first * kBlockSize;
    loaded->bytes = {dst, std::min(nblk * kBlockSize, loaded->size - loaded->off)};
  }
  return 0;
}

// An image layer's files are written one after another into their region
// (an extraction), and a container that starts, like `cat` of a tree, reads
// many of them whole in much the same order. Each such read costs a device
// round trip of its own, for a few KiB. When a whole small file starts near
// where the previous one ended on the device, the blocks after it are read
// ahead on the BlockReader's thread, and the next files' reads take them
// from memory (PrefetchedBlocks, which every write to them drops). Reads of
// small files elsewhere on the device trigger nothing.
void FileSystem::read_ahead_small_files(std::span<const Segment> stored) {
  if (stored.empty()) return;
  BlockNo start = stored.front().pblk, end = start;
  for (const Segment& s : stored) {
    start = std::min<BlockNo>(start, s.pblk);
    end = std::max<BlockNo>(end, s.pblk + s.len);
  }
  const BlockNo previous_end = last_small_read_end_.exchange(end, std::memory_order_relaxed);
  if (start + kNextFileGapBlocks < previous_end || start > previous_end + kNextFileGapBlocks) return;
  read_ahead_from(end, total_blocks_.load(std::memory_order_relaxed));
}

void FileSystem::read_ahead_from(BlockNo at, BlockNo limit) {
  const BlockNo from = prefetched_.kept_end(at);
  if (from - at < kReadAheadBlocks / 2 && from < limit)
    block_reader().request({from, std::min<std::uint64_t>(limit - from, kReadAheadBlocks)});
}

void FileSystem::take_prefetched(std::vector<Segment>& segs, std::uint64_t first, std::byte* dst) {
  std::erase_if(segs, [&](const Segment& s) {
    return prefetched_.take(s.pblk, s.len, dst + (s.lblk - first) * kBlockSize);
  });
}

// See ReadPlan for how segments close together on the device are read.
int FileSystem::read_segments(std::span<const Segment> segs, std::uint64_t first, std::byte* dst) {
  ReadPlan plan(segs, first, dst);
  if (int rc = dev_->submit(plan.ios()); rc < 0) return rc;
  plan.finish();
  return 0;
}

void FileSystem::maybe_touch_atime(Ino ino) {
  if (opts_.atime == AtimeMode::kNoatime || opts_.read_only) return;
  const std::int64_t now = now_ns();
  auto stale = [&](const Inode& in) {
    if (opts_.atime == AtimeMode::kStrictatime) return true;
    return in.atime_ns <= in.mtime_ns || in.atime_ns <= in.ctime_ns || now - in.atime_ns >= kDayNs;
  };
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !stale(*in)) return;
  }
  if (begin_change(Journal::Change::kShrinks) != 0) return;
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in || !stale(*in)) return;
  in->atime_ns = now;
  Txn txn;
  txn.inode(*in);
  commit(txn);
}

// --------------------------------------------------------------------- write

ssize_t FileSystem::write(Ino ino, std::uint64_t off, std::span<const std::byte> data, bool* blocks_changed) {
  if (blocks_changed) *blocks_changed = false;
  if (opts_.read_only) return -EROFS;
  if (data.empty()) return 0;
  if (off >= kMaxFileBytes || data.size() > kMaxFileBytes - off) return -EFBIG;
  if (int rc = content_changing(ino, &off, data); rc) return rc;
  const bool dedup_small = opts_.dedup && data.size() <= opts_.dedup_small_bytes;
  const bool pack = data.size() <= opts_.pack_small_bytes;
  if (off == 0 && (dedup_small || pack) && is_empty_file(ino)) {
    // A whole small file that is stored already never reaches the device;
    // a very small one that is not goes into a pack block. (Rewrites at
    // offset 0 of a file with data skip this: no exclusive lock on every
    // database page-0 write.)
    if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
    std::unique_lock io(io_lock(ino));
    if (dedup_small && write_duplicate_small(ino, data)) {
      if (blocks_changed) *blocks_changed = true;
      return static_cast<ssize_t>(data.size());
    }
    if (pack) {
      const ssize_t rc = write_packed(ino, data, blocks_changed);
      if (rc < 0 && rc != -EAGAIN) content_changing(ino);  // the hashed stream no longer matches the file
      if (rc != -EAGAIN) return rc;
    }
  }
  std::size_t done = 0;
  while (done < data.size()) {
    std::size_t n = std::min<std::size_t>(data.size() - done, kMaxIoBytes);
    if (int rc = begin_change(Journal::Change::kGrows); rc) {
      content_changing(ino);
      return done > 0 ? static_cast<ssize_t>(done) : rc;
    }
    ssize_t rc = write_small_inside(ino, off + done, data.subspan(done, n), blocks_changed);
    if (rc == -EAGAIN) rc = write_large_in_stripes(ino, off + done, data.subspan(done, n), blocks_changed);
    if (rc == -EAGAIN) {
      if (n > kSmallWriteBytes) large_exclusive_.fetch_add(1, std::memory_order_relaxed);
      std::unique_lock io(io_lock(ino));
      rc = write_piece_locked(ino, off + done, data.subspan(done, n), blocks_changed);
    } else if (rc >= 0 && n > kSmallWriteBytes) {
      large_in_stripes_.fetch_add(1, std::memory_order_relaxed);
    }
    if (rc < 0) {
      content_changing(ino);  // the hashed stream no longer matches the file
      return done > 0 ? static_cast<ssize_t>(done) : rc;
    }
    done += n;
  }
  return static_cast<ssize_t>(done);
}

ssize_t FileSystem::write_packed(Ino ino, std::span<const std::byte> data, bool* blocks_changed) {
  std::lock_guard turn(pack_mu_);
  AlignedBuffer image(kBlockSize);
  BlockNo pblk;
  std::uint32_t at;
  {
    std::unique_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->is_reg() || in->size != 0 || !in->map()->empty() || data.size() >= kBlockSize) return -EAGAIN;
    PackBlocks::Block* b = packs_.current(in->region);
    if (!b || !PackBlocks::fits(*b, data.size())) {
      // A new block, after the region's last one so that its small files
      // stay together.
      std::vector<Extent> got;
      if (!alloc_->allocate_all({1, 1, b ? b->pblk + 1 : 0, false, in->region}, got)) return -EAGAIN;
      // A closed block that no file references any more was freed by a
      // transaction already appended: free it once that is durable.
      for (BlockNo unused : packs_.open(in->region, got.front().start))
        alloc_->free_after({unused, 1}, journal_->last_appended_seq());
      b = packs_.current(in->region);
    }
    pblk = b->pblk;
    at = PackBlocks::append(*b, data.data(), data.size());
    std::memcpy(image.data(), b->bytes.data(), kBlockSize);
  }
  // The whole block again: the bytes of the files already in it are the
  // same, so a torn write cannot change them.
  std::vector<DeviceIo> ios;
  ios.push_back(DeviceIo::blocks(DeviceIo::Op::Write, pblk, image.data(), 1));
  ios.front().cached = true;  // as small writes: written back by the flush before the commit
  if (int rc = dev_->submit(ios); rc < 0) return rc;
  journal_->note_data_written();

  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  // Only pack writes close blocks, one at a time: the block is still open.
  PackBlocks::Block* b = packs_.find(pblk);
  Txn txn;
  const std::uint32_t flags = packed_flags(at);
  in->map()->set(0, 1, pblk, flags);
  txn.extent(ino, 0, 1, pblk, flags);
  if (b->referenced)
    add_refs({pblk, 1}, txn);
  else
    b->referenced = true;  // its first file (or the first since all the others went)
  record_region_changes(txn);
  in->size = data.size();
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  commit(txn);
  if (blocks_changed) *blocks_changed = true;
  return static_cast<ssize_t>(data.size());
}

// Small writes inside the file (random overwrites, a database's pages) run
// side by side: they share the inode's I/O lock and hold only the stripes
// of the file they touch (see RangeLocks). Nothing they do needs more: the
// size does not change, and truncate, punch, clone and the chunk sharing
// of large writes take the I/O lock exclusively. -EAGAIN: not such a
// write; the caller takes the exclusive path.
ssize_t FileSystem::write_small_inside(Ino ino, std::uint64_t at, std::span<const std::byte> piece,
                                       bool* blocks_changed) {
  const std::uint64_t end = at + piece.size();
  if (piece.size() > kSmallWriteBytes) return -EAGAIN;
  std::shared_lock io(io_lock(ino));
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->is_reg() || end > in->size) return -EAGAIN;
  }
  const RangeLocks::Guard stripes(range_locks_, {write_range(ino, at / kBlockSize, (end - 1) / kBlockSize)});
  bool changed = false;
  ssize_t rc = write_locked(ino, at, piece, &changed, true);
  if (blocks_changed && changed) *blocks_changed = true;
  return rc;
}

// Large writes (the kernel's write-back of a file being written, an overlay
// copy-up) run side by side too, each holding the stripes it writes: one
// file's write-back then keeps several device writes in flight instead of
// one (the device had a queue depth of one per file before), and a copy-up
// compares several chunks with their stored copies at once. They take this
// path only where nothing outside their stripes can change: their chunk
// windows are whole (no window completed from bytes around it), no old
// last block has to be zeroed, and no stored chunk they share lies in a
// file behind the same I/O lock. The stripes of the stored chunks they
// share are taken with their own, in one go and in slot order: a writer
// never waits for stripes while it holds some. -EAGAIN: the caller takes
// the exclusive path.
ssize_t FileSystem::write_large_in_stripes(Ino ino, std::uint64_t at, std::span<const std::byte> piece,
                                           bool* blocks_changed) {
  const std::uint64_t end = at + piece.size();
  std::shared_lock io(io_lock(ino));
  std::uint64_t size_before;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->is_reg()) return -EAGAIN;
    size_before = in->size;
  }
  if (at > size_before && size_before % kBlockSize) return -EAGAIN;  // that block is outside our stripes
  if (opts_.dedup && (at % kChunkBytes || (end % kChunkBytes && end < size_before))) return -EAGAIN;
  // A window stored behind our own I/O lock (most often in this very file)
  // sends the piece down the exclusive path, which shares it: hashing
  // stops there, as that path hashes the piece again.
  std::vector<PieceWindow> windows = hash_windows(at, piece, std::max(size_before, end), &io_lock(ino));
  if (!windows.empty() && windows.back().home && &io_lock(windows.back().home->ino) == &io_lock(ino)) return -EAGAIN;
  // The sources' I/O locks, shared if free at once (as share_stored_chunk
  // takes them); a window whose source is busy is written instead.
  std::vector<std::shared_lock<std::shared_mutex>> source_io;
  std::vector<RangeLocks::Range> ranges{write_range(ino, at / kBlockSize, (end - 1) / kBlockSize)};
  for (PieceWindow& pw : windows) {
    if (!pw.home) continue;
    std::shared_mutex& src = io_lock(pw.home->ino);
    const bool held = std::any_of(source_io.begin(), source_io.end(), [&](const auto& l) { return l.mutex() == &src; });
    if (!held) {
      std::shared_lock l(src, std::try_to_lock);
      if (!l.owns_lock()) {
        pw.home.reset();
        continue;
      }
      source_io.push_back(std::move(l));
    }
    const std::uint64_t first = pw.home->lblk, last = first + (pw.len + kBlockSize - 1) / kBlockSize - 1;
    ranges.push_back({pw.home->ino, first, last, true});
  }
  const RangeLocks::Guard stripes(range_locks_, ranges);
  return write_piece_locked(ino, at, piece, blocks_changed, &windows);
}

std::vector<FileSystem::PieceWindow> FileSystem::hash_windows(std::uint64_t at, std::span<const std::byte> piece,
                                                              std::uint64_t file_size, const std::shared_mutex* stop_behind) {
  std::vector<PieceWindow> out;
  if (!opts_.dedup) return out;
  bool stopped = false;
  ChunkIndex::for_windows(at, piece.size(), file_size, [&](std::uint64_t w, std::uint64_t len) {
    if (stopped) return;
    const ChunkKey key = ChunkIndex::key_of(piece.subspan(w - at, len));
    out.push_back({w, len, key, stored_chunk(key)});
    stopped = stop_behind && out.back().home && &io_lock(out.back().home->ino) == stop_behind;
  });
  return out;
}

Inode* FileSystem::chunk_home_inode(const ChunkHome& home) const {
  Inode* in = inodes_.get(home.ino);
  return in && in->is_reg() && in->generation == home.generation ? in : nullptr;
}

std::optional<ChunkHome> FileSystem::stored_chunk(const ChunkKey& key) {
  std::optional<ChunkHome> home = chunks_.find(key);
  if (!home) return std::nullopt;
  {
    std::shared_lock m(meta_mu_);
    if (chunk_home_inode(*home)) return home;
  }
  chunks_.forget(key);
  return std::nullopt;
}

// One piece of a write, under the inode's I/O lock. Chunks (see
// ChunkIndex) whose bytes are already stored are shared; the bytes between
// them are written, each run in one go.
ssize_t FileSystem::write_piece_locked(Ino ino, std::uint64_t at, std::span<const std::byte> piece,
                                       bool* blocks_changed, const std::vector<PieceWindow>* locked_windows) {
  std::uint64_t size_before = 0, generation = 0;
  {
    std::shared_lock m(meta_mu_);
    if (Inode* in = inodes_.get(ino)) {
      size_before = in->size;
      generation = in->generation;
    }
  }
  const std::uint64_t end = at + piece.size();
  const bool in_stripes = locked_windows != nullptr;
  std::uint64_t written_to = at;  // bytes before this are written or shared
  std::vector<std::pair<ChunkKey, std::uint64_t>> fresh_windows;  // to remember once written
  auto write_run = [&](std::uint64_t upto) -> int {
    if (upto <= written_to) return 0;
    bool changed = false;
    ssize_t rc = write_locked(ino, written_to, piece.subspan(written_to - at, upto - written_to), &changed, true,
                              in_stripes);
    if (rc < 0) return static_cast<int>(rc);
    if (blocks_changed && changed) *blocks_changed = true;
    written_to = upto;
    return 0;
  };
  // Consecutive windows stored consecutively in one file are verified and
  // shared as one run: one device read and one transaction, not one per
  // 64 KiB (an overlay copy-up is a long series of such windows).
  struct Run {
    std::uint64_t from = 0, to = 0;  // bytes of the file
    ChunkHome home;
  };
  std::optional<Run> run;
  auto share_run = [&]() -> int {
    if (!run) return 0;
    const Run r = *run;
    run.reset();
    // The bytes before the run first, so the file grows in order. If the
    // run cannot be shared, its bytes are written with what follows.
    if (int e = write_run(r.from); e) return e;
    if (share_stored_chunk(ino, r.from, piece.subspan(r.from - at, r.to - r.from), r.home, in_stripes)) {
      if (blocks_changed) *blocks_changed = true;
      written_to = r.to;
    }
    return 0;
  };
  int err = 0;
  const std::vector<PieceWindow> hashed =
      in_stripes ? std::vector<PieceWindow>{} : hash_windows(at, piece, std::max(size_before, end));
  for (const PieceWindow& pw : in_stripes ? *locked_windows : hashed) {
    if (err) break;
    const std::uint64_t w = pw.w, len = pw.len;
    if (const std::optional<ChunkHome>& home = pw.home) {
      if (run && run->to == w && home->ino == run->home.ino && home->generation == run->home.generation &&
          home->lblk == run->home.lblk + (w - run->from) / kBlockSize) {
        run->to = w + len;
        continue;
      }
      if ((err = share_run()) != 0) break;
      run = Run{w, w + len, *home};
      continue;
    }
    if ((err = share_run()) != 0) break;
    fresh_windows.emplace_back(pw.key, w / kBlockSize);
  }
  if (!err) err = share_run();
  if (!err) err = write_run(end);
  if (err) return err;
  for (const auto& [key, lblk] : fresh_windows) chunks_.remember(key, {ino, generation, lblk});
  // The kernel's writeback does not always start requests on window
  // boundaries; a window this piece only completes is checked whole. A
  // window the piece only lengthens at the end of the file is not: that is
  // the write-back of an append (the last page again, with the new bytes),
  // and a growing file's last window was read back from the device and
  // hashed at every append (the appends of a copied-up file cost 260-540 us
  // each that way, bench VM). A read of the file gives the index that
  // window, should it be stored again.
  const std::uint64_t head = at / kChunkBytes * kChunkBytes, tail = end / kChunkBytes * kChunkBytes;
  if (!opts_.dedup || in_stripes) return static_cast<ssize_t>(piece.size());  // (whole windows in stripes)
  const bool lengthens_last_window = end > size_before && end < head + kChunkBytes;
  if (head < at && !lengthens_last_window) complete_window(ino, head, generation, blocks_changed);
  if (end % kChunkBytes && end < size_before && tail != head && tail >= at) complete_window(ino, tail, generation, blocks_changed);
  return static_cast<ssize_t>(piece.size());
}

// A window of the file that writes filled in several pieces: read back,
// shared if its bytes are stored elsewhere, remembered if not. Caller holds
// the inode's I/O lock.
void FileSystem::complete_window(Ino ino, std::uint64_t w, std::uint64_t generation, bool* blocks_changed) {
  std::uint64_t len;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || in->size <= w) return;
    len = std::min(kChunkBytes, in->size - w);
    // Not worth a read unless every block of the window holds data.
    for (const Segment& s : in->map()->segments(w / kBlockSize, blocks_for(len)))
      if (s.hole() || (s.flags & kExtentUnwritten)) return;
  }
  thread_local AlignedBuffer scratch;
  std::span<const std::byte> bytes;
  if (read_locked(ino, w, len, scratch, &bytes) != 0 || bytes.size() != len) return;
  const ChunkKey key = ChunkIndex::key_of(bytes);
  if (auto home = stored_chunk(key)) {
    // share_stored_chunk reads the source into its own buffer; `bytes`
    // stays valid.
    if (share_stored_chunk(ino, w, bytes, *home)) {
      if (blocks_changed) *blocks_changed = true;
      return;
    }
  }
  chunks_.remember(key, {ino, generation, w / kBlockSize});
}

// Reads hand their whole windows to the chunk index: data that was only
// read since the daemon started (a lower file an overlay copies up) can be
// shared by a later write of the same bytes.
void FileSystem::remember_read(Ino ino, const LoadedWindows& loaded) {
  if (!opts_.dedup) return;
  ChunkIndex::for_windows(loaded.off, loaded.bytes.size(), loaded.size, [&](std::uint64_t w, std::uint64_t len) {
    chunks_.remember(ChunkIndex::key_of(loaded.bytes.subspan(w - loaded.off, len)),
                     {ino, loaded.generation, w / kBlockSize});
  });
}

// Where a new block for `lblk` goes: after the nearest earlier block of the
// file that it owns alone, 0 if none. Blocks written to holes are placed
// where that block's extent would reach `lblk` (room is kept for the blocks
// between them: a file written back out of order still ends up in order).
// Blocks copied on write (`dense`) at most 64 KiB of the file after it
// are placed right after it: random overwrites of a clone, written back in
// file order, then lie side by side and in order, and a later sequential
// read of a stretch of the clone reads its old extent and one short run of
// new blocks (with room kept, it read runs three parts empty, and a clone's
// cold read fell from 0.86x to 0.6x an unshared file's,
// bench/results/2026-11-27-vm-clone-1g-dense). Farther ones keep the room.
BlockNo FileSystem::placement_hint(const Inode& in, std::uint64_t lblk, bool dense) const {
  const ExtentMap& ex = *in.map();
  auto it = ex.first_ending_after(lblk);  // then the first extent starting at or after lblk
  if (it != ex.end() && it->lblk < lblk) ++it;
  for (int looked = 0; it != ex.begin() && looked < 32; ++looked) {
    --it;
    if (is_packed(it->flags)) continue;  // other files' block
    std::uint64_t last = std::min(it->lend(), lblk) - 1;
    BlockNo p = it->pblk + (last - it->lblk);
    if (refs_.refs(p) == 1) return dense && lblk - last <= kDenseGapBlocks ? p + 1 : p + (lblk - last);
  }
  return 0;
}

// The blocks of the file after `last` that a cow_unit copy of the next
// units will load, if they are one shared run on the device: at most
// twice kReadAheadBlocks, below the end of file. Empty if not.
Extent FileSystem::shared_run_after(const Inode& in, std::uint64_t last, std::uint64_t size) const {
  const std::uint64_t from = last + 1, end = std::min(blocks_for(size), from + 2 * kReadAheadBlocks);
  if (from >= end) return {};
  const std::vector<Segment> segs = in.map()->segments(from, end - from);
  if (segs.empty()) return {};
  const Segment& s = segs.front();
  if (s.hole() || (s.flags & kExtentUnwritten) || is_packed(s.flags)) return {};
  Extent out;
  refs_.for_runs({s.pblk, s.len}, [&](Extent run, std::uint32_t count) {
    if (out.len == 0 && run.start == s.pblk && count > 1) out = run;
  });
  return out;
}

namespace {
// A piece of a write: a run of file blocks with one way of being written.
struct WritePiece {
  enum Kind { kInPlace, kUnwritten, kAllocate, kCopyOnWrite } kind;
  std::uint64_t lblk;
  std::uint64_t len;
  BlockNo pblk;  // current mapping (0 for holes)
  BlockNo hint;  // for pieces that need new blocks
  std::uint32_t packed_flags = 0;  // a packed file's block: its extent flags
};
}  // namespace

ssize_t FileSystem::write_locked(Ino ino, std::uint64_t off, std::span<const std::byte> data, bool* blocks_changed,
                                 bool extend, bool in_stripes) {
  const std::uint64_t end = off + data.size();
  const std::uint64_t wfirst = off / kBlockSize;      // blocks the data touches
  const std::uint64_t wlast = (end - 1) / kBlockSize;
  std::uint64_t first = wfirst, last = wlast;         // blocks written to the device
  std::vector<WritePiece> pieces;
  std::uint64_t old_size;
  RegionId region;
  Extent read_ahead;  // shared blocks after a cow_unit copy, to have read ahead
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (in->is_dir()) return -EISDIR;
    if (!in->is_reg()) return -EINVAL;
    old_size = in->size;
    region = in->region;
    auto collect = [&](std::uint64_t from, std::uint64_t n, std::vector<WritePiece>& out) {
      for (const Segment& s : in->map()->segments(from, n)) {
        if (s.hole()) {
          out.push_back({WritePiece::kAllocate, s.lblk, s.len, 0, 0});
        } else if (s.flags & kExtentUnwritten) {
          out.push_back({WritePiece::kUnwritten, s.lblk, s.len, s.pblk, 0});
        } else if (is_packed(s.flags)) {
          // Other small files' bytes share the block: the file's own are
          // copied out to a block of its own, whatever the count.
          out.push_back({WritePiece::kCopyOnWrite, s.lblk, s.len, s.pblk, 0, s.flags});
        } else {
          // Shared blocks are never written: their new contents go elsewhere.
          // Nor are blocks still shared on the device (for_unshared_runs).
          refs_.for_runs({s.pblk, s.len}, [&](Extent run, std::uint32_t count) {
            if (count > 1) {
              out.push_back({WritePiece::kCopyOnWrite, s.lblk + (run.start - s.pblk), run.len, run.start, 0});
              return;
            }
            for_unshared_runs(run, [&](Extent r, bool still_shared) {
              out.push_back({still_shared ? WritePiece::kCopyOnWrite : WritePiece::kInPlace,
                             s.lblk + (r.start - s.pblk), r.len, r.start, 0});
            });
          });
        }
      }
    };
    collect(first, last - first + 1, pieces);
    const bool copies = std::any_of(pieces.begin(), pieces.end(),
                                    [](const WritePiece& p) { return p.kind == WritePiece::kCopyOnWrite; });
    if (copies && cow_unit_blocks_ > 1) {
      // cow_unit: the first write to a shared unit copies the shared blocks
      // of the whole aligned unit around it, so that later reads of the
      // file find that unit in one place. Only shared, written blocks
      // below the end of file join, contiguous with the write.
      const std::uint64_t unit = cow_unit_blocks_;
      const std::uint64_t file_blocks = blocks_for(old_size);
      const std::uint64_t u0 = wfirst / unit * unit;
      const std::uint64_t u1 = std::min(file_blocks, (wlast / unit + 1) * unit);
      std::vector<WritePiece> before, after;
      if (u0 < wfirst) collect(u0, wfirst - u0, before);
      if (u1 > wlast + 1) collect(wlast + 1, u1 - wlast - 1, after);
      std::size_t take = before.size();
      while (take > 0 && before[take - 1].kind == WritePiece::kCopyOnWrite &&
             before[take - 1].lblk + before[take - 1].len == first) {
        first = before[take - 1].lblk;
        --take;
      }
      before.erase(before.begin(), before.begin() + static_cast<std::ptrdiff_t>(take));
      std::size_t keep = 0;
      while (keep < after.size() && after[keep].kind == WritePiece::kCopyOnWrite && after[keep].lblk == last + 1) {
        last = after[keep].lblk + after[keep].len - 1;
        ++keep;
      }
      after.resize(keep);
      pieces.insert(pieces.begin(), before.begin(), before.end());
      pieces.insert(pieces.end(), after.begin(), after.end());
      read_ahead = shared_run_after(*in, last, old_size);
    }
    for (WritePiece& p : pieces)
      if (p.kind == WritePiece::kAllocate || p.kind == WritePiece::kCopyOnWrite)
        p.hint = placement_hint(*in, p.lblk, p.kind == WritePiece::kCopyOnWrite);
  }
  const std::uint64_t nblk = last - first + 1;
  // Writing past the end exposes the rest of the old last block.
  if (extend && off > old_size && old_size / kBlockSize < wfirst) {
    if (in_stripes && old_size % kBlockSize) return -EAGAIN;  // that block is outside our stripes
    if (int rc = zero_tail_block(ino, old_size); rc) return rc;
  }

  // Blocks the data covers only in part (and blocks a cow_unit copies
  // whole) start from their current contents; bytes at or beyond the old
  // end of file read as zeros whatever the disk holds. The buffer is not
  // zeroed: what the data does not cover is, before anything is loaded.
  // Whole blocks in a 4 KiB-aligned caller's buffer (a WRITE's payload in
  // its ring entry) go to the device from there, without a copy: nothing is
  // loaded around them then. (The device only reads that buffer.)
  const bool from_caller = first == wfirst && last == wlast && off % kBlockSize == 0 && end % kBlockSize == 0 &&
                           reinterpret_cast<std::uintptr_t>(data.data()) % kBlockSize == 0;
  std::optional<ScratchBuffer> scratch;
  std::byte* buf = const_cast<std::byte*>(data.data());
  if (!from_caller) {
    buf = scratch.emplace(nblk * kBlockSize).data();
    std::memset(buf, 0, off - first * kBlockSize);
    std::memset(buf + (end - first * kBlockSize), 0, (last + 1) * kBlockSize - end);
  }
  // Loaded through read_segments, which reads pieces that lie close
  // together on the device in one I/O: a cow_unit copy loads the unit's
  // blocks before and after the write, two pieces of one old extent, and
  // one device read then fetches both (the blocks between them, which the
  // data replaces, come along; with a read per piece, the 25% random
  // overwrites of a clone with a 32 KiB unit made 3.2 device reads per
  // unit). Pieces read ahead come from memory, and a copy has the shared
  // blocks after its unit read ahead, on another thread (see
  // PrefetchedBlocks).
  std::vector<Segment> loads;
  std::vector<std::uint64_t> loaded;
  std::vector<std::pair<std::byte*, std::uint32_t>> packed_loads;  // to move to the block start
  auto load_blocks = [&](std::uint64_t from, std::uint64_t to) {  // [from, to)
    for (const WritePiece& p : pieces) {
      const std::uint64_t a = std::max(from, p.lblk), b = std::min(to, p.lblk + p.len);
      if (a >= b || p.pblk == 0 || p.kind == WritePiece::kUnwritten) continue;
      loads.push_back({a, b - a, p.pblk + (a - p.lblk), 0});
      if (p.packed_flags) packed_loads.emplace_back(buf + (a - first) * kBlockSize, p.packed_flags);
    }
    for (std::uint64_t l = from; l < to; ++l) loaded.push_back(l);
  };
  // The first and last block of the data need their current contents only
  // where bytes below the old end of file lie outside the data (bytes
  // beyond it are zeros anyway). The write-back of an appended file's last
  // page, from the page's start to the new end, needs none: it used to
  // read that block from the device before every such write.
  auto keeps_old_bytes = [&](std::uint64_t l) {
    const std::uint64_t start = l * kBlockSize, live_end = std::min(start + kBlockSize, old_size);
    return live_end > start && (off > start || end < live_end);
  };
  if (first < wfirst) load_blocks(first, wfirst);
  if (keeps_old_bytes(wfirst)) load_blocks(wfirst, wfirst + 1);
  if (wlast != wfirst && keeps_old_bytes(wlast)) load_blocks(wlast, wlast + 1);
  if (last > wlast) load_blocks(wlast + 1, last + 1);
  // (Blocks not loaded, holes and unwritten extents, stay as the buffer
  // starts: zeros.)
  take_prefetched(loads, first, buf);
  if (read_ahead.len) read_ahead_from(read_ahead.start, read_ahead.end());
  if (int rc = read_segments(loads, first, buf); rc < 0) return rc;
  for (const auto& [at, flags] : packed_loads) unpack_in_place(at, flags);
  for (std::uint64_t l : loaded) {
    const std::uint64_t block_start = l * kBlockSize;
    if (old_size < block_start + kBlockSize) {
      std::uint64_t keep = old_size > block_start ? old_size - block_start : 0;
      std::memset(buf + (l - first) * kBlockSize + keep, 0, kBlockSize - keep);
    }
  }
  if (!from_caller) std::memcpy(buf + (off - first * kBlockSize), data.data(), data.size());

  // New blocks for holes and for shared blocks.
  std::vector<DeviceIo> ios;
  std::vector<FileExtent> fresh;  // newly allocated, to map
  std::vector<Segment> converted;  // unwritten -> written
  auto release_fresh = [&] {
    for (const FileExtent& f : fresh) alloc_->free_now({f.pblk, f.len});
  };
  BlockNo prev_end = 0;  // keeps consecutive new pieces together
  for (const WritePiece& p : pieces) {
    std::byte* at = buf + (p.lblk - first) * kBlockSize;
    if (p.kind == WritePiece::kInPlace || p.kind == WritePiece::kUnwritten) {
      ios.push_back(DeviceIo::blocks(DeviceIo::Op::Write, p.pblk, at, p.len));
      if (p.kind == WritePiece::kUnwritten) converted.push_back({p.lblk, p.len, p.pblk, 0});
      prev_end = 0;
      continue;
    }
    std::vector<Extent> got;
    AllocRequest req{p.len, 1, prev_end ? prev_end : p.hint, false};
    req.region = region;
    if (!allocate_data(req, got)) {
      release_fresh();
      return -ENOSPC;
    }
    std::uint64_t l = p.lblk;
    for (const Extent& e : got) {
      ios.push_back(DeviceIo::blocks(DeviceIo::Op::Write, e.start, buf + (l - first) * kBlockSize, e.len));
      fresh.push_back({l, e.start, static_cast<std::uint32_t>(e.len), 0});
      l += e.len;
      prev_end = e.end();
    }
  }
  // Small writes go through the medium's page cache (see DeviceIo::cached):
  // random 4 KiB writes then cost no device round trip each, and the
  // journal's flush before the next commit writes them back together. So
  // does the first write of an empty file below kWholeFileCachedBytes.
  if (written_cached(nblk * kBlockSize, off, old_size, data.size()))
    for (DeviceIo& io : ios) io.cached = true;
  if (int rc = dev_->submit(ios); rc < 0) {
    release_fresh();
    return rc;
  }
  journal_->note_data_written();

  if (fresh.empty() && converted.empty() && (!extend || end <= old_size) &&
      kernel_write_times_.load(std::memory_order_relaxed)) {
    // An overwrite in place within the file, under the kernel's writeback
    // cache (which keeps the times of regular files and sends them with a
    // setattr), changes no metadata: nothing to commit, and no exclusive
    // lock. An fsync then costs the device flush alone, not a journal
    // write before it: fio's 4 KiB write + fsync each went from 3.4-3.8k
    // to 6.9-7.7k IOPS on the bench VM (ext4 10.5k). (The size read above
    // still holds: only a truncate shrinks it, and that waits for the
    // caller's I/O lock.)
    if (blocks_changed) *blocks_changed = false;
    return static_cast<ssize_t>(data.size());
  }

  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) {
    release_fresh();
    return -ENOENT;
  }
  Txn txn;
  std::vector<Segment> replaced;  // shared blocks this file no longer references
  for (const FileExtent& f : fresh) {
    in->map()->set(f.lblk, f.len, f.pblk, 0, &replaced);
    txn.extent(ino, f.lblk, f.len, f.pblk, 0);
  }
  for (const Segment& c : converted) {
    in->map()->set(c.lblk, c.len, c.pblk, 0);
    txn.extent(ino, c.lblk, c.len, c.pblk, 0);
  }
  std::vector<Extent> to_free;
  drop_refs(replaced, txn, to_free);
  record_region_changes(txn);
  const std::uint64_t size_was = in->size;
  if (extend) in->size = std::max(in->size, end);
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  // An overwrite in place (no block mapped, converted or freed, the size
  // unchanged) commits only new times: they may become durable before the
  // bytes (as ext4's data=ordered allows), so a database's write + fsync
  // costs one device flush, not two.
  txn.data_first = !(txn.only_inode_records() && to_free.empty() && in->size == size_was);
  commit(txn, to_free);
  if (blocks_changed) *blocks_changed = !fresh.empty();
  return static_cast<ssize_t>(data.size());
}

bool FileSystem::share_stored_chunk(Ino ino, std::uint64_t off, std::span<const std::byte> data,
                                    const ChunkHome& home, bool in_stripes) {
  const std::uint64_t lblk = off / kBlockSize;
  const std::uint64_t nblk = (data.size() + kBlockSize - 1) / kBlockSize;
  if (home.ino == ino && home.lblk == lblk) return false;  // the same place again
  // The source must not change while it is compared and shared; if its
  // lock is taken, this write is simply written. (In stripes, the caller
  // holds the source's lock and stripes, see write_large_in_stripes.)
  std::shared_lock<std::shared_mutex> held;
  std::optional<RangeLocks::Guard> src_stripes;
  if (!in_stripes) {
    std::shared_mutex& src_lock = io_lock(home.ino);
    if (&src_lock != &io_lock(ino)) {
      held = std::shared_lock(src_lock, std::try_to_lock);
      if (!held.owns_lock()) return false;
    }
    // Small writes inside the source run under its shared lock (see
    // write_small_inside): its stripes keep them off the window meanwhile.
    // (With the same I/O lock, ours is exclusive and none can run.)
    if (held.owns_lock()) src_stripes.emplace(range_locks_, home.ino, home.lblk, home.lblk + nblk - 1);
  }
  auto source_segments = [&]() -> std::optional<std::vector<Segment>> {
    Inode* src = chunk_home_inode(home);
    Inode* dst = inodes_.get(ino);
    if (!src || !dst || !may_share_with(*dst, *src)) return std::nullopt;
    auto segs = src->map()->segments(home.lblk, nblk);
    for (const Segment& s : segs) {
      if (s.hole() || (s.flags & kExtentUnwritten)) return std::nullopt;
      // A packed source is shared only as the whole of a file written from
      // empty (a packed extent maps block 0 of a file that ends in it).
      if (is_packed(s.flags) && (off != 0 || data.size() != src->size || dst->size > data.size()))
        return std::nullopt;
    }
    return segs;
  };
  std::vector<Segment> segs;
  std::uint64_t old_size;
  bool from_copy_source;
  {
    std::shared_lock m(meta_mu_);
    auto s = source_segments();
    Inode* in = inodes_.get(ino);
    if (!s || !in) return false;
    segs = std::move(*s);
    old_size = in->size;
    from_copy_source = std::atomic_ref(chunk_home_inode(home)->copy_source).load(std::memory_order_relaxed);
  }
  // Byte for byte, never on the hash alone. A file being copied left the
  // blocks it served in prefetched_ (see read_locked), which hold what the
  // device holds. Otherwise the source is read: a small run, or one that a
  // whole new file repeats, was most likely written through the medium's
  // page cache as well (DeviceIo::cached) and is read from there, so a
  // layer that repeats files of the one extracted before it costs no device
  // reads. (Read directly, the medium would first write back those blocks if
  // still dirty, and the write would wait for both.)
  auto equal_to_kept = [&] {
    for (const Segment& s : segs) {
      const std::size_t at = (s.lblk - home.lblk) * kBlockSize;
      if (is_packed(s.flags) ||
          !prefetched_.compare_kept(s.pblk, data.subspan(at, std::min<std::size_t>(s.len * kBlockSize, data.size() - at))))
        return false;
    }
    return true;
  };
  auto equal_to_read = [&] {
    ScratchBuffer buf(nblk * kBlockSize);
    std::vector<DeviceIo> ios;
    for (const Segment& s : segs)
      ios.push_back(DeviceIo::blocks(DeviceIo::Op::Read, s.pblk, buf.data() + (s.lblk - home.lblk) * kBlockSize, s.len));
    if (written_cached(nblk * kBlockSize, off, old_size, data.size()))  // as the source most likely was
      for (DeviceIo& io : ios) io.cached = true;
    if (dev_->submit(ios) < 0) return false;
    for (const Segment& s : segs)
      if (is_packed(s.flags)) unpack_in_place(buf.data() + (s.lblk - home.lblk) * kBlockSize, s.flags);
    return std::memcmp(buf.data(), data.data(), data.size()) == 0;
  };
  if (!(from_copy_source && equal_to_kept()) && !equal_to_read()) {
    // Some window of the run is stale in the index: forget the run's windows.
    for (std::size_t o = 0; o < data.size(); o += kChunkBytes)
      chunks_.forget(ChunkIndex::key_of(data.subspan(o, std::min<std::size_t>(kChunkBytes, data.size() - o))));
    return false;
  }
  if (off > old_size && old_size / kBlockSize < lblk) {
    // The old last block lies outside our stripes: the write then says so.
    if (in_stripes && old_size % kBlockSize) return false;
    if (zero_tail_block(ino, old_size) != 0) return false;
  }

  std::unique_lock m(meta_mu_);
  auto again = source_segments();
  Inode* in = inodes_.get(ino);
  if (!in || !again || again->size() != segs.size() ||
      !std::equal(segs.begin(), segs.end(), again->begin(),
                  [](const Segment& a, const Segment& b) {
                    return a.lblk == b.lblk && a.pblk == b.pblk && a.len == b.len && a.flags == b.flags;
                  }))
    return false;
  Txn txn;
  std::vector<Segment> displaced;
  in->map()->set(lblk, nblk, 0, 0, &displaced);
  txn.extent(ino, lblk, nblk, 0, 0);
  for (const Segment& s : segs) {
    const std::uint64_t l = lblk + (s.lblk - home.lblk);
    const std::uint32_t flags = is_packed(s.flags) ? s.flags : 0;
    in->map()->set(l, s.len, s.pblk, flags);
    txn.extent(ino, l, s.len, s.pblk, flags);
    add_refs({s.pblk, s.len}, txn);
  }
  std::vector<Extent> to_free;
  drop_refs(displaced, txn, to_free);
  in->size = std::max(in->size, off + data.size());
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  commit(txn, to_free);
  return true;
}

// Zeroes [off, off+len) inside one block if that block holds data (through
// the write path, so a shared block is copied, not changed). Caller holds
// the inode's I/O lock.
int FileSystem::zero_range_in_block(Ino ino, std::uint64_t off, std::uint64_t len) {
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->map()) return 0;
    auto e = in->map()->find(off / kBlockSize);
    if (!e || (e->flags & kExtentUnwritten)) return 0;
  }
  std::vector<std::byte> zeros(len);
  ssize_t rc = write_locked(ino, off, zeros, nullptr, false);
  return rc < 0 ? static_cast<int>(rc) : 0;
}

int FileSystem::zero_tail_block(Ino ino, std::uint64_t size) {
  if (size % kBlockSize == 0) return 0;
  return zero_range_in_block(ino, size, kBlockSize - size % kBlockSize);
}

// ------------------------------------------------------------------ truncate

// Cuts the block map at `new_size` (meta_mu_ and the I/O lock held). The
// blocks cut off are returned in `freed`, to be released once the
// transaction has a sequence number.
void FileSystem::truncate_locked(Inode& in, std::uint64_t new_size, Txn& txn, std::vector<Extent>& freed) {
  if (new_size < in.size) {
    const std::uint64_t keep = blocks_for(new_size);
    std::vector<Segment> gone;
    in.map()->set(keep, ~0ULL - keep, 0, 0, &gone);
    if (!gone.empty()) txn.extent(in.ino, keep, ~0ULL - keep, 0, 0);
    drop_refs(gone, txn, freed);
  }
  in.size = new_size;
}

// ----------------------------------------------------------------- fallocate

int FileSystem::fallocate(Ino ino, int mode, std::uint64_t off, std::uint64_t len) {
  if (opts_.read_only) return -EROFS;
  if (len == 0) return -EINVAL;
  if (off >= kMaxFileBytes || len > kMaxFileBytes - off) return -EFBIG;
  const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    if (!keep_size || (mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))) return -EOPNOTSUPP;
    if (int rc = begin_change(Journal::Change::kShrinks); rc) return rc;
    if (int rc = content_changing(ino); rc) return rc;
    std::unique_lock io(io_lock(ino));
    return punch_hole(ino, off, len);
  }
  if (mode & ~FALLOC_FL_KEEP_SIZE) return -EOPNOTSUPP;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
  // Preallocation keeping the size leaves the contents as they are.
  if (!keep_size)
    if (int rc = content_changing(ino); rc) return rc;
  std::unique_lock io(io_lock(ino));
  return preallocate(ino, off, len, keep_size);
}

int FileSystem::punch_hole(Ino ino, std::uint64_t off, std::uint64_t len) {
  const std::uint64_t end = off + len;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (!in->is_reg()) return in->is_dir() ? -EISDIR : -ENODEV;
  }
  // Whole blocks are unmapped; partial ones at the edges are zeroed.
  const std::uint64_t full_first = blocks_for(off);
  const std::uint64_t full_end = end / kBlockSize;
  if (off / kBlockSize == (end - 1) / kBlockSize && (off % kBlockSize || end % kBlockSize)) {
    if (int rc = zero_range_in_block(ino, off, len); rc) return rc;
  } else {
    if (off % kBlockSize)
      if (int rc = zero_range_in_block(ino, off, kBlockSize - off % kBlockSize); rc) return rc;
    if (end % kBlockSize)
      if (int rc = zero_range_in_block(ino, end - end % kBlockSize, end % kBlockSize); rc) return rc;
  }
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  Txn txn;
  std::vector<Segment> gone;
  if (full_end > full_first) {
    in->map()->set(full_first, full_end - full_first, 0, 0, &gone);
    if (!gone.empty()) txn.extent(ino, full_first, full_end - full_first, 0, 0);
  }
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  std::vector<Extent> to_free;
  drop_refs(gone, txn, to_free);
  commit(txn, to_free);
  return 0;
}

int FileSystem::preallocate(Ino ino, std::uint64_t off, std::uint64_t len, bool keep_size) {
  const std::uint64_t end = off + len;
  const std::uint64_t first = off / kBlockSize;
  std::vector<Segment> segs;
  std::uint64_t old_size;
  RegionId region;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (!in->is_reg()) return in->is_dir() ? -EISDIR : -ENODEV;
    old_size = in->size;
    region = in->region;
    segs = in->map()->segments(first, (end - 1) / kBlockSize - first + 1);
  }
  if (!keep_size && end > old_size)
    if (int rc = zero_tail_block(ino, old_size); rc) return rc;
  std::vector<FileExtent> fresh;
  BlockNo hint = 0;
  for (const Segment& s : segs) {
    if (!s.hole()) {
      hint = s.pblk + s.len;
      continue;
    }
    std::vector<Extent> got;
    if (!allocate_data({s.len, 1, hint, false, region}, got)) {
      for (const FileExtent& f : fresh) alloc_->free_now({f.pblk, f.len});
      return -ENOSPC;
    }
    std::uint64_t l = s.lblk;
    for (const Extent& e : got) {
      fresh.push_back({l, e.start, static_cast<std::uint32_t>(e.len), kExtentUnwritten});
      l += e.len;
      hint = e.end();
    }
  }
  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) {
    for (const FileExtent& f : fresh) alloc_->free_now({f.pblk, f.len});
    return -ENOENT;
  }
  Txn txn;
  for (const FileExtent& f : fresh) {
    in->map()->set(f.lblk, f.len, f.pblk, f.flags);
    txn.extent(ino, f.lblk, f.len, f.pblk, f.flags);
  }
  const bool grows = !keep_size && end > in->size;
  if (grows) in->size = end;
  mark_changed(*in, now_ns(), grows);
  txn.inode(*in);
  record_region_changes(txn);
  commit(txn);
  return 0;
}

// ---------------------------------------------------------------------- seek

std::int64_t FileSystem::lseek(Ino ino, std::int64_t off, int whence) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  if (off < 0) return -ENXIO;
  std::shared_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) return -ENOENT;
  if (!in->is_reg()) return -EINVAL;
  if (opts_.dedup) std::atomic_ref(in->copy_source).store(true, std::memory_order_relaxed);
  const auto size = static_cast<std::int64_t>(in->size);
  if (off >= size) return -ENXIO;
  const std::uint64_t lblk = static_cast<std::uint64_t>(off) / kBlockSize;
  if (whence == SEEK_DATA) {
    auto d = in->map()->next_data(lblk);
    if (!d) return -ENXIO;
    auto pos = std::max<std::int64_t>(off, static_cast<std::int64_t>(*d * kBlockSize));
    return pos >= size ? -ENXIO : pos;
  }
  std::uint64_t hole = in->map()->next_hole(lblk);
  return std::min<std::int64_t>(size, std::max<std::int64_t>(off, static_cast<std::int64_t>(hole * kBlockSize)));
}

// ------------------------------------------------------------ copy_file_range

// Copies bytes through the read and write paths (unaligned ranges).
ssize_t FileSystem::copy_bytes(Ino in_ino, std::uint64_t off_in, Ino out_ino, std::uint64_t off_out,
                               std::size_t len) {
  AlignedBuffer scratch;
  std::size_t done = 0;
  while (done < len) {
    std::size_t n = std::min<std::size_t>(len - done, 1 << 20);
    std::span<const std::byte> got;
    {
      std::shared_lock io(io_lock(in_ino));
      if (int rc = read_locked(in_ino, off_in + done, n, scratch, &got); rc < 0)
        return done ? static_cast<ssize_t>(done) : rc;
    }
    if (got.empty()) break;
    ssize_t w = write(out_ino, off_out + done, got);
    if (w < 0) return done ? static_cast<ssize_t>(done) : w;
    done += static_cast<std::size_t>(w);
    if (static_cast<std::size_t>(w) < got.size()) break;
  }
  return static_cast<ssize_t>(done);
}

// Makes file blocks [lblk_out, +nblk) of `out` reference the device blocks
// behind [lblk_in, +nblk) of `in`: no data moves, whatever the size. Holes
// and unwritten blocks of the source become holes. The output grows to at
// most `out_size_after` bytes. Works in windows of source extents, one
// transaction each, so the journal never sees an unbounded transaction.
ssize_t FileSystem::clone_blocks(Ino in_ino, std::uint64_t lblk_in, Ino out_ino, std::uint64_t lblk_out,
                                 std::uint64_t nblk, std::uint64_t out_size_after) {
  constexpr std::size_t kWindow = 1024;  // source segments per transaction
  std::uint64_t done = 0;
  while (done < nblk) {
    if (int rc = begin_change(Journal::Change::kGrows); rc) return done ? static_cast<ssize_t>(done) : rc;
    // Lock order: I/O stripes by index; the source only needs to stand still.
    std::shared_mutex& a = io_lock(in_ino);
    std::shared_mutex& b = io_lock(out_ino);
    std::unique_lock<std::shared_mutex> out_lock;
    std::shared_lock<std::shared_mutex> in_lock;
    if (&a == &b) {
      out_lock = std::unique_lock(b);
    } else if (&a < &b) {
      in_lock = std::shared_lock(a);
      out_lock = std::unique_lock(b);
    } else {
      out_lock = std::unique_lock(b);
      in_lock = std::shared_lock(a);
    }
    std::uint64_t out_old_size;
    {
      std::shared_lock m(meta_mu_);
      Inode* out = inodes_.get(out_ino);
      if (!out || !inodes_.get(in_ino)) return -ENOENT;
      out_old_size = out->size;
    }
    // Cloning past the end exposes the rest of the old last block.
    if ((lblk_out + done) * kBlockSize > out_old_size)
      if (int rc = zero_tail_block(out_ino, out_old_size); rc) return done ? static_cast<ssize_t>(done) : rc;

    std::unique_lock m(meta_mu_);
    Inode* in = inodes_.get(in_ino);
    Inode* out = inodes_.get(out_ino);
    if (!in || !out) return -ENOENT;
    std::vector<Segment> segs = in->map()->segments(lblk_in + done, nblk - done);
    if (segs.size() > kWindow) segs.resize(kWindow);
    const std::uint64_t win = segs.back().lblk + segs.back().len - (lblk_in + done);
    const std::uint64_t dst = lblk_out + done;
    Txn txn;
    std::vector<Segment> displaced;
    out->map()->set(dst, win, 0, 0, &displaced);
    txn.extent(out_ino, dst, win, 0, 0);
    for (const Segment& s : segs) {
      if (s.hole() || (s.flags & kExtentUnwritten)) continue;
      const std::uint64_t l = dst + (s.lblk - (lblk_in + done));
      out->map()->set(l, s.len, s.pblk, 0);
      txn.extent(out_ino, l, s.len, s.pblk, 0);
      add_refs({s.pblk, s.len}, txn);
    }
    std::vector<Extent> to_free;
    drop_refs(displaced, txn, to_free);
    done += win;
    out->size = std::max(out->size, std::min(out_size_after, (lblk_out + done) * kBlockSize));
    mark_changed(*out, now_ns(), true);
    txn.inode(*out);
    commit(txn, to_free);
  }
  return static_cast<ssize_t>(done);
}

// copy_file_range within one dhfs is a clone: the block-aligned part of the
// range shares the source's blocks (a 1 GiB copy costs a few records), and
// only unaligned edges are copied byte by byte.
ssize_t FileSystem::copy_file_range(Ino in_ino, std::uint64_t off_in, Ino out_ino, std::uint64_t off_out,
                                    std::size_t len) {
  if (opts_.read_only) return -EROFS;
  if (len == 0) return 0;
  if (in_ino == out_ino && off_in < off_out + len && off_out < off_in + len) return -EINVAL;
  std::uint64_t in_size;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(in_ino);
    Inode* out = inodes_.get(out_ino);
    if (!in || !out) return -ENOENT;
    if (in->is_dir() || out->is_dir()) return -EISDIR;
    if (!in->is_reg() || !out->is_reg()) return -EINVAL;
    in_size = in->size;
  }
  if (off_in >= in_size) return 0;
  len = static_cast<std::size_t>(std::min<std::uint64_t>(len, in_size - off_in));
  if (int rc = content_changing(out_ino); rc) return rc;
  if (off_in % kBlockSize != off_out % kBlockSize || len < kBlockSize)
    return copy_bytes(in_ino, off_in, out_ino, off_out, len);

  std::size_t done = 0;
  const std::size_t head = (kBlockSize - off_in % kBlockSize) % kBlockSize;
  if (head) {
    ssize_t n = copy_bytes(in_ino, off_in, out_ino, off_out, head);
    if (n < static_cast<ssize_t>(head)) return n;
    done = head;
  }
  // The source's last block may be shared whole when it ends the source and
  // becomes the end of the output too: what lies beyond the end of file in
  // it is then never visible.
  const std::uint64_t end_out = off_out + len;
  std::uint64_t whole = (len - done) / kBlockSize;
  std::size_t tail = (len - done) % kBlockSize;
  if (tail && off_in + len == in_size) {
    std::shared_lock m(meta_mu_);
    Inode* out = inodes_.get(out_ino);
    if (out && out->size <= end_out) {
      ++whole;
      tail = 0;
    }
  }
  if (whole) {
    ssize_t n = clone_blocks(in_ino, (off_in + done) / kBlockSize, out_ino, (off_out + done) / kBlockSize, whole,
                             end_out);
    if (n < 0) return done ? static_cast<ssize_t>(done) : n;
    done = std::min<std::size_t>(len, done + static_cast<std::size_t>(n) * kBlockSize);
    if (static_cast<std::uint64_t>(n) < whole) return static_cast<ssize_t>(done);
  }
  if (tail) {
    ssize_t n = copy_bytes(in_ino, off_in + done, out_ino, off_out + done, tail);
    if (n < 0) return static_cast<ssize_t>(done);
    done += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

}  // namespace dhfs
