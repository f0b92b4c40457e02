// FileSystem: file data. Reads and writes go to the device under the
// inode's I/O lock; the block map and size change afterwards, in memory and
// in the journal, under meta_mu_. Newly allocated blocks are mapped only
// after their data is written, so metadata never points at stale data.
#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/filesystem.h"

namespace dhfs {

namespace {

constexpr std::uint64_t kMaxFileBytes = 1ULL << 60;
constexpr std::uint64_t kMaxIoBytes = 8ULL << 20;  // one core write is split into pieces this large
constexpr std::int64_t kDayNs = 86400LL * 1000000000LL;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

std::uint64_t blocks_for(std::uint64_t bytes) { return (bytes + kBlockSize - 1) / kBlockSize; }

void add_io(std::vector<DeviceIo>& ios, DeviceIo::Op op, BlockNo pblk, std::byte* buf, std::uint64_t blocks) {
  ios.push_back({op, pblk * kBlockSize, buf, static_cast<std::uint32_t>(blocks * kBlockSize)});
}

bool readable(const Segment& s) { return !s.hole() && !(s.flags & kExtentUnwritten); }

}  // namespace

// ---------------------------------------------------------------------- read

int FileSystem::read(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch,
                     std::span<const std::byte>* out) {
  std::shared_lock io(io_lock(ino));
  int rc = read_locked(ino, off, size, scratch, out);
  io.unlock();
  if (rc == 0 && !out->empty()) maybe_touch_atime(ino);
  return rc;
}

int FileSystem::read_locked(Ino ino, std::uint64_t off, std::size_t size, AlignedBuffer& scratch,
                            std::span<const std::byte>* out) {
  *out = {};
  std::vector<Segment> segs;
  std::uint64_t len, first;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (in->is_dir()) return -EISDIR;
    if (!in->is_reg()) return -EINVAL;
    if (off >= in->size || size == 0) return 0;
    len = std::min<std::uint64_t>(size, in->size - off);
    first = off / kBlockSize;
    segs = in->map->segments(first, (off + len - 1) / kBlockSize - first + 1);
  }
  const std::uint64_t nblk = (off + len - 1) / kBlockSize - first + 1;
  scratch.ensure(nblk * kBlockSize);
  std::vector<DeviceIo> ios;
  for (const Segment& s : segs) {
    std::byte* at = scratch.data() + (s.lblk - first) * kBlockSize;
    if (readable(s))
      add_io(ios, DeviceIo::Op::Read, s.pblk, at, s.len);
    else
      std::memset(at, 0, s.len * kBlockSize);
  }
  if (int rc = dev_->submit(ios); rc < 0) return rc;
  *out = {scratch.data() + off % kBlockSize, len};
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
  std::size_t done = 0;
  while (done < data.size()) {
    std::size_t n = std::min<std::size_t>(data.size() - done, kMaxIoBytes);
    if (int rc = begin_change(Journal::Change::kGrows); rc) return done > 0 ? static_cast<ssize_t>(done) : rc;
    std::unique_lock io(io_lock(ino));
    bool changed = false;
    ssize_t rc = write_locked(ino, off + done, data.subspan(done, n), &changed);
    if (blocks_changed && changed) *blocks_changed = true;
    if (rc < 0) return done > 0 ? static_cast<ssize_t>(done) : rc;
    done += n;
  }
  return static_cast<ssize_t>(done);
}

ssize_t FileSystem::write_locked(Ino ino, std::uint64_t off, std::span<const std::byte> data,
                                 bool* blocks_changed) {
  const std::uint64_t end = off + data.size();
  const std::uint64_t first = off / kBlockSize;
  const std::uint64_t nblk = (end - 1) / kBlockSize - first + 1;
  std::vector<Segment> segs;
  std::uint64_t old_size;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (in->is_dir()) return -EISDIR;
    if (!in->is_reg()) return -EINVAL;
    old_size = in->size;
    segs = in->map->segments(first, nblk);
  }
  // Writing past the end exposes the rest of the old last block.
  if (off > old_size && old_size / kBlockSize < first)
    if (int rc = zero_tail_block(ino, old_size); rc) return rc;

  AlignedBuffer buf(nblk * kBlockSize);
  // Partial first and last blocks: start from their current contents. Bytes
  // at or beyond the old end of file read as zeros whatever the disk holds.
  auto load_block = [&](std::uint64_t lblk) -> int {
    std::byte* at = buf.data() + (lblk - first) * kBlockSize;
    auto it = std::find_if(segs.begin(), segs.end(),
                           [&](const Segment& s) { return lblk >= s.lblk && lblk < s.lblk + s.len; });
    if (it != segs.end() && readable(*it)) {
      if (int rc = dev_->read((it->pblk + (lblk - it->lblk)) * kBlockSize, at, kBlockSize); rc < 0) return rc;
      std::uint64_t block_start = lblk * kBlockSize;
      if (old_size < block_start + kBlockSize) {
        std::uint64_t keep = old_size > block_start ? old_size - block_start : 0;
        std::memset(at + keep, 0, kBlockSize - keep);
      }
    }
    return 0;
  };
  if (off % kBlockSize)
    if (int rc = load_block(first); rc) return rc;
  if (end % kBlockSize && (end - 1) / kBlockSize != first)
    if (int rc = load_block((end - 1) / kBlockSize); rc) return rc;
  if (end % kBlockSize && (end - 1) / kBlockSize == first && off % kBlockSize == 0)
    if (int rc = load_block(first); rc) return rc;
  std::memcpy(buf.data() + off % kBlockSize, data.data(), data.size());

  // Place every block: overwrite in place where mapped, allocate holes
  // next to the block before them so sequential writers stay contiguous.
  std::vector<DeviceIo> ios;
  std::vector<FileExtent> fresh;      // newly allocated, to map
  std::vector<Segment> converted;     // unwritten -> written
  BlockNo hint = 0;
  auto release_fresh = [&] {
    for (const FileExtent& f : fresh) alloc_->free_now({f.pblk, f.len});
  };
  for (const Segment& s : segs) {
    std::byte* at = buf.data() + (s.lblk - first) * kBlockSize;
    if (!s.hole()) {
      add_io(ios, DeviceIo::Op::Write, s.pblk, at, s.len);
      if (s.flags & kExtentUnwritten) converted.push_back(s);
      hint = s.pblk + s.len;
      continue;
    }
    if (hint == 0) {
      std::shared_lock m(meta_mu_);
      Inode* in = inodes_.get(ino);
      if (in)
        if (auto prev = in->map->find_before(s.lblk)) hint = prev->pblk + (s.lblk - prev->lblk);
    }
    std::vector<Extent> got;
    if (!alloc_->allocate_all({s.len, 1, hint, false}, got)) {
      release_fresh();
      return -ENOSPC;
    }
    std::uint64_t l = s.lblk;
    for (const Extent& e : got) {
      add_io(ios, DeviceIo::Op::Write, e.start, buf.data() + (l - first) * kBlockSize, e.len);
      fresh.push_back({l, e.start, static_cast<std::uint32_t>(e.len), 0});
      l += e.len;
      hint = e.end();
    }
  }
  if (int rc = dev_->submit(ios); rc < 0) {
    release_fresh();
    return rc;
  }
  journal_->note_data_written();

  std::unique_lock m(meta_mu_);
  Inode* in = inodes_.get(ino);
  if (!in) {
    release_fresh();
    return -ENOENT;
  }
  Txn txn;
  for (const FileExtent& f : fresh) {
    in->map->set(f.lblk, f.len, f.pblk, 0);
    txn.extent(ino, f.lblk, f.len, f.pblk, 0);
  }
  for (const Segment& c : converted) {
    in->map->set(c.lblk, c.len, c.pblk, 0);
    txn.extent(ino, c.lblk, c.len, c.pblk, 0);
  }
  in->size = std::max(in->size, end);
  // With the kernel's writeback cache the kernel keeps mtime/ctime itself
  // and sends them with setattr; pages written back later must not move
  // them to the time of the writeback.
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  commit(txn);
  if (blocks_changed) *blocks_changed = !fresh.empty();
  return static_cast<ssize_t>(data.size());
}

// Zeroes [off, off+len) inside one block, on the device, if that block
// holds data. Caller holds the inode's I/O lock.
int FileSystem::zero_range_in_block(Ino ino, std::uint64_t off, std::uint64_t len) {
  const std::uint64_t lblk = off / kBlockSize;
  BlockNo pblk = 0;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in || !in->map) return 0;
    auto e = in->map->find(lblk);
    if (!e || (e->flags & kExtentUnwritten)) return 0;
    pblk = e->pblk + (lblk - e->lblk);
  }
  AlignedBuffer buf(kBlockSize);
  if (int rc = dev_->read(pblk * kBlockSize, buf.data(), kBlockSize); rc < 0) return rc;
  std::memset(buf.data() + off % kBlockSize, 0, len);
  if (int rc = dev_->write(pblk * kBlockSize, buf.data(), kBlockSize); rc < 0) return rc;
  journal_->note_data_written();
  return 0;
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
    in.map->set(keep, ~0ULL - keep, 0, 0, &gone);
    if (!gone.empty()) txn.extent(in.ino, keep, ~0ULL - keep, 0, 0);
    for (const Segment& g : gone) freed.push_back({g.pblk, g.len});
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
    std::unique_lock io(io_lock(ino));
    return punch_hole(ino, off, len);
  }
  if (mode & ~FALLOC_FL_KEEP_SIZE) return -EOPNOTSUPP;
  if (int rc = begin_change(Journal::Change::kGrows); rc) return rc;
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
    in->map->set(full_first, full_end - full_first, 0, 0, &gone);
    if (!gone.empty()) txn.extent(ino, full_first, full_end - full_first, 0, 0);
  }
  mark_changed(*in, now_ns(), true);
  txn.inode(*in);
  std::uint64_t seq = commit(txn);
  for (const Segment& g : gone) alloc_->free_after({g.pblk, g.len}, seq);
  return 0;
}

int FileSystem::preallocate(Ino ino, std::uint64_t off, std::uint64_t len, bool keep_size) {
  const std::uint64_t end = off + len;
  const std::uint64_t first = off / kBlockSize;
  std::vector<Segment> segs;
  std::uint64_t old_size;
  {
    std::shared_lock m(meta_mu_);
    Inode* in = inodes_.get(ino);
    if (!in) return -ENOENT;
    if (!in->is_reg()) return in->is_dir() ? -EISDIR : -ENODEV;
    old_size = in->size;
    segs = in->map->segments(first, (end - 1) / kBlockSize - first + 1);
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
    if (!alloc_->allocate_all({s.len, 1, hint, false}, got)) {
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
    in->map->set(f.lblk, f.len, f.pblk, f.flags);
    txn.extent(ino, f.lblk, f.len, f.pblk, f.flags);
  }
  const bool grows = !keep_size && end > in->size;
  if (grows) in->size = end;
  mark_changed(*in, now_ns(), grows);
  txn.inode(*in);
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
  const auto size = static_cast<std::int64_t>(in->size);
  if (off >= size) return -ENXIO;
  const std::uint64_t lblk = static_cast<std::uint64_t>(off) / kBlockSize;
  if (whence == SEEK_DATA) {
    auto d = in->map->next_data(lblk);
    if (!d) return -ENXIO;
    auto pos = std::max<std::int64_t>(off, static_cast<std::int64_t>(*d * kBlockSize));
    return pos >= size ? -ENXIO : pos;
  }
  std::uint64_t hole = in->map->next_hole(lblk);
  return std::min<std::int64_t>(size, std::max<std::int64_t>(off, static_cast<std::int64_t>(hole * kBlockSize)));
}

// ------------------------------------------------------------ copy_file_range

ssize_t FileSystem::copy_file_range(Ino in_ino, std::uint64_t off_in, Ino out_ino, std::uint64_t off_out,
                                    std::size_t len) {
  if (opts_.read_only) return -EROFS;
  if (in_ino == out_ino && off_in < off_out + len && off_out < off_in + len) return -EINVAL;
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

}  // namespace dhfs
